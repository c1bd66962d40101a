"""The CLIs' shared conventions: ``--config FILE`` (YAML/JSON, flags override it), the resolved ``config.yaml``
each run writes, ``--debug`` tracebacks, exit statuses and one flag vocabulary with deprecated aliases."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml

from ptycho.cli import _common
from ptycho.cli import inference as cli_inference
from ptycho.cli import train as cli_train


def test_config_file_sets_flags_and_later_flags_override_it(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("nepochs: 7\nbatch_size: 8\ngridsize: 2\nbackend: pytorch\n")
    args = cli_train.build_parser().parse_args(["--config", str(cfg), "--nepochs", "3"])
    assert (args.nepochs, args.batch_size, args.gridsize, args.backend) == (3, 8, 2, "pytorch")
    # flags before --config are overridden by it (command-line order decides, as in LightningCLI)
    args = cli_train.build_parser().parse_args(["--nepochs", "3", "--config", str(cfg)])
    assert args.nepochs == 7


def test_config_file_may_be_json(tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"n_groups": 12, "seed": 4}))
    args = cli_inference.build_parser().parse_args(["--config", str(cfg)])
    assert (args.n_groups, args.seed) == (12, 4)


@pytest.mark.parametrize("text", ["nepochz: 3\n", "nepochs: many\n"])
def test_config_file_with_an_unknown_key_or_a_bad_value_is_a_usage_error(tmp_path, text, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(SystemExit) as info:
        cli_train.build_parser().parse_args(["--config", str(cfg)])
    assert info.value.code == 2
    assert "nepoch" in capsys.readouterr().err


def test_resolved_config_repeats_the_run(tmp_path):
    parser = cli_train.build_parser()
    args = parser.parse_args(["--train_data_file", "data/train.npz", "--nepochs", "4", "--backend", "pytorch",
                              "--output_dir", str(tmp_path / "out")])
    path = _common.write_resolved_config(args, tmp_path)
    assert path == tmp_path / _common.RESOLVED_CONFIG_NAME
    saved = yaml.safe_load(path.read_text())
    assert saved["nepochs"] == 4 and saved["train_data_file"] == "data/train.npz" and "config" not in saved
    again = parser.parse_args(["--config", str(path)])
    assert {k: v for k, v in vars(again).items() if k not in ("config", "__path__")} == {
        k: v for k, v in vars(args).items() if k != "config"}
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary file left


def test_debug_shows_the_traceback_instead_of_one_line(capsys):
    def body(_args):
        raise ValueError("bad value in the data")

    parser = _common.make_parser("prog", "test")
    assert _common.run_main("prog", body, parser, []) == _common.EXIT_USAGE
    assert capsys.readouterr().err.strip() == "prog: error: bad value in the data"
    with pytest.raises(ValueError, match="bad value"):
        _common.run_main("prog", body, parser, ["--debug"])


@pytest.mark.parametrize(("exc", "status"), [
    (ValueError("x"), 2), (FileNotFoundError("x"), 2), (KeyError("x"), 2), (RuntimeError("x"), 1),
    (MemoryError(), 1), (OSError("disk full"), 1),
])
def test_exit_status_separates_refused_inputs_from_failed_runs(exc, status):
    from ptycho.errors import ConfigError

    assert _common.exit_status(exc) == status
    assert _common.exit_status(ConfigError("N", 5, "one of (32, 64, 128)")) == _common.EXIT_USAGE


def test_legacy_spellings_warn_and_name_their_replacement():
    with pytest.warns(DeprecationWarning, match="--learning-rate is deprecated; use --learning_rate"):
        _common.warn_legacy_flags(["--learning-rate=1e-3", "--nepochs", "2"], {"--learning-rate": "--learning_rate"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _common.warn_legacy_flags(["--learning_rate", "1e-3"], {"--learning-rate": "--learning_rate"})

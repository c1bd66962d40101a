"""python -m ptycho_torch.train: flags, execution config, Trainer wiring, bundle persistence, readable errors."""

from __future__ import annotations

import re
import zipfile

import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from ptycho.config.config import PyTorchExecutionConfig
from ptycho_torch import train as train_cli
from ptycho_torch.cli.shared import build_execution_config_from_args, resolve_accelerator, validate_paths
from ptycho_torch.workflows import trainer as trainer_mod

pytestmark = pytest.mark.torch


def _args(*extra: str, data: str = "d.npz", out: str = "o"):
    return train_cli.build_parser().parse_args(["--train_data_file", data, "--output_dir", out, *extra])


class TestExecutionConfigCLI:
    def test_defaults(self, monkeypatch):
        monkeypatch.setattr("sys.stderr.isatty", lambda: False)
        cfg = build_execution_config_from_args(train_cli.apply_deprecated_flags(_args()), "training")
        assert cfg == PyTorchExecutionConfig(accelerator="cpu")  # CPU unless asked; no bar without a terminal

    def test_progress_bar_only_on_a_terminal_and_not_quiet(self, monkeypatch):
        monkeypatch.setattr("sys.stderr.isatty", lambda: True)
        bar = lambda *a: build_execution_config_from_args(  # noqa: E731
            train_cli.apply_deprecated_flags(_args(*a)), "training").enable_progress_bar
        assert bar() is True and bar("--quiet") is False

    def test_every_flag_reaches_the_execution_config(self):
        args = train_cli.apply_deprecated_flags(_args(
            "--accelerator", "cpu", "--no-deterministic", "--num_workers", "2", "--learning_rate", "5e-4",
            "--scheduler", "Exponential", "--logger", "none", "--quiet", "--disable_checkpointing",
            "--checkpoint_save_top_k", "3", "--checkpoint_monitor", "train_loss", "--checkpoint_mode", "max",
            "--early_stop_patience", "7", "--accumulate_grad_batches", "2", "--gradient_clip_val", "0.5",
            "--precision", "bf16-mixed",
        ))
        cfg = build_execution_config_from_args(args, "training")
        assert (cfg.accelerator, cfg.deterministic, cfg.num_workers, cfg.learning_rate, cfg.scheduler) == (
            "cpu", False, 2, 5e-4, "Exponential")
        assert (cfg.logger_backend, cfg.enable_progress_bar, cfg.enable_checkpointing) == (None, False, False)
        assert (cfg.checkpoint_save_top_k, cfg.checkpoint_monitor_metric, cfg.checkpoint_mode) == (
            3, "train_loss", "max")
        assert (cfg.early_stop_patience, cfg.accum_steps, cfg.gradient_clip_val, cfg.precision) == (
            7, 2, 0.5, "bf16-mixed")

    def test_every_execution_flag_reaches_the_trainer(self, tmp_path):
        cfg = PyTorchExecutionConfig(
            accelerator="cpu", deterministic=True, precision="bf16-mixed", gradient_clip_val=0.25,
            gradient_clip_algorithm="value", accum_steps=3, enable_progress_bar=False, enable_checkpointing=True,
            checkpoint_save_top_k=2, checkpoint_monitor_metric="val_loss", checkpoint_mode="max",
            early_stop_patience=4, logger_backend="csv",
        )
        trainer = trainer_mod.build_trainer(cfg, max_epochs=3, output_dir=tmp_path, has_validation=True)
        assert trainer.max_epochs == 3 and trainer.accelerator.__class__.__name__ == "CPUAccelerator"
        assert trainer.precision == "bf16-mixed"
        assert trainer.gradient_clip_val == 0.25 and trainer.gradient_clip_algorithm == "value"
        assert trainer.accumulate_grad_batches == 3
        assert trainer.num_sanity_val_steps == 0
        import torch

        assert torch.are_deterministic_algorithms_enabled()
        ckpt = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
        assert (ckpt.save_top_k, ckpt.monitor, ckpt.mode, ckpt.dirpath) == (2, "val_loss", "max",
                                                                           str(tmp_path / "checkpoints"))
        stop = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
        assert (stop.patience, stop.monitor) == (4, "val_loss")
        assert isinstance(trainer.logger, CSVLogger) and trainer.logger.save_dir == str(tmp_path)
        torch.use_deterministic_algorithms(False)

    def test_without_validation_checkpoints_monitor_the_training_loss(self, tmp_path):
        cfg = PyTorchExecutionConfig(accelerator="cpu", logger_backend=None, deterministic=False)
        kw = trainer_mod.trainer_kwargs(cfg, max_epochs=1, output_dir=tmp_path, has_validation=False)
        assert kw["logger"] is False
        assert [type(c) for c in kw["callbacks"]] == [ModelCheckpoint]
        assert kw["callbacks"][0].monitor == "train_loss"

    def test_deprecated_flags_warn_and_map(self):
        with pytest.warns(DeprecationWarning) as record:
            args = train_cli.apply_deprecated_flags(_args("--device", "cpu", "--disable_mlflow", "--n_images", "32"))
        assert {str(w.message).split()[0] for w in record} == {"--device", "--disable_mlflow", "--n_images"}
        assert (args.accelerator, args.logger, args.quiet, args.n_groups) == ("cpu", "none", True, 32)
        cfg = build_execution_config_from_args(args, "training")
        assert cfg.logger_backend is None and cfg.enable_progress_bar is False
        # an explicit --accelerator wins over the legacy --device
        assert resolve_accelerator("cuda", "cpu") == "cuda" and resolve_accelerator(None, None) == "cpu"

    def test_optional_loggers_are_never_required(self, tmp_path):
        import importlib.util

        for backend, modules, fix in (("tensorboard", ("tensorboard",), "pip install tensorboard"),
                                      ("mlflow", ("mlflow", "sqlalchemy", "alembic"), "ptychopinn[mlflow]")):
            if any(importlib.util.find_spec(m) is None for m in modules):
                with pytest.raises(ValueError, match=re.escape(fix)):
                    trainer_mod.build_logger(backend, tmp_path)
            else:
                assert trainer_mod.build_logger(backend, tmp_path) is not None

    def test_validate_paths(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="missing.npz"):
            validate_paths(tmp_path / "missing.npz", None, tmp_path / "out")
        assert validate_paths(None, None, tmp_path / "new" / "dir").is_dir()

    def test_bundle_persistence(self, sim_npz, tmp_path, capsys):
        out = tmp_path / "run"
        rc = train_cli.cli_main([
            "--train_data_file", str(sim_npz), "--test_data_file", str(sim_npz), "--output_dir", str(out),
            "--n_groups", "16", "--gridsize", "2", "--batch_size", "8", "--nepochs", "1",
            "--accelerator", "cpu", "--logger", "csv", "--quiet",
        ])
        assert rc == 0, capsys.readouterr().err
        with zipfile.ZipFile(out / "wts.h5.zip") as zf:
            names = set(zf.namelist())
        assert {"autoencoder/model.pt", "autoencoder/lightning.ckpt", "diffraction_to_obj/model.pt"} <= names
        assert (out / "history.csv").read_text().startswith("epoch,train_loss")
        assert (out / "history.png").stat().st_size > 0
        assert list((out / "checkpoints").glob("*.ckpt")) and list((out / "lightning_logs").rglob("metrics.csv"))

    @pytest.mark.parametrize("argv,message", [
        (["--train_data_file", "/nonexistent.npz", "--output_dir", "OUT"], "/nonexistent.npz"),
        (["--train_data_file", "DATA", "--output_dir", "OUT", "--gridsize", "0"], "gridsize"),
        (["--train_data_file", "DATA", "--output_dir", "OUT", "--batch_size", "6"], "batch_size"),
    ])
    def test_readable_errors_without_traceback(self, argv, message, sim_npz, tmp_path, capsys):
        argv = [str(sim_npz) if a == "DATA" else str(tmp_path / "o") if a == "OUT" else a for a in argv]
        assert train_cli.cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err and "Traceback" not in err

    def test_bad_flag_value_is_an_argparse_error(self, capsys):
        with pytest.raises(SystemExit) as exc:
            train_cli.cli_main(["--train_data_file", "a", "--output_dir", "b", "--accelerator", "tpu"])
        assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_one_flag_vocabulary_across_the_training_and_inference_clis():
    """Every flag the torch CLIs share with ptycho_train / ptycho_inference is spelled the same (its first option
    string), and every other spelling is a deprecated alias that warns."""
    from ptycho.cli import inference as cli_inference
    from ptycho.cli import train as cli_train
    from ptycho_torch import inference as torch_inference
    from ptycho_torch.cli.shared import TORCH_LEGACY_FLAGS

    def primaries(parser):
        return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}

    for ours, theirs in ((train_cli.build_parser(), cli_train.build_parser()),
                         (torch_inference.build_parser(), cli_inference.build_parser())):
        mine, unified = primaries(ours), primaries(theirs)
        for dest in set(mine) & set(unified):
            assert mine[dest] == unified[dest], dest
        for action in ours._actions:
            for alias in action.option_strings[1:]:
                if alias.startswith("--no-") or alias == "--help":
                    continue
                assert alias in TORCH_LEGACY_FLAGS or alias in ("--disable_checkpointing", "--test_data_file",
                                                                "--num-nodes"), alias


def test_legacy_dashed_flags_still_parse_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="--learning-rate is deprecated"):
        rc = train_cli.cli_main(["--train_data_file", str(tmp_path / "missing.npz"), "--output_dir",
                                 str(tmp_path / "o"), "--learning-rate", "5e-4", "--max_epochs", "2"])
    assert rc == 2  # parsed (the missing file is what is refused)
    args = train_cli.build_parser().parse_args(["--train_data_file", "t.npz", "--output_dir", "o", "--learning-rate",
                                                "5e-4", "--max_epochs", "2", "--early-stop-patience", "3"])
    assert (args.learning_rate, args.nepochs, args.early_stop_patience) == (5e-4, 2, 3)

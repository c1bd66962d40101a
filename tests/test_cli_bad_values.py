"""Every CLI refuses bad numeric flags and bad bundles with one stderr line, a non-zero exit and no output.

Numeric flags are checked before any data is read or simulated; a batch size larger than the data
is clamped with a message (specs/bad-input.md, "Command line").
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptycho import bundle as bd
from ptycho import params


def _one_line_error(capsys, rc: int, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2  # a refused input (ptycho.cli._common.exit_status), for every CLI
    assert len(err.splitlines()) == 1, err
    assert "error" in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def npz(tmp_path) -> Path:
    from ptycho.simulate import simulate_dataset

    path = tmp_path / "data.npz"
    simulate_dataset(N=32, n_positions=12, nphotons=1e6, seed=0).to_file(path)
    return path


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--simulate", "--N", "48"], ["--N", "48"]),
        (["--simulate", "--N", "64", "--n_positions", str(10**9)], ["--n_positions"]),
        (["--simulate", "--n_positions", "0"], ["--n_positions"]),
        (["--simulate", "--batch_size", "0"], ["--batch_size"]),
        (["--simulate", "--nepochs", "-1"], ["--nepochs"]),
        (["--simulate", "--nphotons", "nan"], ["--nphotons"]),
        (["--simulate", "--n_filters_scale", "100000"], ["--n_filters_scale"]),
        (["--simulate", "--gridsize", "0"], ["--gridsize"]),
        (["--simulate", "--scan_spacing", "0"], ["--scan_spacing"]),
        (["--simulate", "--scan_spacing", "-3.5"], ["--scan_spacing"]),
        (["--simulate", "--scan_spacing", "inf"], ["--scan_spacing"]),
        (["--simulate", "--scan_spacing", "1e6"], ["--scan_spacing", "GiB"]),
    ],
)
def test_ptycho_train_refuses_bad_numbers_up_front(tmp_path, capsys, argv, words):
    from ptycho.cli.train import main

    out = tmp_path / "out"
    try:
        rc = main([*argv, "--output_dir", str(out)])
    except SystemExit as refused:  # the parser's own type check (nan is no float it accepts): usage, status 2
        assert refused.code == 2
        err = capsys.readouterr().err
        assert all(w.lstrip("-") in err for w in words) and "Traceback" not in err, err
    else:
        _one_line_error(capsys, rc, *words)
    assert not out.exists()


def test_scan_spacing_sizes_the_simulated_object(tmp_path):
    """``--scan_spacing`` reaches the simulator: the object (and the scanned field) shrinks with it."""
    from ptycho.cli.train import _load_data, build_parser
    from ptycho.simulate import auto_object_size

    sides = {}
    for spacing in (3.5, 5.0):
        out = tmp_path / str(spacing)
        args = build_parser().parse_args(["--simulate", "--N", "32", "--n_positions", "64", "--nphotons", "1e6",
                                          "--scan_spacing", str(spacing), "--output_dir", str(out)])
        train, test = _load_data(args, out)
        assert test is train
        sides[spacing] = train.objectGuess.shape
        assert sides[spacing] == (auto_object_size(32, 64, spacing=spacing),) * 2
        span = np.ptp(np.stack([train.xcoords, train.ycoords]), axis=1)
        assert np.all(span <= np.sqrt(64) * spacing + 1)
    assert sides[3.5][0] < sides[5.0][0]


def test_output_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    from ptycho.cli.train import main

    f = tmp_path / "file"
    f.write_text("x")
    _one_line_error(capsys, main(["--simulate", "--output_dir", str(f)]), "is an existing file")
    assert f.read_text() == "x"


def test_ptycho_inference_refuses_batch_size_0(tmp_path, capsys, npz):
    from ptycho.cli.inference import main

    out = tmp_path / "out"
    rc = main(["--model_path", str(tmp_path), "--test_data", str(npz), "--output_dir", str(out), "--batch_size", "0"])
    _one_line_error(capsys, rc, "--batch_size")
    assert not out.exists()


def _bad_bundle(where: Path) -> Path:
    path = bd.write_bundle(
        where, backend="pytorch", model_payloads={m: {"model.pt": b"p"} for m in bd.MODEL_NAMES},
        params_snapshot={"N": 32}, canonical_weights=b"h5",
        network={"N": 32, "gridsize": 1, "n_filters_scale": 1, "object_big": True, "probe_big": True,
                 "pad_object": True, "amp_activation": "sigmoid"},
        physics={"canvas_size": 42, "probe_mask": False, "gaussian_smoothing_sigma": 0.0}, intensity_scale=1.0,
        framework={},
    )
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["network"]["n_filters_scale"] = 10**6  # asks for terabytes
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return path


@pytest.mark.torch
def test_ptycho_inference_refused_bundle_is_one_line_and_writes_nothing(tmp_path, capsys, npz, monkeypatch):
    pytest.importorskip("torch")
    # torch is already imported in this process (a CLI process imports it after ptycho.startup): say its OpenMP
    # policy was set, so the start-up check's warning line does not count as part of the error output
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    from ptycho.cli.inference import main

    _bad_bundle(tmp_path / "model")
    before = params.snapshot()
    out = tmp_path / "out"
    rc = main(["--backend", "pytorch", "--model_path", str(tmp_path / "model"), "--test_data", str(npz),
               "--output_dir", str(out)])
    _one_line_error(capsys, rc, "n_filters_scale", "manifest.json")
    assert not out.exists()
    assert before.keys() == params.cfg.keys()
    assert all(np.array_equal(v, params.cfg[k]) if isinstance(v, np.ndarray) else v == params.cfg[k]
               for k, v in before.items())


@pytest.mark.torch
@pytest.mark.parametrize(
    ("module", "argv", "words"),
    [
        ("train", ["--output_dir", "FILE", "--train_data_file", "NPZ"], ["is an existing file"]),
        ("train", ["--output_dir", "OUT", "--train_data_file", "NPZ", "--batch_size", "0"], ["--batch_size"]),
        ("train", ["--output_dir", "OUT", "--train_data_file", "NPZ", "--nepochs", "0"], ["--nepochs"]),
        ("inference", ["--output_dir", "OUT", "--test_data", "NPZ", "--model_path", "MODEL",
                       "--batch_size", "0"], ["--batch_size"]),
        ("inference", ["--output_dir", "OUT", "--test_data", "NPZ", "--model_path", "MODEL"], ["n_filters_scale"]),
    ],
)
def test_torch_clis_one_line_errors(tmp_path, capsys, npz, module, argv, words):
    pytest.importorskip("torch")
    import importlib

    cli = importlib.import_module(f"ptycho_torch.{module}")
    (tmp_path / "FILE").write_text("x")
    _bad_bundle(tmp_path / "MODEL")
    subs = {"FILE": str(tmp_path / "FILE"), "OUT": str(tmp_path / "OUT"), "NPZ": str(npz),
            "MODEL": str(tmp_path / "MODEL")}
    rc = cli.cli_main([subs.get(a, a) for a in argv] + ["--accelerator", "cpu", "--quiet"])
    _one_line_error(capsys, rc, *words)
    assert not (tmp_path / "OUT").exists()
    assert (tmp_path / "FILE").read_text() == "x"


def test_batch_size_larger_than_the_data_is_clamped_with_a_message(capsys):
    from ptycho.cli._common import fit_batch_size

    assert fit_batch_size("prog", 64, 24) == 16
    assert "larger than the 24 groups" in capsys.readouterr().err
    assert fit_batch_size("prog", 8, 24) == 8
    assert fit_batch_size("prog", 64, 24, power_of_two=False) == 24

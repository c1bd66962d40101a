"""The unified ``ptycho_train`` / ``ptycho_inference`` command lines (TensorFlow backend)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho import bundle
from ptycho.canonical_weights import canonical_weights_from_bytes
from ptycho.cli import inference as cli_inference
from ptycho.cli import train as cli_train
from ptycho.cli._common import stitch_crop

REPO = Path(__file__).resolve().parents[2]


TRAIN_ARGS = [
    "--simulate", "--N", "32", "--n_positions", "20", "--gridsize", "1", "--nepochs", "2", "--batch_size", "8",
    "--n_filters_scale", "1", "--quiet", "--seed", "3",
]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli_train.main([*TRAIN_ARGS, "--output_dir", str(out)]) == 0
    return out


def test_train_simulate_writes_bundle_history_and_reconstruction(trained_dir):
    for name in ("wts.h5.zip", "history.csv", "history.png", "simulated_data.npz", "reconstruction.npz",
                 "amplitude.png", "phase.png", "comparison.png", "score.json"):
        assert (trained_dir / name).is_file(), name
    # one picture of each thing: no upstream-named duplicates of amplitude.png / phase.png
    assert sorted(p.name for p in trained_dir.glob("*.png")) == ["amplitude.png", "comparison.png", "history.png",
                                                                 "phase.png"]
    rows = list(csv.DictReader(open(trained_dir / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and {"train_loss", "val_loss", "poisson_nll"} <= set(rows[0])
    b = bundle.read_bundle(trained_dir, expected_backend="tensorflow")
    assert b.params["subsample_seed"] == 3 and b.params["N"] == 32
    score = json.loads((trained_dir / "score.json").read_text())
    assert {"amp_pearson", "phase_pearson", "covered_pixels", "amp_ssim", "phase_ssim", "amp_psnr", "phase_psnr",
            "frc_cutoff", "frc_cutoff_1_7", "frc_resolution_px", "frc_resolution_1_7_px", "shift_x", "shift_y",
            "global_phase"} <= set(score)
    assert -1.0 <= score["amp_pearson"] <= 1.0 and score["covered_pixels"] > 0 and -1.0 <= score["amp_ssim"] <= 1.0


def test_train_writes_checkpoint_and_csv_log_and_resumes(trained_dir, tmp_path):
    """``--resume`` continues the run in --output_dir to the new total --nepochs (checkpoint + CSV log)."""
    import shutil

    assert (trained_dir / "checkpoints" / "last_tf.npz").is_file()
    assert (trained_dir / "logs" / "metrics.csv").is_file()
    run = tmp_path / "run"
    shutil.copytree(trained_dir, run)
    args = [a if a != "2" else "3" for a in TRAIN_ARGS]  # --nepochs 3: one more epoch
    assert cli_train.main([*args, "--output_dir", str(run), "--resume"]) == 0
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    first = list(csv.DictReader(open(trained_dir / "history.csv")))
    assert [r["train_loss"] for r in rows[:2]] == [r["train_loss"] for r in first]  # the restored history


def test_training_is_deterministic(trained_dir, tmp_path):
    """The same command twice (same seed) gives bitwise-identical weights: grouping, init and batch order."""
    assert cli_train.main([*TRAIN_ARGS, "--output_dir", str(tmp_path)]) == 0
    first, _ = canonical_weights_from_bytes(bundle.read_bundle(trained_dir).canonical_weights)
    second, _ = canonical_weights_from_bytes(bundle.read_bundle(tmp_path).canonical_weights)
    assert list(first) == list(second) and all(np.array_equal(first[k], second[k]) for k in first)
    assert (trained_dir / "history.csv").read_text() == (tmp_path / "history.csv").read_text()


def test_inference_writes_the_stitched_reconstruction(trained_dir, tmp_path):
    status = cli_inference.main([
        "--model_path", str(trained_dir), "--test_data", str(trained_dir / "simulated_data.npz"),
        "--output_dir", str(tmp_path), "--quiet",
    ])
    assert status == 0
    rec = np.load(tmp_path / "reconstruction.npz")
    assert set(rec.files) >= {"amplitude", "phase", "object", "global_offsets", "N", "M", "covered"}
    assert rec["object"].dtype == np.complex64 and rec["amplitude"].shape == rec["object"].shape
    assert (tmp_path / "amplitude.png").is_file() and (tmp_path / "phase.png").is_file()
    # the data has a true object: score.json and the truth-vs-reconstruction figure
    assert (tmp_path / "comparison.png").is_file()
    score = json.loads((tmp_path / "score.json").read_text())
    # ptycho_evaluate on the written reconstruction reproduces it (one implementation)
    from ptycho.cli import evaluate as cli_evaluate

    out = tmp_path / "evaluated"
    assert cli_evaluate.main(["--reconstruction", str(tmp_path / "reconstruction.npz"),
                              "--truth", str(trained_dir / "simulated_data.npz"), "--output_dir", str(out)]) == 0
    again = json.loads((out / "score.json").read_text())
    assert again.keys() == score.keys()
    for k, v in score.items():
        assert again[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert (out / "comparison.png").is_file()


def test_streamed_inference_equals_in_memory_inference(trained_dir, tmp_path):
    """``--stream``: the test patterns read from disk a chunk at a time give the same reconstruction and score."""
    data = str(trained_dir / "simulated_data.npz")
    for name, extra in (("memory", []), ("stream", ["--stream"])):
        assert cli_inference.main(["--model_path", str(trained_dir), "--test_data", data,
                                   "--output_dir", str(tmp_path / name), "--quiet", *extra]) == 0
    with np.load(tmp_path / "memory" / "reconstruction.npz") as a, \
            np.load(tmp_path / "stream" / "reconstruction.npz") as b:
        np.testing.assert_array_equal(b["global_offsets"], a["global_offsets"])
        np.testing.assert_allclose(b["object"], a["object"], rtol=1e-4, atol=1e-5)
    score = {name: json.loads((tmp_path / name / "score.json").read_text()) for name in ("memory", "stream")}
    for k, v in score["memory"].items():
        assert score["stream"][k] == pytest.approx(v, rel=1e-3, abs=1e-4), k


def test_n_images_is_a_deprecated_alias(trained_dir, tmp_path, capsys):
    with pytest.warns(DeprecationWarning, match="--n_groups"):
        status = cli_inference.main([
            "--model_path", str(trained_dir), "--test_data", str(trained_dir / "simulated_data.npz"),
            "--output_dir", str(tmp_path), "--n_images", "8", "--quiet",
        ])
    assert status == 0 and "deprecated" in capsys.readouterr().err


def test_inference_errors_are_readable(trained_dir, tmp_path, capsys):
    assert cli_inference.main(["--model_path", str(tmp_path), "--test_data", str(trained_dir / "simulated_data.npz"),
                               "--output_dir", str(tmp_path)]) == 2
    assert "no wts.h5.zip" in capsys.readouterr().err
    assert cli_inference.main(["--model_path", str(trained_dir), "--test_data", str(tmp_path / "missing.npz"),
                               "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing.npz" in err and "Traceback" not in err
    assert cli_inference.main(["--model_path", str(trained_dir), "--test_data", str(trained_dir / "simulated_data.npz"),
                               "--output_dir", str(tmp_path), "--gridsize", "2"]) == 2
    assert "does not match the model's gridsize 1" in capsys.readouterr().err
    assert cli_inference.main(["--model_path", str(trained_dir), "--test_data", str(trained_dir / "simulated_data.npz"),
                               "--output_dir", str(tmp_path), "--backend", "pytorch"]) == 2
    assert "written by the tensorflow backend" in capsys.readouterr().err


def test_train_errors_are_readable(tmp_path, capsys):
    assert cli_train.main(["--output_dir", str(tmp_path)]) == 2
    assert "--train_data_file" in capsys.readouterr().err
    assert cli_train.main(["--train_data_file", str(tmp_path / "nope.npz"), "--output_dir", str(tmp_path)]) == 2
    assert "nope.npz: no such file" in capsys.readouterr().err
    bad, out = tmp_path / "bad.npz", tmp_path / "never_created"
    bad.write_bytes(b"not an npz archive")
    assert cli_train.main(["--train_data_file", str(bad), "--output_dir", str(out)]) == 2
    assert "bad.npz" in capsys.readouterr().err and not out.exists()  # a refused input leaves nothing behind
    with pytest.raises(SystemExit) as info:
        cli_train.main(["--nepochs", "many"])
    assert info.value.code == 2


@pytest.mark.parametrize(
    "module,args,code,text",
    [
        ("ptycho.cli.train", ["--help"], 0, "--simulate"),
        ("ptycho.cli.inference", ["--help"], 0, "--model_path"),
        ("ptycho.cli.train", ["--bogus"], 2, "unrecognized arguments: --bogus"),
        ("ptycho.cli.train", ["--backend", "jax"], 2, "invalid choice: 'jax'"),
        ("ptycho.cli.train", ["--train_data_file", "/nonexistent/x.npz", "--output_dir", "OUT"], 2, "no such file"),
    ],
)
def test_python_m_entry_points(module, args, code, text, tmp_path):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == code
    assert text in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_stitch_crop():
    assert stitch_crop(64) == 20 and stitch_crop(128) == 20 and stitch_crop(32) == 16

"""End to end through the CLIs in subprocesses: train, save, load the bundle, infer.

The default run uses a small simulated dataset (N=32).  The exact CLI smoke of the issue on the
committed fixture (N=64, gridsize 2 and 1) and the timed end-to-end run are marked ``slow``; the
fast tests cover the same code path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ptycho import params
from ptycho.workflows import common
from ptycho_torch.workflows.components import load_inference_bundle_torch, predict_objects

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parents[2]
FIXTURE = "tests/fixtures/pytorch_integration/minimal_dataset_v1.npz"


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, f"{module} failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc


def _check_reconstruction(out: Path) -> np.ndarray:
    with np.load(out / "reconstruction.npz") as npz:
        amp, phase = npz["amplitude"], npz["phase"]
    assert amp.ndim == 2 and amp.shape == phase.shape and amp.shape[0] >= 20
    assert np.all(np.isfinite(amp)) and np.all(np.isfinite(phase)) and amp.max() > 0
    assert np.all(np.abs(phase) <= np.pi + 1e-6)
    assert (out / "amplitude.png").stat().st_size > 1000 and (out / "phase.png").stat().st_size > 1000
    return amp


def test_bundle_loader_returns_modules(trained_gs2, sim_raw):
    import torch

    out, _results, snapshot = trained_gs2
    params.cfg.clear()
    models, cfg = load_inference_bundle_torch(out)
    assert isinstance(models["diffraction_to_obj"], torch.nn.Module)
    assert isinstance(models["autoencoder"], torch.nn.Module)
    assert params.cfg["intensity_scale"] == snapshot["intensity_scale"] == cfg["intensity_scale"]
    container = common.create_ptycho_data_container(sim_raw, _inference_like(cfg))
    obj = predict_objects(models["diffraction_to_obj"], container, batch_size=4)
    assert obj.shape == (len(container), 32, 32, 1) and np.all(np.isfinite(obj))


def _inference_like(cfg):
    from ptycho.config.config import InferenceConfig
    from ptycho_torch.model_manager import configs_from_params

    model, _ = configs_from_params(cfg)
    return InferenceConfig(model=model, model_path=Path("."), test_data_file=Path("."), n_groups=10)


def test_run_pytorch_train_save_load_infer(sim_npz, tmp_path):
    train_dir, infer_dir = tmp_path / "train", tmp_path / "infer"
    _run("ptycho_torch.train", "--train_data_file", str(sim_npz), "--test_data_file", str(sim_npz),
         "--output_dir", str(train_dir), "--n_groups", "16", "--gridsize", "1", "--batch_size", "8",
         "--nepochs", "2", "--accelerator", "cpu", "--logger", "none", "--quiet")
    assert (train_dir / "wts.h5.zip").is_file() and (train_dir / "history.csv").is_file()
    history = (train_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs
    models, cfg = load_inference_bundle_torch(train_dir)  # the bundle loads in this (another) process
    assert cfg["gridsize"] == 1 and cfg["nepochs"] == 2 and models["autoencoder"].spec.C == 1
    proc = _run("ptycho_torch.inference", "--model_path", str(train_dir), "--test_data", str(sim_npz),
                "--output_dir", str(infer_dir), "--n_groups", "16", "--accelerator", "cpu")
    assert "reconstructed 16 group(s)" in proc.stdout
    _check_reconstruction(infer_dir)


@pytest.mark.slow
@pytest.mark.parametrize("gridsize", [2, 1])
def test_cli_smoke_exactly_as_written(gridsize, tmp_path):
    """Issue item 7, verbatim (output directories under tmp_path instead of /tmp)."""
    smoke, smoke_infer = tmp_path / "cli_smoke", tmp_path / "cli_smoke_infer"
    _run("ptycho_torch.train", "--train_data_file", FIXTURE, "--test_data_file", FIXTURE, "--output_dir", str(smoke),
         "--n_images", "64", "--gridsize", str(gridsize), "--batch_size", "4", "--max_epochs", "1",
         "--disable_mlflow", "--device", "cpu", "--accelerator", "cpu", "--learning-rate", "1e-3",
         "--num-workers", "0", "--deterministic")
    assert (smoke / "wts.h5.zip").is_file()
    _run("ptycho_torch.inference", "--model_path", str(smoke), "--test_data", FIXTURE, "--output_dir",
         str(smoke_infer), "--n_images", "32", "--accelerator", "cpu")
    _check_reconstruction(smoke_infer)


@pytest.mark.slow
def test_end_to_end_time_gridsize1(tmp_path):
    """2 epochs, 64 patterns, gridsize 1, batch 4, then inference on 32: report the wall time (upstream: 36 s)."""
    start = time.perf_counter()
    _run("ptycho_torch.train", "--train_data_file", FIXTURE, "--test_data_file", FIXTURE, "--output_dir",
         str(tmp_path / "t"), "--n_groups", "64", "--gridsize", "1", "--batch_size", "4", "--nepochs", "2",
         "--accelerator", "cpu", "--logger", "none", "--quiet")
    _run("ptycho_torch.inference", "--model_path", str(tmp_path / "t"), "--test_data", FIXTURE, "--output_dir",
         str(tmp_path / "i"), "--n_groups", "32", "--accelerator", "cpu", "--quiet")
    elapsed = time.perf_counter() - start
    print(f"end-to-end train (2 epochs, 64 groups, gs1, batch 4) + inference (32 groups): {elapsed:.1f} s")
    _check_reconstruction(tmp_path / "i")

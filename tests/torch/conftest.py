"""Shared fixtures of the PyTorch backend tests: small simulated datasets and one trained bundle.

Everything is tiny (N=32, n_filters_scale=1, a few groups, one epoch) so the whole suite stays
fast on two shared CPU cores.  Session fixtures run inside ``params.isolated()`` so they never leak
into ``ptycho.params.cfg`` (the per-test snapshot is taken after session fixtures are set up).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see ptycho_torch/__init__.py)

import pytest

# A TensorFlow-only environment (`pip install .[tf,test]`) skips this directory with the reason.
pytest.importorskip("torch", reason="PyTorch is not installed (pip install '.[torch]')")
pytest.importorskip("lightning", reason="Lightning is not installed (pip install '.[torch]')")

from ptycho import params  # noqa: E402
from ptycho.config.config import ModelConfig, PyTorchExecutionConfig, TrainingConfig  # noqa: E402
from ptycho.simulate import simulate_dataset  # noqa: E402

FIXTURE_NPZ = Path(__file__).resolve().parents[1] / "fixtures" / "pytorch_integration" / "minimal_dataset_v1.npz"


def quiet_execution(**overrides) -> PyTorchExecutionConfig:
    """A CPU execution config with no logger, no checkpoints and no progress bar (fast, no files)."""
    kw = dict(accelerator="cpu", logger_backend=None, enable_checkpointing=False, enable_progress_bar=False)
    kw.update(overrides)
    return PyTorchExecutionConfig(**kw)


def small_config(tmp: Path, *, gridsize: int = 1, nepochs: int = 1, n_groups: int = 24, batch_size: int = 8,
                 **training) -> TrainingConfig:
    """A tiny training config: N=32, n_filters_scale=1."""
    model = ModelConfig(N=32, gridsize=gridsize, n_filters_scale=1)
    return TrainingConfig(model=model, nepochs=nepochs, n_groups=n_groups, batch_size=batch_size,
                          output_dir=tmp, nphotons=1e6, **training)


@pytest.fixture(scope="session")
def sim_raw():
    """A simulated N=32 dataset (48 positions, 'lines' object, Poisson noise at 1e6 photons)."""
    return simulate_dataset(N=32, n_positions=48, nphotons=1e6, seed=1)


@pytest.fixture(scope="session")
def sim_npz(tmp_path_factory, sim_raw) -> Path:
    """``sim_raw`` written as an NPZ in the data contract."""
    path = tmp_path_factory.mktemp("sim") / "sim32.npz"
    sim_raw.to_file(path)
    return path


@pytest.fixture(scope="session")
def trained_gs2(tmp_path_factory, sim_raw):
    """One epoch of gridsize-2 training on ``sim_raw``: ``(output_dir, results, params snapshot after training)``."""
    from ptycho_torch.workflows.components import run_cdi_example_torch

    out = tmp_path_factory.mktemp("trained_gs2")
    with params.isolated():
        config = small_config(out, gridsize=2, n_groups=24, batch_size=8)
        _amp, _phase, results = run_cdi_example_torch(sim_raw, sim_raw, config, execution_config=quiet_execution(),
                                                      quiet=True)
        snapshot = params.snapshot()
    return out, results, snapshot


@pytest.fixture
def quiet_exec():
    """:func:`quiet_execution` (a fixture, so test modules need not import this conftest)."""
    return quiet_execution


@pytest.fixture
def make_config():
    """:func:`small_config` (a fixture, so test modules need not import this conftest)."""
    return small_config

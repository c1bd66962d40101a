"""Reconstruction quality on simulated data (the TensorFlow backend's test data and threshold).

Same data and schedule as ``tests/tf/test_workflow.py``: ``simulate_dataset(N=32, n_positions=32,
seed=3)``, gridsize 2, n_filters_scale 1, 32 groups, 25 epochs of batch 4 (200 Adam steps), stitched
with ``M=16``; a correct model clears an amplitude Pearson of 0.35 against the ground-truth object
(an untrained model scores within +-0.2).  The N=64 gridsize 1 and 2 runs are marked slow.
"""

from __future__ import annotations

import pytest

from ptycho.config.config import ModelConfig, PyTorchExecutionConfig, TrainingConfig
from ptycho.evaluation import score_stitched
from ptycho.simulate import simulate_dataset
from ptycho_torch.workflows.components import run_cdi_example_torch

pytestmark = pytest.mark.torch

AMP_PEARSON_THRESHOLD = 0.35


def _train_and_score(tmp_path, *, N, gridsize, n_positions, nepochs, batch_size, nfs, M, seed=3):
    raw = simulate_dataset(N=N, n_positions=n_positions, seed=seed)
    config = TrainingConfig(model=ModelConfig(N=N, gridsize=gridsize, n_filters_scale=nfs), nepochs=nepochs,
                            batch_size=batch_size, n_groups=n_positions, output_dir=tmp_path)
    execution = PyTorchExecutionConfig(accelerator="cpu", logger_backend=None, enable_checkpointing=False)
    _amp, _phase, res = run_cdi_example_torch(raw, raw, config, M=M, do_stitching=True, execution_config=execution,
                                              quiet=True, save_bundle=False)
    score = score_stitched(res["stitched"], raw.objectGuess, res["global_offsets"], N, M)
    print(f"N={N} gridsize={gridsize}: stitched amplitude Pearson {score['amp_pearson']:.3f}, "
          f"phase {score['phase_pearson']:.3f}; train loss {res['history']['train_loss'][0]:.4g} -> "
          f"{res['history']['train_loss'][-1]:.4g}")
    return score, res["history"]


def test_gridsize2_reconstruction_correlates_with_the_truth(tmp_path):
    score, history = _train_and_score(tmp_path, N=32, gridsize=2, n_positions=32, nepochs=25, batch_size=4, nfs=1,
                                      M=16)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert score["amp_pearson"] > AMP_PEARSON_THRESHOLD


@pytest.mark.slow
@pytest.mark.parametrize("gridsize", [1, 2])
def test_n64_reconstruction_quality(tmp_path, gridsize):
    """N=64, 256 positions, 10 epochs of batch 16 (gs1) / 8 (gs2), default width."""
    score, history = _train_and_score(tmp_path, N=64, gridsize=gridsize, n_positions=256, nepochs=10,
                                      batch_size=16 if gridsize == 1 else 8, nfs=2, M=20, seed=0)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert score["amp_pearson"] > AMP_PEARSON_THRESHOLD

"""The shared loss-weight record both backends train with."""

from __future__ import annotations

import pytest

from ptycho.config.config import ModelConfig, TrainingConfig
from ptycho.loss_weights import LossWeights


def test_from_config_reads_the_training_fields():
    tc = TrainingConfig(model=ModelConfig(N=32), nll_weight=0.5, mae_weight=0.25, realspace_weight=0.5,
                        realspace_mae_weight=0.5)
    w = LossWeights.from_config(tc)
    assert (w.nll_weight, w.mae_weight, w.realspace_factor, w.mode) == (0.5, 0.25, 0.25, "poisson")
    assert w.uses_realspace


def test_torch_loss_mode_applies_only_when_asked():
    tc = TrainingConfig(model=ModelConfig(N=32))
    tc.torch_loss_mode = "mae"
    assert LossWeights.from_config(tc).nll_weight == 1.0  # the TF backend ignores a torch-only field
    w = LossWeights.from_config(tc, torch_loss_mode=True)
    assert (w.nll_weight, w.mae_weight, w.mode) == (0.0, 1.0, "mae")
    tc.torch_loss_mode = "l2"
    with pytest.raises(ValueError, match="torch_loss_mode='l2'"):
        LossWeights.from_config(tc, torch_loss_mode=True)

"""KerasAdam step by step against ptycho.reference.optim.adam_step (the Keras formula)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptycho.reference.optim import AdamState, adam_step
from ptycho_torch.optim import KerasAdam

pytestmark = pytest.mark.torch


def test_matches_reference_adam_over_several_steps(rng):
    shapes = {"a": (3, 4), "b": (5,), "s": ()}
    weights = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in weights.items()}
    opt = KerasAdam(params.values(), lr=3e-3)
    state = AdamState()
    ref = dict(weights)
    for step in range(6):
        # tiny gradients make sqrt(v) comparable to epsilon: where Keras and torch.optim.Adam differ
        scale = 1e-7 if step % 2 else 1.0
        grads = {k: (scale * rng.normal(size=s)).astype(np.float32) for k, s in shapes.items()}
        for k, p in params.items():
            p.grad = torch.tensor(grads[k])
        opt.step()
        ref = adam_step(ref, grads, state, lr=3e-3)
        for k, p in params.items():
            np.testing.assert_allclose(p.detach().numpy(), ref[k], rtol=2e-6, atol=1e-7)


def test_differs_from_torch_adam_and_skips_frozen(rng):
    w = torch.nn.Parameter(torch.ones(4))
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    opt = KerasAdam([w, frozen], lr=1.0)
    w.grad = torch.full((4,), 1e-7)
    opt.step()
    torch_w = torch.nn.Parameter(torch.ones(4))
    torch_opt = torch.optim.Adam([torch_w], lr=1.0, eps=1e-7)
    torch_w.grad = torch.full((4,), 1e-7)
    torch_opt.step()
    assert not torch.allclose(w, torch_w)
    assert torch.equal(frozen, torch.ones(2))


def test_learning_rate_can_change_between_steps():
    w = torch.nn.Parameter(torch.zeros(1))
    opt = KerasAdam([w], lr=1e-3)
    for group in opt.param_groups:
        group["lr"] = 0.5
    w.grad = torch.ones(1)
    opt.step()
    # first step: m/(sqrt(v)+eps) ~ 1 and the bias corrections cancel to ~1
    assert float(w.detach()) == pytest.approx(-0.5, rel=1e-5)


def test_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr"):
        KerasAdam([torch.nn.Parameter(torch.zeros(1))], lr=0.0)

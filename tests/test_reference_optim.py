"""The NumPy Adam reference against an independent hand computation and its known properties."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.conventions import ADAM_EPSILON, LEARNING_RATE
from ptycho.reference.optim import AdamState, adam_step


def test_first_step_moves_each_weight_by_about_lr_against_the_gradient_sign():
    w = {"a": np.array([1.0, -2.0, 0.5], np.float32)}
    g = {"a": np.array([3.0, -0.01, 1e-3], np.float32)}
    out = adam_step(w, g, AdamState())
    # Step 1: m = 0.1 g, v = 0.001 g^2, alpha = lr*sqrt(0.001)/0.1 -> update = lr*g/(|g| + eps/sqrt(0.001)).
    expected = w["a"] - LEARNING_RATE * g["a"] / (np.abs(g["a"]) + ADAM_EPSILON / np.sqrt(0.001))
    np.testing.assert_allclose(out["a"], expected, rtol=1e-6)
    assert out["a"].dtype == np.float32


def test_two_steps_match_hand_computation():
    w = {"a": np.array([0.3])}
    state = AdamState()
    g1, g2 = 0.5, -0.2
    w1 = adam_step(w, {"a": np.array([g1])}, state)
    w2 = adam_step(w1, {"a": np.array([g2])}, state)
    m1, v1 = 0.1 * g1, 0.001 * g1**2
    m2, v2 = 0.9 * m1 + 0.1 * g2, 0.999 * v1 + 0.001 * g2**2
    a1 = LEARNING_RATE * np.sqrt(1 - 0.999) / (1 - 0.9)
    a2 = LEARNING_RATE * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    expected = 0.3 - a1 * m1 / (np.sqrt(v1) + ADAM_EPSILON) - a2 * m2 / (np.sqrt(v2) + ADAM_EPSILON)
    assert w2["a"][0] == pytest.approx(expected, rel=1e-12)
    assert state.step == 2


def test_frozen_parameters_are_untouched():
    w = {"a": np.ones(2), "frozen": np.ones(2)}
    out = adam_step(w, {"a": np.ones(2)}, AdamState())
    assert out["frozen"] is w["frozen"]
    assert not np.allclose(out["a"], 1.0)

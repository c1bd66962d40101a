"""Shared test fixtures.

Global state is isolated: ``ptycho.params.cfg`` is snapshotted before every test
and restored afterwards, so no test can leak configuration into another.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import types
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles: 'ci' is derandomized and bounded (the default, used by the
# gate); 'explore' draws many examples for a nightly run
# (HYPOTHESIS_PROFILE=explore).
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: Marker -> (import name, skip reason).  A test marked ``tf`` / ``torch`` outside tests/tf and tests/torch
#: (whose conftests skip the whole directory) is skipped with the reason when its framework is absent,
#: so `pip install .[torch,test]` alone and `.[tf,test]` alone both run the default suite green.
FRAMEWORK_MARKERS = {
    "tf": ("tensorflow", "TensorFlow is not installed (pip install '.[tf]')"),
    "torch": ("torch", "PyTorch is not installed (pip install '.[torch]')"),
}


def pytest_collection_modifyitems(config, items):
    missing = {m: reason for m, (module, reason) in FRAMEWORK_MARKERS.items()
               if importlib.util.find_spec(module) is None}
    for item in items:
        for marker, reason in missing.items():
            if item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _isolate_params_cfg():
    """Snapshot ``ptycho.params.cfg`` before the test and restore it exactly afterwards."""
    try:
        from ptycho import params
    except ImportError:  # the params module is optional for pure-NumPy tests
        yield
        return
    snapshot = copy.deepcopy(params.cfg)
    try:
        yield
    finally:
        params.cfg.clear()
        params.cfg.update(snapshot)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator; tests never touch numpy's global RNG."""
    return np.random.default_rng(1234)


@pytest.fixture
def asymmetric_probe() -> np.ndarray:
    """The simulator's N=32 probe with a phase ramp and an amplitude tilt: complex64 ``[32, 32]``.

    ``P(r) != P(-r)``, ``P != P.T`` and ``P`` is far from real, so a flipped, transposed or
    conjugated convention changes the diffraction (the physics-oracle tests).
    """
    from ptycho.simulation import make_probe

    n = 32
    r = np.arange(n) - n // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    ramp = np.exp(2j * np.pi * (0.06 * xx + 0.02 * yy)) * (1.0 + 0.4 * xx / n + 0.1 * yy / n)
    return (make_probe(n) * ramp).astype(np.complex64)


# --------------------------------------------------------------------------- resume contract
# Both backends' resume tests check: 2 epochs + resume to 4 == 4 epochs, to the gate's tolerances
# (conformance.tolerances.STAGE_TOLERANCES): the per-epoch loss history with ``e2e/loss_history``,
# the final weights with ``train_k_steps/weights/*`` (without its mismatch budget).
def _tolerance(stage: str, tensor: str):
    from conformance.tolerances import STAGE_TOLERANCES

    return next(t for t in STAGE_TOLERANCES if t.matches(stage, tensor))


def assert_history_equal(resumed: Mapping[str, Sequence[float]], full: Mapping[str, Sequence[float]],
                         keys: Sequence[str]) -> None:
    """Every series in ``keys`` has the same length and agrees to the gate's e2e loss-history tolerance."""
    tol = _tolerance("e2e", "e2e/loss_history")
    for key in keys:
        a, b = np.asarray(resumed[key], np.float64), np.asarray(full[key], np.float64)
        assert a.shape == b.shape, (key, a.shape, b.shape)
        atol = tol.atol * (float(np.max(np.abs(b))) if tol.scale_atol and b.size else 1.0)
        np.testing.assert_allclose(a, b, rtol=tol.rtol, atol=atol, err_msg=key)


def assert_weights_equal(resumed: Sequence[np.ndarray], full: Sequence[np.ndarray]) -> None:
    """Final weights agree to the gate's ``train_k_steps/weights/*`` atol, with no mismatch budget."""
    tol = _tolerance("train_k_steps", "train_k_steps/weights/x")
    assert len(resumed) == len(full)
    for i, (a, b) in enumerate(zip(resumed, full, strict=True)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol.rtol, atol=tol.atol, err_msg=f"weight {i}")


@pytest.fixture
def resume_asserts() -> types.SimpleNamespace:
    """``history(resumed, full, keys)`` and ``weights(resumed, full)`` of the resume contract."""
    return types.SimpleNamespace(history=assert_history_equal, weights=assert_weights_equal)

"""Shared test fixtures.

Global state is isolated: ``ptycho.params.cfg`` is snapshotted before every test
and restored afterwards, so no test can leak configuration into another.
"""

from __future__ import annotations

import copy
import os

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

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

"""Hypothesis strategies for generated conformance scenarios, and the settings profiles that run them.

The parameters of a generated case are drawn in shrinking order, so a failure shrinks towards
the smallest case that still fails (gridsize 1, n_filters_scale 1, N 32, batch 1, seed 0, no
shift)::

    gridsize        1, 2, 3                          (C = gridsize**2 channels)
    n_filters_scale 1, 2
    N               32, 64, 128                      (SUPPORTED_N of the 'cnn' network without 256; only
                                                      the sizes whose batch-1 cost fits the budget)
    batch           1 .. max_batch(N, gridsize, n_filters_scale), within the same cost budget
    seed            0 .. 99                          (simulation, grouping and initial weights)
    shift_xy        (x, y) in quarter pixels, within the physical bounds of this case's groups

Physical bounds of the offsets: a patch must stay on the ``P x P`` canvas
(``P = ptycho.conventions.padded_size(N, gridsize)``), i.e. every position ``coords_relative +
shift`` must satisfy ``|offset| <= (P - N) / 2`` per axis (what ``conformance.inputs`` enforces).
:func:`shift_room` computes, from the case's actual groups (the core simulator and grouping,
NumPy only, cached), the interval of shifts that keeps every position inside; cases whose
groups alone already leave the canvas are rejected (they are not physical).

Profiles (selected by ``$HYPOTHESIS_PROFILE``, default ``ci``; see :func:`parity_settings`):

``ci``
    derandomized (the same cases on every run: a reproducible gate), :data:`CI_MAX_EXAMPLES`
    cases, no deadline, no example database, ``print_blob=True``; cost budget
    ``PROFILE_BUDGETS['ci']`` (no N 128 beyond gridsize 1 / n_filters_scale 1: the gate's
    registry covers those; 2-5 s per case on 2 idle cores).
``explore``
    :data:`EXPLORE_MAX_EXAMPLES` random cases for a nightly run, ``print_blob=True``, no deadline,
    a budget that admits every combination (N 128 at gridsize 3 with n_filters_scale 2 included).

``tests/conftest.py`` registers global profiles under the same names (``ci``/``explore``) for
the cheap property tests; the parity cases are far more expensive, so they are registered here as
``parity-ci`` / ``parity-explore`` and applied per test with ``@parity_settings()``; the global
profiles are left untouched.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from conformance.scenarios import Scenario, make_scenario
from ptycho import conventions

__all__ = [
    "CI_MAX_EXAMPLES",
    "COST_BUDGET",
    "EXPLORE_MAX_EXAMPLES",
    "GRIDSIZES",
    "N_FILTERS_SCALES",
    "PATCH_SIZES",
    "PROFILE_BUDGETS",
    "PROFILE_ENV",
    "STAGES",
    "batches",
    "case_cost",
    "gridsizes",
    "hypothesis_scenario",
    "max_batch",
    "n_filters_scales",
    "offsets",
    "parity_settings",
    "patch_sizes",
    "profile_budget",
    "profile_name",
    "scenarios",
    "seeds",
    "shift_room",
]

GRIDSIZES: tuple[int, ...] = (1, 2, 3)
PATCH_SIZES: tuple[int, ...] = (32, 64, 128)
N_FILTERS_SCALES: tuple[int, ...] = (1, 2)
#: Stages a generated case runs: the produce-phase stages that need neither training nor a bundle
#: (configure with its params.cfg snapshot, every physics op, the forward with every intermediate,
#: the losses, the gradient of every parameter).  Training, bundles and fresh-process loading are
#: the registry's job (``conformance.scenarios.FULL``): they cost seconds per case.
STAGES: tuple[str, ...] = ("configure", "physics_ops", "forward", "losses", "gradients")
#: Largest cost (:func:`case_cost`) of one generated case, per profile: bounds N and the batch.
PROFILE_BUDGETS: dict[str, float] = {"ci": 24.0, "explore": 128.0}
COST_BUDGET: float = PROFILE_BUDGETS["ci"]
#: Largest generated batch.
MAX_BATCH: int = 8
#: Offsets are drawn on a grid of 1/``SHIFT_STEPS`` pixel (exact in float32 and in JSON).
SHIFT_STEPS: int = 4
#: Seeds drawn for the data, the grouping and the initial weights.
MAX_SEED: int = 99

PROFILE_ENV = "HYPOTHESIS_PROFILE"
CI_MAX_EXAMPLES: int = 8
EXPLORE_MAX_EXAMPLES: int = 200
_PROFILES: dict[str, dict[str, Any]] = {
    "ci": {
        "derandomize": True,
        "max_examples": CI_MAX_EXAMPLES,
        "deadline": None,
        "print_blob": True,
        "database": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
    },
    "explore": {
        "max_examples": EXPLORE_MAX_EXAMPLES,
        "deadline": None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
    },
}
for _name, _kwargs in _PROFILES.items():
    settings.register_profile(f"parity-{_name}", **_kwargs)


def profile_name(profile: str | None = None) -> str:
    """``profile``, else ``$HYPOTHESIS_PROFILE``; anything but ``explore`` (e.g. ``default``) means ``ci``."""
    name = profile or os.environ.get(PROFILE_ENV, "ci")
    return name if name in _PROFILES else "ci"


def parity_settings(profile: str | None = None) -> settings:
    """The settings of the parity property tests for :func:`profile_name` (``parity-ci`` or ``parity-explore``).

    Use as a decorator (``@parity_settings()``); the gate never runs an unbounded number of cases.
    """
    return settings.get_profile(f"parity-{profile_name(profile)}")


def profile_budget(profile: str | None = None) -> float:
    """The cost budget (:func:`case_cost` of one case) of :func:`profile_name`."""
    return PROFILE_BUDGETS[profile_name(profile)]


# --------------------------------------------------------------------------- scalar strategies
def gridsizes() -> st.SearchStrategy[int]:
    """gridsize 1-3 (shrinks towards 1)."""
    return st.sampled_from(GRIDSIZES)


def patch_sizes(gridsize: int = 1, n_filters_scale: int = 1, budget: float | None = None) -> st.SearchStrategy[int]:
    """N in 32, 64, 128 (powers of two the network supports; shrinks towards 32).

    With a ``budget``, only the sizes whose batch-1 :func:`case_cost` fits it (N 32 always does).
    """
    sizes = [n for n in PATCH_SIZES if budget is None or case_cost(n, gridsize, 1, n_filters_scale) <= budget]
    return st.sampled_from(sizes or [PATCH_SIZES[0]])


def n_filters_scales() -> st.SearchStrategy[int]:
    """n_filters_scale 1 or 2 (shrinks towards 1)."""
    return st.sampled_from(N_FILTERS_SCALES)


def seeds() -> st.SearchStrategy[int]:
    """Data / grouping / weight seeds 0 .. :data:`MAX_SEED` (shrinks towards 0)."""
    return st.integers(0, MAX_SEED)


def case_cost(N: int, gridsize: int, batch: int, n_filters_scale: int) -> float:
    """A relative cost of one case: network work ``~ B N**2 nfs**2`` plus physics ``~ B C N**2`` (N 32 = 1)."""
    return batch * (N / 32.0) ** 2 * (n_filters_scale**2 + conventions.channels(gridsize)) / 2.0


def max_batch(N: int, gridsize: int, n_filters_scale: int, budget: float = COST_BUDGET) -> int:
    """The largest batch (at least 1, at most :data:`MAX_BATCH`) whose :func:`case_cost` fits ``budget``."""
    unit = case_cost(N, gridsize, 1, n_filters_scale)
    return max(1, min(MAX_BATCH, int(budget // unit)))


def batches(N: int, gridsize: int, n_filters_scale: int, budget: float = COST_BUDGET) -> st.SearchStrategy[int]:
    """Batch sizes ``1 .. max_batch(...)`` (shrinks towards 1)."""
    return st.integers(1, max_batch(N, gridsize, n_filters_scale, budget))


# --------------------------------------------------------------------------- offsets
@functools.lru_cache(maxsize=256)
def shift_room(N: int, gridsize: int, batch: int, seed: int) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The shifts ``((x_lo, x_hi), (y_lo, y_hi))`` that keep every position of this case on the canvas.

    Positions are the ``coords_relative`` of the case's groups (exactly as ``conformance.inputs``
    builds them: the same simulation and grouping) plus the shift; the bound is ``(P - N) / 2`` per
    axis.  Returns None when the groups alone leave the canvas (or too few groups exist): such a
    case is not physical.
    """
    from conformance.inputs import simulate

    probe = make_scenario("bounds", N=N, gridsize=gridsize, batch=batch, seed=seed)
    train, _ = simulate(probe)
    d = probe.data
    need = batch * (1 + probe.k_steps)
    grouped = train.generate_grouped_data(d.N, K=d.K, nsamples=need, seed=d.seed, gridsize=d.gridsize)
    rel = np.asarray(grouped["coords_relative"], dtype=np.float64)
    if len(rel) < need:
        return None
    margin = d.margin
    room = []
    for axis in (conventions.X_INDEX, conventions.Y_INDEX):
        lo = -margin - float(rel[:, :, axis, :].min())
        hi = margin - float(rel[:, :, axis, :].max())
        if lo > hi:
            return None
        room.append((lo, hi))
    return room[0], room[1]


def _grid_interval(lo: float, hi: float) -> tuple[int, int]:
    """The integer steps ``k`` with ``lo <= k / SHIFT_STEPS <= hi``."""
    return math.ceil(lo * SHIFT_STEPS - 1e-9), math.floor(hi * SHIFT_STEPS + 1e-9)


@st.composite
def offsets(draw: st.DrawFn, N: int, gridsize: int, batch: int, seed: int) -> tuple[float, float]:
    """A shift ``(x, y)`` in quarter pixels within the physical bounds of this case (shrinks towards 0).

    Rejects the case (``assume``) when its groups leave no room at all.
    """
    room = shift_room(N, gridsize, batch, seed)
    assume(room is not None)
    assert room is not None
    shift = []
    for lo, hi in room:
        k_lo, k_hi = _grid_interval(lo, hi)
        assume(k_lo <= k_hi)
        shift.append(draw(st.integers(k_lo, k_hi)) / SHIFT_STEPS)
    return shift[0], shift[1]


# --------------------------------------------------------------------------- scenarios
def hypothesis_scenario(
    *, N: int, gridsize: int, batch: int, n_filters_scale: int, seed: int, shift_xy: tuple[float, float]
) -> Scenario:
    """The generated-case :class:`Scenario` for these parameters (also used to pin cases with ``@example``).

    The id encodes every parameter, e.g. ``hyp-g3-N32-b2-f1-s7-x2.25_y-1.50``; the stages are
    :data:`STAGES`; offsets are ``'off_centre'`` with ``shift_xy`` (``(0, 0)`` is the group offsets).
    """
    sx, sy = (float(v) for v in shift_xy)
    sid = f"hyp-g{gridsize}-N{N}-b{batch}-f{n_filters_scale}-s{seed}-x{sx:.2f}_y{sy:.2f}"
    return make_scenario(
        sid,
        N=N,
        gridsize=gridsize,
        batch=batch,
        stages=STAGES,
        model={"n_filters_scale": n_filters_scale},
        seed=seed,
        offsets="off_centre",
        shift_xy=(sx, sy),
        description="hypothesis-generated case (conformance.strategies.scenarios)",
    )


@st.composite
def scenarios(draw: st.DrawFn, budget: float = COST_BUDGET) -> Scenario:
    """Small, physically valid generated scenarios (module docstring); ``budget`` bounds :func:`case_cost`."""
    gridsize = draw(gridsizes())
    nfs = draw(n_filters_scales())
    N = draw(patch_sizes(gridsize, nfs, budget))
    batch = draw(batches(N, gridsize, nfs, budget))
    seed = draw(seeds())
    shift = draw(offsets(N, gridsize, batch, seed))
    return hypothesis_scenario(N=N, gridsize=gridsize, batch=batch, n_filters_scale=nfs, seed=seed, shift_xy=shift)

"""Property-based parity: hypothesis-generated scenarios through both backends and the NumPy reference.

Each generated :class:`~conformance.scenarios.Scenario` (``conformance.strategies.scenarios``:
gridsize 1-3, N 32/64/128, batch, n_filters_scale 1/2, data seed and an off-centre shift within
the physical bounds of its groups) gets its inputs written once (``conformance.inputs``), runs
``configure``, ``physics_ops``, ``forward``, ``losses`` and ``gradients`` in three persistent
worker processes (``python -m conformance.worker --serve``, one per side, started once per module
by :class:`conformance.serve_pool.ServePool`: TensorFlow and torch are never imported here), and is
judged by ``conformance.compare.judge_scenario`` with the gate's tolerances.  A failing case fails
with the judge's messages (scenario / stage / tensor, max abs and rel error, mismatch count and
locations) and the worker's stderr tail when a worker died.

Profiles (``conformance.strategies.parity_settings``): ``HYPOTHESIS_PROFILE=ci`` (default; in the
gate) runs a fixed, derandomized set of small cases; ``HYPOTHESIS_PROFILE=explore`` (nightly)
draws many random cases over the whole space::

    HYPOTHESIS_PROFILE=explore python -m pytest tests/conformance/test_hypothesis_parity.py

Replaying a failure.  Every failure of a generated case prints the falsifying scenario and a blob.
For example, with the offset-sign mutant (``PTYCHO_MUTANT=offset_sign_flip python -m pytest
tests/conformance/test_hypothesis_parity.py``, remove the ``@example`` lines first, as they fail
before any case is generated) hypothesis shrinks to a gridsize-1 case with a quarter-pixel shift and
prints::

    AssertionError: generated scenario hyp-g1-N32-b1-f1-s0-x0.00_y0.25 diverges
    ...
    You can reproduce this test case by temporarily adding
    @reproduce_failure('6.170.15', b'AEEAQQBBAEEBQQBBAEEB') as a decorator on your test function

Paste that decorator directly above ``@given`` of :func:`test_generated_scenarios_agree` (import
``reproduce_failure`` from ``hypothesis``) and rerun: hypothesis replays exactly that case, first
thing (the blob is tied to the hypothesis version that printed it).  The scenario id encodes every
parameter, so once the case is understood pin it for good with ``@example(scenario=
hypothesis_scenario(N=32, gridsize=1, batch=1, n_filters_scale=1, seed=0, shift_xy=(0.0, 0.25)))``,
as :data:`MIN_SHIFT_CASE` is: ``@example`` cases run first on every run, in every profile, and
never depend on the blob format or the example database.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given

from conformance.compare import judge_scenario
from conformance.inputs import INPUTS_NAME, write_inputs
from conformance.runner import worker_env
from conformance.scenarios import Scenario
from conformance.serve_pool import ServePool, WorkerError
from conformance.strategies import (
    GRIDSIZES,
    N_FILTERS_SCALES,
    PATCH_SIZES,
    STAGES,
    case_cost,
    hypothesis_scenario,
    parity_settings,
    profile_budget,
    scenarios,
    shift_room,
)

#: Seconds one generated case may take in one worker (the first includes importing the framework).
CASE_TIMEOUT_S = 300.0
#: Processes a side may start in one session; past that every case fails at once, so a worker that
#: cannot start (an import error) costs a few restarts, not one ~15 s restart per shrinking step.
MAX_WORKER_STARTS = 5

#: Pinned case: gridsize 3 with the largest shift its groups allow, (-5.25, +5.25) px, so the
#: outermost positions sit within 0.1 px of the canvas edge (margin (P - N)/2 = 9 px): extraction
#: samples the zero fill at the border and reassembly normalises by the thinnest mask coverage.
EDGE_CASE_GS3 = hypothesis_scenario(N=32, gridsize=3, batch=2, n_filters_scale=1, seed=54, shift_xy=(-5.25, 5.25))
#: Pinned case found by shrinking: the smallest case that exposes a sign flip of the offsets (the
#: offset_sign_flip mutant): gridsize 1, batch 1 and a quarter-pixel y shift.  At gridsize 1 the group
#: offsets are all zero, so only an off-centre shift can reveal a sign or x/y convention error there.
MIN_SHIFT_CASE = hypothesis_scenario(N=32, gridsize=1, batch=1, n_filters_scale=1, seed=0, shift_xy=(0.0, 0.25))


@pytest.fixture(scope="module")
def pool() -> Iterator[ServePool]:
    """One ``--serve`` worker per side for the whole module (thread counts as the gate's runner sets them)."""
    with ServePool(env=worker_env(None, jobs=3), timeout_s=CASE_TIMEOUT_S) as workers:
        yield workers


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of the generated cases (one scenario directory each)."""
    return tmp_path_factory.mktemp("hypothesis-run")


def _failure_text(scenario: Scenario, problems: list[str]) -> str:
    params = json.dumps(scenario.to_dict()["data"], sort_keys=True)
    return f"generated scenario {scenario.id} diverges\n  data: {params}\n" + "\n".join(problems)


def run_case(pool: ServePool, run_root: Path, scenario: Scenario) -> None:
    """Run one scenario through every worker and fail with the judge's messages on any divergence.

    Raises ``AssertionError`` (not ``pytest.fail(pytrace=False)``, which would hide the notes where
    hypothesis prints the falsifying example and its ``@reproduce_failure`` blob).
    """
    __tracebackhide__ = True
    exhausted = [side for side in pool.backends if pool.starts(side) >= MAX_WORKER_STARTS]
    if exhausted:
        raise AssertionError(f"the {exhausted} worker(s) crashed or timed out {MAX_WORKER_STARTS - 1} times in this "
                             "session; see the first failure for the stderr tail")
    sdir = run_root / scenario.id
    shutil.rmtree(sdir, ignore_errors=True)  # a replayed case never reads an earlier record
    write_inputs(scenario, sdir)
    replies = pool.broadcast({"scenario": scenario.to_dict(), "run": str(run_root), "phase": "produce"})
    problems = []
    for side, reply in replies.items():
        if isinstance(reply, WorkerError):
            problems.append(f"{side} worker failed: {reply}")
        elif not reply.get("ok"):
            err = reply.get("error") or {}
            problems.append(f"{side} worker refused the request: {err.get('type')}: {err.get('message')}\n"
                            f"{err.get('traceback', '')}")
    if problems:
        raise AssertionError(_failure_text(scenario, problems))
    verdicts = judge_scenario(run_root, scenario, scenario.stages)
    failing = [v for v in verdicts if v.failing]
    if failing:
        lines = []
        for v in failing:
            lines.append(f"[{v.status}] {v.message}")
            if v.stderr_tail:
                lines.append(textwrap.indent(v.stderr_tail, "    "))
        raise AssertionError(_failure_text(scenario, lines))


@pytest.mark.parity
@parity_settings()
@example(scenario=EDGE_CASE_GS3)
@example(scenario=MIN_SHIFT_CASE)
@given(scenario=scenarios(budget=profile_budget()))
def test_generated_scenarios_agree(pool: ServePool, run_root: Path, scenario: Scenario) -> None:
    """TF, PyTorch and the NumPy reference agree on every stage of every generated scenario."""
    run_case(pool, run_root, scenario)


# --------------------------------------------------------------------------- the strategies themselves
def test_pinned_edge_case_is_at_the_physical_bound(tmp_path: Path) -> None:
    """The pinned gridsize-3 case really sits at the edge: one more quarter pixel would leave the canvas."""
    (x_lo, _), (_, y_hi) = shift_room(32, 3, 2, 54)
    sx, sy = EDGE_CASE_GS3.data.shift_xy
    assert x_lo <= sx < x_lo + 0.25 and y_hi - 0.25 < sy <= y_hi
    with np.load(write_inputs(EDGE_CASE_GS3, tmp_path / "case") / INPUTS_NAME) as npz:
        worst = float(np.abs(npz["positions"]).max())
    assert EDGE_CASE_GS3.data.margin - 0.25 < worst <= EDGE_CASE_GS3.data.margin
    with pytest.raises(ValueError, match="canvas margin"):
        write_inputs(hypothesis_scenario(N=32, gridsize=3, batch=2, n_filters_scale=1, seed=54,
                                         shift_xy=(sx - 0.25, sy)), tmp_path / "beyond")


@parity_settings("ci")
@given(scenario=scenarios(budget=profile_budget("explore")))
def test_generated_scenarios_are_small_and_physical(scenario: Scenario) -> None:
    """Every generated case fits the budget, runs the listed stages and keeps its offsets on the canvas.

    The inputs are written by ``conformance.inputs.write_inputs``, which refuses any position beyond
    the canvas margin ``(P - N)/2``: the strategy's bound is checked against the harness's, not itself.
    """
    d = scenario.data
    nfs = scenario.model["n_filters_scale"]
    assert d.gridsize in GRIDSIZES and d.N in PATCH_SIZES and nfs in N_FILTERS_SCALES
    assert case_cost(d.N, d.gridsize, d.n_groups, nfs) <= profile_budget("explore")
    assert scenario.stages == STAGES
    with tempfile.TemporaryDirectory() as tmp, np.load(write_inputs(scenario, tmp) / INPUTS_NAME) as npz:
        assert np.abs(npz["positions"]).max() <= d.margin


# --------------------------------------------------------------------------- the pool itself
_FAKE_WORKER = """
import json, os, sys
print("a library's stray print", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req.get("crash"):
        print("fatal: simulated crash in", sys.argv[1], file=sys.stderr, flush=True)
        os._exit(3)
    if req.get("hang"):
        import time
        time.sleep(60)
    print(json.dumps({"ok": True, "backend": sys.argv[1], "echo": req["n"]}), flush=True)
"""


@pytest.fixture
def fake_pool(tmp_path: Path) -> Iterator[ServePool]:
    """A pool of two fake serve workers (plain Python: echo, crash or hang on request)."""
    script = tmp_path / "fake_worker.py"
    script.write_text(_FAKE_WORKER)
    with ServePool(("a", "b"), command=lambda backend: [sys.executable, str(script), backend], timeout_s=5.0,
                   log_dir=tmp_path) as workers:
        yield workers


def test_pool_replies_skip_stray_output(fake_pool: ServePool) -> None:
    """Replies come back per backend; non-JSON stdout lines are skipped; workers persist across requests."""
    for n in range(3):
        assert fake_pool.broadcast({"n": n}) == {
            "a": {"ok": True, "backend": "a", "echo": n},
            "b": {"ok": True, "backend": "b", "echo": n},
        }
    assert fake_pool.starts("a") == fake_pool.starts("b") == 1


def test_pool_crash_is_one_failure_with_stderr_and_a_fresh_worker(fake_pool: ServePool) -> None:
    """A crashed worker yields a WorkerError with its stderr tail; the next request gets a new process."""
    replies = fake_pool.broadcast({"n": 0, "crash": True}, backends=("a",))
    err = replies["a"]
    assert isinstance(err, WorkerError)
    assert "exited with status 3" in str(err) and "simulated crash in a" in err.stderr_tail
    assert fake_pool.request("a", {"n": 1}) == {"ok": True, "backend": "a", "echo": 1}
    assert fake_pool.starts("a") == 2


def test_pool_timeout_kills_the_worker(fake_pool: ServePool) -> None:
    """A request over the timeout kills that worker and raises; the other backend still answers."""
    fake_pool.timeout_s = 1.0
    with pytest.raises(WorkerError, match="timed out"):
        fake_pool.request("a", {"n": 0, "hang": True})
    assert fake_pool.request("b", {"n": 1})["echo"] == 1
    assert fake_pool.request("a", {"n": 2})["echo"] == 2

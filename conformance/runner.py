"""Run the gate: write inputs, run the backend workers in their own processes, judge the records.

Process model (``specs/conformance.md``):

1. the runner (which never imports tensorflow or torch) writes each scenario's inputs
   (``conformance.inputs.write_inputs``) into ``RUN/<sid>/``;
2. phase ``produce``: worker processes (``python -m conformance.worker``), one per side
   (tensorflow, pytorch, reference) and shard of the scenarios, at most ``jobs`` at a time,
   longest first (:func:`plan_tasks`);
3. phase ``consume``: fresh worker processes; a shard's consume starts as soon as every
   side has produced its scenarios, so it overlaps the other shards' produce;
4. :func:`conformance.compare.judge` reads the records and returns the verdicts.

A worker that crashes or times out is not the end of the run: the scenarios it left
without a record are re-run one per process, so a scenario that still crashes costs one
``error`` verdict per stage carrying the last 40 lines of its stderr
(``RUN/<sid>/<side>/<phase>.crash.json``), and every other scenario is judged normally.

Workers get ``PTYCHO_THREADS`` (and the OpenMP/MKL/TensorFlow thread variables set to the
same value) = cores // jobs, at least 1, so three concurrent workers do not oversubscribe
two cores; ``PTYCHO_MUTANT`` and every other variable of ``env`` pass through.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from conformance.compare import crash_path, judge, tail
from conformance.scenarios import PHASES, SIDES, STAGES
from conformance.verdicts import GateResult, Verdict

__all__ = [
    "RUN_MARKER",
    "SIDES",
    "THREAD_VARIABLES",
    "WorkerCommand",
    "WorkerTask",
    "default_worker_command",
    "judge_records",
    "plan_tasks",
    "prepare_run_dir",
    "record_versions",
    "recorded_mutant",
    "scenario_weight",
    "run_gate",
    "run_workers",
    "verdict_signature",
    "worker_env",
]

#: Thread-count variables set for every worker (PTYCHO_THREADS is read by conformance.worker).
THREAD_VARIABLES: tuple[str, ...] = (
    "PTYCHO_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
#: File that marks a directory as a run directory this runner may clear.
RUN_MARKER = ".conformance-run"
_POLL_S = 0.2

#: ``(side, phase, run_dir, scenario_ids) -> argv`` of one worker process.
WorkerCommand = Callable[[str, str, Path, Sequence[str]], list[str]]


def default_worker_command(side: str, phase: str, run_dir: Path, scenario_ids: Sequence[str]) -> list[str]:
    """``python -m conformance.worker --backend SIDE --phase PHASE --run RUN --scenarios a,b,...``."""
    return [
        sys.executable, "-m", "conformance.worker", "--backend", side, "--phase", phase,
        "--run", str(run_dir), "--scenarios", ",".join(scenario_ids),
    ]  # fmt: skip


def worker_env(env: Mapping[str, str] | None = None, jobs: int = 3) -> dict[str, str]:
    """The environment of every worker: ours, then ``env``, then one thread count for all libraries.

    ``PTYCHO_THREADS`` from ``env`` (or our environment) wins; otherwise it is
    ``cpu_count // jobs`` (at least 1).  TensorFlow's C++ logging is quietened so the
    stderr tail of a crash shows the crash.
    """
    out = dict(os.environ)
    out.update(env or {})
    threads = out.get("PTYCHO_THREADS") or str(max(1, (os.cpu_count() or 1) // max(1, jobs)))
    for var in THREAD_VARIABLES:
        out[var] = threads
    out.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out["PYTHONUNBUFFERED"] = "1"
    return out


def prepare_run_dir(run_dir: Path) -> Path:
    """Create an empty run directory; clear one only if an earlier run of this runner marked it."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not (run_dir / RUN_MARKER).exists():
            raise ValueError(f"run directory {run_dir} is not empty and was not made by the gate; pick another")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).write_text("records of one run of the conformance gate; cleared by the next run\n")
    return run_dir


def _record_done(run_dir: Path, sid: str, side: str, phase: str) -> bool:
    return (run_dir / sid / side / f"{phase}.json").exists() or crash_path(run_dir, sid, side, phase).exists()


@dataclass
class _Job:
    side: str
    phase: str
    scenarios: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    deadline: float

    def finished(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        """Kill this worker and anything it started (its own process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _start(
    side: str, phase: str, scenarios: list[str], run_dir: Path, env: dict[str, str], timeout_s: float,
    command: WorkerCommand,
) -> _Job:
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    more = f"+{len(scenarios) - 1}" if len(scenarios) > 1 else ""
    log_path = logs / f"{phase}-{side}-{scenarios[0]}{more}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        command(side, phase, run_dir, scenarios),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    return _Job(side, phase, scenarios, log_path, proc, log, time.monotonic() + timeout_s)


def _write_crash(run_dir: Path, job: _Job, sid: str, timed_out: bool, timeout_s: float) -> None:
    text = job.log_path.read_text(errors="replace") if job.log_path.exists() else ""
    code = job.proc.returncode
    if timed_out:
        reason = f"timed out after {timeout_s:g} s (killed)"
    elif code == 0:
        reason = "exited 0 without writing the record"
    elif code < 0:
        reason = f"killed by signal {signal.Signals(-code).name}"
    else:
        reason = f"exited with code {code} without writing the record"
    path = crash_path(run_dir, sid, job.side, job.phase)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "reason": reason, "returncode": code, "timed_out": timed_out, "log": str(job.log_path),
        "command": " ".join(job.proc.args), "stderr_tail": tail(text),
    }, indent=1))  # fmt: skip


def _write_inputs(write: Callable[[Any, Path], Any], scenario: Any, run_dir: Path) -> bool:
    """Write one scenario's inputs; on failure leave crash files for every side and phase instead of raising."""
    try:
        write(scenario, run_dir / scenario.id)
        return True
    except Exception as exc:  # one broken scenario must not stop the gate
        text = tail("".join(traceback.format_exception(exc)))
        for side in SIDES:
            for phase in PHASES:
                path = crash_path(run_dir, scenario.id, side, phase)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"reason": f"the runner could not write the inputs: {type(exc).__name__}: "
                                            f"{exc}", "returncode": None, "timed_out": False, "stderr_tail": text}))
        return False


@dataclass(frozen=True)
class WorkerTask:
    """One worker process to run: ``phase`` of ``scenarios`` for ``side``."""

    side: str
    phase: str
    scenarios: tuple[str, ...]


#: Relative cost of a scenario's work per side and phase (measured on the 2-core dev machine:
#: TensorFlow does ~3x the work of torch, the reference ~1/3; consume ~1/2 of produce).
_SIDE_COST = {"tensorflow": 3.0, "pytorch": 1.0, "reference": 0.35}
_PHASE_COST = {"produce": 1.0, "consume": 0.45}


def scenario_weight(scenario: Any) -> float:
    """A rough cost of one scenario: e2e / workflow train for epochs (once for both), bundles cost a save and a load."""
    stages = set(scenario.stages)
    return (1.0 + 1.0 * ("save_load" in stages) + 0.5 * ("train_k_steps" in stages)
            + 6.0 * bool({"e2e", "workflow"} & stages) + 1.0 * ("inference" in stages))


def plan_tasks(scenarios: Sequence[Any], *, shards: int, sides: Sequence[str] = SIDES) -> list[WorkerTask]:
    """Worker processes for a run, longest first: each side's scenarios split into ``shards`` balanced shards.

    The consume task of a shard waits (in :func:`run_workers`) for every side's produce of the
    same scenarios, so the shards pipeline: one shard's consume runs while another produces.
    """
    groups: list[list[Any]] = [[] for _ in range(max(1, min(shards, len(scenarios))))]
    for sc in sorted(scenarios, key=scenario_weight, reverse=True):  # longest processing time first
        min(groups, key=lambda g: sum(map(scenario_weight, g))).append(sc)
    weighted = [
        (_SIDE_COST.get(side, 1.0) * _PHASE_COST[phase] * sum(map(scenario_weight, g)),
         WorkerTask(side, phase, tuple(sc.id for sc in g)))
        for phase in PHASES for side in sides for g in groups if g
    ]  # fmt: skip
    return [task for _, task in sorted(weighted, key=lambda wt: (wt[1].phase != "produce", -wt[0]))]


def _blocked(task: WorkerTask, pending: Sequence[WorkerTask]) -> bool:
    """A consume task waits while any produce task of one of its scenarios is pending or running."""
    return task.phase == "consume" and any(
        p.phase == "produce" and set(p.scenarios) & set(task.scenarios) for p in pending
    )


def run_workers(
    run_dir: Path, tasks: Sequence[WorkerTask], *, env: dict[str, str], timeout_s: float, jobs: int,
    command: WorkerCommand = default_worker_command, on_poll: Callable[[], None] | None = None,
) -> None:
    """Run ``tasks`` (at most ``jobs`` processes at once; consume after the produce of its scenarios).

    When a worker ends, its scenarios without a record are queued again one per process (ahead
    of the rest); a single-scenario worker that still leaves no record gets a crash file instead.
    ``on_poll`` is called about five times a second (the progress bar).
    """
    queue: list[WorkerTask] = list(tasks)
    running: list[_Job] = []
    while queue or running:
        in_flight = [WorkerTask(j.side, j.phase, tuple(j.scenarios)) for j in running]
        for task in [t for t in queue if not _blocked(t, queue + in_flight)]:
            if len(running) >= max(1, jobs):
                break
            queue.remove(task)
            running.append(_start(task.side, task.phase, list(task.scenarios), run_dir, env, timeout_s, command))
            in_flight.append(task)
        time.sleep(_POLL_S)
        if on_poll is not None:
            on_poll()
        for job in list(running):
            timed_out = not job.finished() and time.monotonic() > job.deadline
            if timed_out:
                job.kill()
            elif not job.finished():
                continue
            job.log.close()
            running.remove(job)
            left = [sid for sid in job.scenarios if not _record_done(run_dir, sid, job.side, job.phase)]
            if len(job.scenarios) > 1:
                queue[:0] = [WorkerTask(job.side, job.phase, (sid,)) for sid in left]
            else:
                for sid in left:
                    _write_crash(run_dir, job, sid, timed_out, timeout_s)
    if on_poll is not None:
        on_poll()


def record_versions(run_dir: Path, scenario_ids: Sequence[str]) -> dict[str, str]:
    """Library versions the workers recorded (first record found per side), plus the runner's own."""
    import numpy

    from ptycho import __version__ as ptycho_version

    versions = {"python": sys.version.split()[0], "numpy": numpy.__version__, "ptychopinn": ptycho_version}
    for side in SIDES:
        for sid in scenario_ids:
            path = Path(run_dir) / sid / side / "produce.json"
            if path.exists():
                recorded = json.loads(path.read_text()).get("versions") or {}
                versions.update({k: str(v) for k, v in recorded.items() if k not in versions})
                break
    return versions


def recorded_mutant(run_dir: Path, scenario_ids: Sequence[str]) -> str | None:
    """The mutant named by the first record found (None for a clean run)."""
    for sid in scenario_ids:
        for side in SIDES:
            path = Path(run_dir) / sid / side / "produce.json"
            if path.exists():
                return json.loads(path.read_text()).get("mutant") or None
    return None


def verdict_signature(verdicts: Sequence[Verdict]) -> list[tuple[str, str, str, tuple[tuple[str, str, bool], ...]]]:
    """What two runs must share to count as identical: status and each check's outcome per scenario x stage."""
    return [
        (v.scenario, v.stage, v.status, tuple((c.tensor, c.pair, c.passed) for c in v.checks)) for v in verdicts
    ]


def _progress(total: int, run_dir: Path, sids: Sequence[str], enabled: bool) -> tuple[Callable[[], None], Any]:
    """A poll callback that advances a tqdm bar by the records that appeared (no-op when disabled)."""
    if not enabled:
        return (lambda: None), None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="conformance gate", unit="record", file=sys.stderr, dynamic_ncols=True, disable=None)

    def poll() -> None:
        done = sum(_record_done(run_dir, sid, side, ph) for sid in sids for side in SIDES for ph in PHASES)
        bar.update(done - bar.n)

    return poll, bar


def run_gate(
    scenario_ids: list[str] | None = None,
    stages: list[str] | None = None,
    *,
    run_dir: Path,
    report_dir: Path | None,
    env: dict[str, str] | None = None,
    timeout_s: float = 600,
    jobs: int = 3,
    progress: bool = True,
    worker_command: WorkerCommand = default_worker_command,
    command: str | None = None,
) -> GateResult:
    """Run the gate over ``scenario_ids`` (default ``DEFAULT_GATE``) and judge ``stages`` (default all).

    ``run_dir`` receives inputs, records and worker logs (see :func:`prepare_run_dir`);
    ``report_dir``, when given, receives the reports of ``conformance.report.write_reports``.
    ``worker_command`` builds each worker's argv (tests inject fakes); ``command`` is the
    command line recorded in the result.
    """
    from conformance.inputs import write_inputs
    from conformance.scenarios import DEFAULT_GATE, REGISTRY

    t0 = time.monotonic()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    ids = list(DEFAULT_GATE) if not scenario_ids else list(dict.fromkeys(scenario_ids))
    unknown = [sid for sid in ids if sid not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; `python -m conformance list` shows the registry")
    bad_stages = sorted(set(stages or ()) - set(STAGES))
    if bad_stages:
        raise ValueError(f"unknown stages {bad_stages}; expected some of {list(STAGES)}")
    scenarios = [REGISTRY[sid] for sid in ids]
    wanted = [s for s in STAGES if not stages or s in stages]

    run_dir = prepare_run_dir(run_dir)
    runnable = [sc.id for sc in scenarios if _write_inputs(write_inputs, sc, run_dir)]

    wenv = worker_env(env, jobs)
    poll, bar = _progress(len(ids) * len(SIDES) * len(PHASES), run_dir, ids, progress)
    tasks = plan_tasks([sc for sc in scenarios if sc.id in runnable], shards=max(1, jobs - 1))
    try:
        run_workers(run_dir, tasks, env=wenv, timeout_s=timeout_s, jobs=jobs, command=worker_command, on_poll=poll)
    finally:
        if bar is not None:
            bar.close()

    return judge_records(
        run_dir, scenarios, wanted, report_dir=report_dir, started=started, t0=t0,
        mutant=wenv.get("PTYCHO_MUTANT") or None,
        command=command or " ".join(
            ["python -m conformance run", *(f"--scenario {s}" for s in scenario_ids or []),
             *(f"--stage {s}" for s in stages or [])]
        ),
    )  # fmt: skip


def judge_records(
    run_dir: Path, scenarios: Sequence[Any], stages: Sequence[str], *, report_dir: Path | None, command: str,
    started: str | None = None, t0: float | None = None, mutant: str | None = None,
) -> GateResult:
    """Judge the records in ``run_dir`` into a :class:`GateResult` and write the reports when asked.

    ``mutant`` defaults to the one the records name; ``started``/``t0`` default to now.
    """
    t0 = time.monotonic() if t0 is None else t0
    ids = [s.id for s in scenarios]
    result = GateResult(
        verdicts=judge(run_dir, scenarios, stages),
        scenarios=ids,
        stages=list(stages),
        seconds=time.monotonic() - t0,
        started=started or datetime.now(UTC).isoformat(timespec="seconds"),
        command=command,
        mutant=mutant or recorded_mutant(run_dir, ids),
        versions=record_versions(run_dir, ids),
    )
    if report_dir is not None:
        from conformance.report import write_reports

        write_reports(result, Path(report_dir))
    return result

"""The kill run: the real FULL default gate once per mutant, plus the clean gate twice.

For every mutant (:data:`planted_bugs.REGISTRY`) :func:`run_mutant` runs
``conformance.runner.run_gate`` on every scenario of ``conformance.scenarios.DEFAULT_GATE`` (what a
pull request runs, not scenarios picked for the mutant) with ``PTYCHO_MUTANT=<name>`` in its own run
directory and :func:`diagnose` classifies the result:

* ``caught``: the gate failed and a failing verdict names one of the mutant's expected checks;
* ``wrong check``: the gate failed, but only in checks the mutant does not expect (a
  diagnosis that would send a developer the wrong way);
* ``survived``: the gate passed, or failed only in checks that fail on clean code too;
* ``crashed``: the gate itself raised (not a verdict: the harness broke).

The clean gate runs twice on DEFAULT_GATE too (:func:`clean_result`); both
runs must pass and have identical verdict signatures (``conformance.runner.verdict_signature``).  Checks that fail
in the clean gate are the baseline: they never count towards catching a mutant.  Mutant and
clean gates run concurrently, ``jobs`` at a time.  The kill table goes to stdout and, as
Markdown and JSON, to ``reports/mutants/``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conformance.verdicts import GateResult, Verdict
from planted_bugs import REGISTRY, Mutant

__all__ = [
    "CleanRun",
    "KillRow",
    "GateRun",
    "diagnose",
    "failing_checks",
    "kill_row",
    "main",
    "markdown",
    "clean_result",
    "gate_scenarios",
    "run_gate_once",
    "run_mutant",
]

#: Where the kill table is written by default.
DEFAULT_REPORT_DIR = Path("reports/mutants")
#: Worker processes one gate runs at once (tensorflow, pytorch, reference).
GATE_JOBS = 3
#: Gates run at once by default: one per core, at most 4.  The workers spend much of their time
#: importing a framework, so two gates (six workers) share two cores well: the whole kill run
#: (12 mutant gates + 2 clean gates) took 331 s on the 2-core development machine.
DEFAULT_JOBS = min(4, max(1, os.cpu_count() or 1))
#: Failing checks listed per mutant in the table (all of them are in the JSON).
_LISTED = 3
#: A rerun command lists the scenarios only when there are fewer than this (else it is the default gate).
_FULL_GATE_LISTED = 8
_MARKS = {"caught": "✅ caught", "survived": "❌ survived", "wrong check": "❌ wrong check"}

GateFn = Callable[..., GateResult]


@dataclass(frozen=True)
class FailingCheck:
    """One thing a failing verdict names: ``tensor`` is None for a stage-level error without checks."""

    scenario: str
    stage: str
    status: str
    tensor: str | None
    pair: str | None

    def label(self) -> str:
        """``stage:tensor [pair]`` (``stage:<error>`` for a stage-level failure)."""
        if self.tensor is None:
            return f"{self.stage}:<{self.status}>"
        return f"{self.stage}:{self.tensor} [{self.pair}]"


def failing_checks(verdicts: Sequence[Verdict]) -> list[FailingCheck]:
    """Every failing check of every failing verdict (a verdict failing without failed checks counts once)."""
    out: list[FailingCheck] = []
    for v in verdicts:
        if not v.failing:
            continue
        failed = [c for c in v.checks if not c.passed]
        if not failed:
            out.append(FailingCheck(v.scenario, v.stage, v.status, None, None))
        out.extend(FailingCheck(v.scenario, v.stage, v.status, c.tensor, c.pair) for c in failed)
    return out


def _matches(check: FailingCheck, expected: tuple[str, str]) -> bool:
    stage, glob = expected
    if check.stage != stage:
        return False
    if check.tensor is None:
        return glob == "*"
    return fnmatch.fnmatchcase(check.tensor, glob)


@dataclass
class KillRow:
    """One line of the kill table."""

    mutant: str
    backend: str
    bug_class: str
    target: str
    expected: list[str]
    scenarios: list[str]
    status: str
    caught_by: list[str] = field(default_factory=list)
    also_failing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""

    @property
    def killed(self) -> bool:
        return self.status == "caught"


def _label(c: FailingCheck) -> str:
    return f"{c.scenario}/{c.label()}"


def diagnose(mutant: Mutant, result: GateResult, seconds: float, baseline: Collection[str] = ()) -> KillRow:
    """Classify one mutant's gate result (see the module docstring).

    ``baseline`` holds the labels (``scenario/stage:tensor [pair]``) of checks that fail in the clean
    gate too; they are neither credited to the mutant nor enough to count it as caught.
    """
    checks = [c for c in failing_checks(result.verdicts) if _label(c) not in baseline]
    pre_existing = [c for c in failing_checks(result.verdicts) if _label(c) in baseline]
    hits = [c for c in checks if any(_matches(c, e) for e in mutant.expected)]
    others = [c for c in checks if c not in hits] + pre_existing
    if not checks:
        why = "the gate passed" if result.ok else "the gate failed only where the clean gate fails too"
        status, message = "survived", f"{why} with the mutant applied"
    elif hits:
        status, message = "caught", f"{len(hits)} failing check(s) name an expected check"
    else:
        status, message = "wrong check", "the gate failed, but no failing verdict names an expected check"
    if pre_existing:
        message += f"; {len(pre_existing)} failing check(s) also fail on clean code"
    return KillRow(
        mutant=mutant.name,
        backend=mutant.backend,
        bug_class=mutant.bug_class,
        target=mutant.target,
        expected=mutant.expected_labels(),
        scenarios=list(mutant.scenarios),
        status=status,
        caught_by=list(dict.fromkeys(_label(c) for c in hits)),
        also_failing=list(dict.fromkeys(_label(c) for c in others)),
        seconds=seconds,
        message=message,
    )


def _gate_env(mutant: str, threads: int) -> dict[str, str]:
    # planted_bugs is not installed: the workers find it through the checkout this package lives in.
    checkout = str(Path(__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH", "")) if p)
    return {"PTYCHO_MUTANT": mutant, "PTYCHO_THREADS": str(threads), "PYTHONPATH": pythonpath}


@dataclass
class GateRun:
    """One finished gate: its result, or why the harness produced none."""

    result: GateResult | None
    seconds: float
    error: str | None = None


def run_gate_once(
    mutant: str, scenarios: Sequence[str], run_dir: Path, *, threads: int, timeout_s: float,
    gate: GateFn | None = None,
) -> GateRun:
    """Run the real gate on ``scenarios`` in ``run_dir`` with ``PTYCHO_MUTANT=mutant`` (``""``: clean code)."""
    if gate is None:
        from conformance.runner import run_gate as gate
    prefix = f"PTYCHO_MUTANT={mutant} " if mutant else ""
    t0 = time.monotonic()
    try:
        result = gate(
            list(scenarios), run_dir=run_dir, report_dir=None, env=_gate_env(mutant, threads), timeout_s=timeout_s,
            jobs=GATE_JOBS, progress=False,
            command=prefix + "python -m conformance run " + " ".join(f"--scenario {s}" for s in scenarios),
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a harness crash is a row of the table, not the end of the run
        return GateRun(None, time.monotonic() - t0, f"{type(exc).__name__}: {exc}")
    return GateRun(result, time.monotonic() - t0)


def gate_scenarios(mutant: Mutant, *, quick: bool = False) -> list[str]:
    """The scenarios a mutant is judged on: every one of DEFAULT_GATE (``quick``: only ``mutant.scenarios``,
    the ones that exercise it, for iterating on a mutant; never for the kill table of record)."""
    from conformance.scenarios import DEFAULT_GATE

    return list(mutant.scenarios) if quick else list(DEFAULT_GATE)


def run_mutant(
    mutant: Mutant, run_root: Path, *, threads: int, timeout_s: float, gate: GateFn | None = None,
    quick: bool = False,
) -> GateRun:
    """The full default gate (``quick``: ``mutant.scenarios``) with the mutant active, in ``run_root/<name>``."""
    return run_gate_once(mutant.name, gate_scenarios(mutant, quick=quick), run_root / mutant.name, threads=threads,
                         timeout_s=timeout_s, gate=gate)


def kill_row(mutant: Mutant, run: GateRun, baseline: Collection[str] = ()) -> KillRow:
    """The table row of a finished :func:`run_mutant` (``crashed`` when the gate itself raised)."""
    if run.result is None:
        return KillRow(mutant.name, mutant.backend, mutant.bug_class, mutant.target,
                       mutant.expected_labels(), list(mutant.scenarios), "crashed", seconds=run.seconds,
                       message=run.error or "")
    row = diagnose(mutant, run.result, run.seconds, baseline)
    row.scenarios = list(run.result.scenarios)
    return row


@dataclass
class CleanRun:
    """The clean gate run twice on the same scenarios."""

    scenarios: list[str]
    ok: list[bool]
    seconds: list[float]
    identical: bool
    failing: list[str]
    differences: list[str]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(self.ok) and self.identical


def clean_result(scenarios: Sequence[str], runs: Sequence[GateRun]) -> CleanRun:
    """Compare two clean gates: both must pass, with identical verdict signatures."""
    from conformance.runner import verdict_signature

    seconds = [r.seconds for r in runs]
    errors = [r.error for r in runs if r.result is None]
    if errors:
        return CleanRun(list(scenarios), [r.result is not None and bool(r.result.ok) for r in runs], seconds, False,
                        [], [], "; ".join(e or "" for e in errors))
    r1, r2 = (r.result for r in runs)
    sig1, sig2 = verdict_signature(r1.verdicts), verdict_signature(r2.verdicts)
    differences = [f"run 1 {a} != run 2 {b}" for a, b in zip(sig1, sig2, strict=False) if a != b]
    if len(sig1) != len(sig2):
        differences.append(f"run 1 has {len(sig1)} verdicts, run 2 has {len(sig2)}")
    failing = list(dict.fromkeys(_label(c) for r in (r1, r2) for c in failing_checks(r.verdicts)))
    return CleanRun(list(scenarios), [bool(r1.ok), bool(r2.ok)], seconds, not differences, failing, differences)


# --------------------------------------------------------------------------- reports


def _cell(items: Sequence[str], limit: int = _LISTED) -> str:
    if not items:
        return "—"
    text = "<br>".join(f"`{i}`" for i in items[:limit])
    return text + (f"<br>… +{len(items) - limit}" if len(items) > limit else "")


def markdown(rows: Sequence[KillRow], clean: CleanRun | None, seconds: float, ok: bool) -> str:
    """The kill table and the clean-run result as GitHub Markdown."""
    killed = sum(r.killed for r in rows)
    lines = [
        "# Mutant kill table",
        "",
        f"**{'PASS' if ok else 'FAIL'}**: {killed}/{len(rows)} mutants caught by an expected check; "
        f"total {seconds:.0f} s.",
        "",
        "| mutant | backend | bug class | expected check | caught? | by | also failing | s |",
        "|---|---|---|---|---|---|---|---:|",
    ]
    for r in rows:
        mark = _MARKS.get(r.status, "💥 crashed")
        lines.append(
            f"| `{r.mutant}` | {r.backend} | {r.bug_class} | {_cell(r.expected, 4)} | {mark} | {_cell(r.caught_by)} "
            f"| {len(r.also_failing)} | {r.seconds:.0f} |"
        )
    lines.append("")
    if clean is not None:
        verdict = "identical" if clean.identical else "DIFFERENT"
        lines += [
            "## Clean gate, twice",
            "",
            f"Scenarios: {', '.join(f'`{s}`' for s in clean.scenarios)}; runs ok: {clean.ok}; "
            f"verdicts {verdict}; {' + '.join(f'{s:.0f}' for s in clean.seconds)} s.",
        ]
        if clean.error:
            lines.append(f"\nThe clean gate crashed: `{clean.error}`")
        lines += [f"- failing: `{f}`" for f in clean.failing[:20]]
        lines += [f"- differs: `{d}`" for d in clean.differences[:20]]
        lines.append("")
    lines += ["## Details", ""]
    for r in rows:
        lines += [
            f"<details><summary><code>{r.mutant}</code>: {r.status}</summary>",
            "",
            f"- patched: `{r.target}` ({r.backend}); judged on {len(r.scenarios)} scenarios",
            f"- {r.message}",
            "- rerun: `PTYCHO_MUTANT=" + r.mutant + " python -m conformance run"
            + "".join(f" --scenario {s}" for s in r.scenarios if len(r.scenarios) < _FULL_GATE_LISTED) + "`",
        ]
        lines += [f"- expected hit: `{c}`" for c in r.caught_by]
        lines += [f"- also failing: `{c}`" for c in r.also_failing]
        lines += ["", "</details>", ""]
    return "\n".join(lines)


def _print_table(rows: Sequence[KillRow], clean: CleanRun | None, out: Any = sys.stdout) -> None:
    w = max([len(r.mutant) for r in rows] + [6])
    print(f"{'mutant':<{w}}  {'backend':<10}  {'status':<11}  {'s':>5}  caught by", file=out)
    for r in rows:
        print(f"{r.mutant:<{w}}  {r.backend:<10}  {r.status:<11}  {r.seconds:5.0f}  "
              f"{r.caught_by[0] if r.caught_by else r.message}", file=out)
    if clean is not None:
        print(f"clean gate x2 on {len(clean.scenarios)} scenarios: ok={clean.ok} identical={clean.identical} "
              f"({' + '.join(f'{s:.0f}' for s in clean.seconds)} s){' ' + clean.error if clean.error else ''}",
              file=out)


def write_reports(rows: Sequence[KillRow], clean: CleanRun | None, report_dir: Path, *, seconds: float, ok: bool,
                  started: str, jobs: int) -> dict[str, Path]:
    """``kill_table.md`` and ``kill_table.json`` under ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": report_dir / "kill_table.md", "json": report_dir / "kill_table.json"}
    paths["markdown"].write_text(markdown(rows, clean, seconds, ok), encoding="utf-8")
    doc = {
        "ok": ok,
        "started": started,
        "seconds": seconds,
        "jobs": jobs,
        "mutants": [{**asdict(r), "killed": r.killed} for r in rows],
        "clean": None if clean is None else {**asdict(clean), "passed": clean.passed},
    }
    paths["json"].write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return paths


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m planted_bugs",
        description="Run the conformance gate against every mutant (each must be caught by its expected check) "
        "and the clean gate twice (must pass with identical verdicts).",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(REGISTRY), help="run only these mutants")
    p.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                   help=f"gates run at once, each with its 3 worker processes (default {DEFAULT_JOBS})")
    p.add_argument("--timeout", type=float, default=600.0, help="per-worker timeout in seconds (default 600)")
    p.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR, help="where the kill table goes")
    p.add_argument("--run-root", type=Path, default=None,
                   help="keep the gates' run directories here (default: a temporary directory, removed)")
    p.add_argument("--skip-clean", action="store_true", help="do not run the clean gate twice (quick iteration)")
    p.add_argument("--quick", action="store_true",
                   help="judge each mutant on its own Mutant.scenarios only (iteration; the table of record "
                        "uses the full DEFAULT_GATE)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m planted_bugs``; returns the exit status (0 only if all pass)."""
    args = _parser().parse_args(argv)
    mutants = [REGISTRY[n] for n in (args.only or sorted(REGISTRY))]
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // (jobs * GATE_JOBS))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    run_root = args.run_root or Path(tempfile.mkdtemp(prefix="ptycho-mutants-"))
    run_root.mkdir(parents=True, exist_ok=True)
    scenarios = list(dict.fromkeys(s for m in mutants for s in gate_scenarios(m, quick=args.quick)))
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            clean_futures = [] if args.skip_clean else [
                pool.submit(run_gate_once, "", scenarios, run_root / f"clean-{i}", threads=threads,
                            timeout_s=args.timeout)
                for i in (1, 2)
            ]  # fmt: skip
            futures = [pool.submit(run_mutant, m, run_root, threads=threads, timeout_s=args.timeout, quick=args.quick)
                       for m in mutants]
            runs = []
            for m, fut in zip(mutants, futures, strict=True):
                run = fut.result()
                outcome = run.error or ("gate passed" if run.result.ok else "gate failed")
                print(f"[mutants] {m.name}: {outcome} ({run.seconds:.0f} s)", file=sys.stderr, flush=True)
                runs.append(run)
            clean = clean_result(scenarios, [f.result() for f in clean_futures]) if clean_futures else None
    finally:
        if args.run_root is None:
            shutil.rmtree(run_root, ignore_errors=True)
    baseline = set(clean.failing) if clean is not None else set()
    rows = [kill_row(m, run, baseline) for m, run in zip(mutants, runs, strict=True)]
    seconds = time.monotonic() - t0
    ok = all(r.killed for r in rows) and (clean is None or clean.passed)
    _print_table(rows, clean)
    paths = write_reports(rows, clean, args.report_dir, seconds=seconds, ok=ok, started=started, jobs=jobs)
    print(f"kill table: {paths['markdown']} ({seconds:.0f} s total)")
    return 0 if ok else 1

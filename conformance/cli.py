"""``python -m conformance``: run the gate, list scenarios, re-judge records, measure spreads.

::

    python -m conformance run [--scenario ID ...] [--stage S ...] [--report-dir reports/parity]
                              [--run-dir DIR] [--keep] [--repeat N] [--jobs 3] [--timeout 600] [--quiet]
    python -m conformance list [--all]
    python -m conformance judge --run-dir DIR [--scenario ID ...] [--stage S ...] [--report-dir DIR]
    python -m conformance spread --run-dir DIR [--scenario ID ...] [--stage S ...]
                                 [--write conformance/spreads.json [--merge]]

``run`` exits 1 when any verdict is ``fail``, ``error`` or ``xpass`` (or, with
``--repeat``, when two runs disagree), 0 when the gate is clean, 2 on a usage error.
``judge`` re-judges the records of an earlier run (made anywhere, by any version of the
code) with this checkout's tolerances.  ``spread`` prints the worst disagreement per
stage and tensor of a run: the measurement behind every stage tolerance; ``--write`` stores the
per-scenario table (``conformance/spreads.json``) each tensor's tolerance is derived from.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.verdicts import GateResult

if TYPE_CHECKING:
    from conformance.scenarios import Scenario

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_DIVERGENCE, EXIT_USAGE = 0, 1, 2
DEFAULT_REPORT_DIR = Path("reports/parity")
#: Longest verdict message printed to the terminal (the reports hold every check in full).
_MESSAGE_CHARS = 500


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m conformance``."""
    from conformance.compare import STAGES

    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def selection(p: argparse.ArgumentParser) -> None:
        p.add_argument("--scenario", action="append", default=[], metavar="ID",
                       help="scenario id (repeatable); default: every scenario of DEFAULT_GATE")
        p.add_argument("--stage", action="append", default=[], choices=STAGES, metavar="STAGE",
                       help=f"stage to judge (repeatable); default: all of {', '.join(STAGES)}")

    run = sub.add_parser("run", help="run the scenarios through both backends and judge them")
    selection(run)
    run.add_argument("--report-dir", type=Path, default=DEFAULT_REPORT_DIR, help="where the reports go")
    run.add_argument("--no-report", action="store_true", help="write no reports")
    run.add_argument("--run-dir", type=Path, help="keep inputs, records and worker logs here (default: a temp dir)")
    run.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    run.add_argument("--repeat", type=int, default=1, metavar="N", help="run N times; require identical verdicts")
    run.add_argument("--jobs", type=int, default=3, help="worker processes at once (default 3)")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds per worker process (default 600)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    lst = sub.add_parser("list", help="list the scenarios of the default gate")
    lst.add_argument("--all", action="store_true", help="list every registered scenario")

    jdg = sub.add_parser("judge", help="judge the records of an earlier run again")
    selection(jdg)
    jdg.add_argument("--run-dir", type=Path, required=True)
    jdg.add_argument("--report-dir", type=Path, help="write reports here")

    spr = sub.add_parser("spread", help="print the worst disagreement per stage and tensor of a run")
    selection(spr)
    spr.add_argument("--run-dir", type=Path, required=True)
    spr.add_argument("--write", type=Path, metavar="JSON",
                     help="also write the per-scenario spread table the tolerances derive from "
                          "(conformance/spreads.json; needs every DEFAULT_GATE scenario and stage)")
    spr.add_argument("--merge", action="store_true",
                     help="with --write: keep the worse of this run and the table already there, entry by entry "
                          "(a clean run on another machine widens the table; it never narrows it)")
    return parser


def _print_summary(result: GateResult, out: Path | None) -> None:
    counts = ", ".join(f"{n} {status}" for status, n in result.counts().items() if n)
    verdict = "CLEAN" if result.ok else "DIVERGENCE"
    print(f"conformance gate: {verdict} - {len(result.scenarios)} scenarios x {len(result.stages)} stages: {counts} "
          f"({result.seconds:.1f} s)")
    for v in result.verdicts:
        if v.failing:
            message = v.message if len(v.message) <= _MESSAGE_CHARS else v.message[:_MESSAGE_CHARS] + " ... (report)"
            print(f"  {v.status.upper():5} {v.scenario} / {v.stage}: {message}")
            print(f"        rerun: {v.repro}")
    if out is not None:
        print(f"reports: {out}")


def _cmd_list(args: argparse.Namespace) -> int:
    from conformance.scenarios import DEFAULT_GATE, REGISTRY

    ids = list(REGISTRY) if args.all else list(DEFAULT_GATE)
    width = max(len(i) for i in ids)
    for sid in ids:
        sc = REGISTRY[sid]
        marker = "" if sid in DEFAULT_GATE else " (not in DEFAULT_GATE)"
        print(f"{sid:<{width}}  {','.join(sc.stages)}  {sc.description}{marker}")
    print(f"{len(ids)} scenarios")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from conformance.runner import run_gate, verdict_signature

    if args.repeat < 1:
        print("--repeat must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    command = "python -m conformance " + shlex.join(argv)
    report_dir = None if args.no_report else args.report_dir
    signatures: list[list] = []
    exit_code = EXIT_OK
    for i in range(args.repeat):
        last = i == args.repeat - 1
        if args.run_dir is not None:
            run_dir = args.run_dir if args.repeat == 1 else args.run_dir / f"run{i + 1}"
        else:
            run_dir = Path(tempfile.mkdtemp(prefix="ptycho-parity-"))
        try:
            result = run_gate(args.scenario or None, args.stage or None, run_dir=run_dir,
                              report_dir=report_dir if last else None, timeout_s=args.timeout, jobs=args.jobs,
                              progress=not args.quiet, command=command)
        finally:
            if args.run_dir is None and not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
        _print_summary(result, report_dir if last else None)
        if args.keep or args.run_dir is not None:
            print(f"records: {run_dir}")
        if not result.ok:
            exit_code = EXIT_DIVERGENCE
        signatures.append(verdict_signature(result.verdicts))
    if args.repeat > 1:
        first = signatures[0]
        differing = [
            f"{a[0]} / {a[1]}: run 1 {a[2]}, run {n + 1} {b[2]}" + ("" if a[2] != b[2] else " (checks differ)")
            for n, sig in enumerate(signatures[1:], start=1)
            for a, b in zip(first, sig, strict=True)
            if a != b
        ]
        if differing:
            print(f"NON-DETERMINISTIC: {len(differing)} verdicts differ between runs:")
            for line in differing:
                print(f"  {line}")
            exit_code = EXIT_DIVERGENCE
        else:
            print(f"repeat: all {args.repeat} runs gave identical verdicts ({len(first)} verdicts)")
    return exit_code


def _load_scenarios(run_dir: Path, ids: Sequence[str]) -> list[Scenario]:
    """The scenarios of an earlier run, from the ``scenario.json`` its runner wrote (registry order first)."""
    from conformance.scenarios import REGISTRY, Scenario

    dirs = [run_dir / sid for sid in ids] if ids else [p.parent for p in run_dir.glob("*/scenario.json")]
    missing = [str(d) for d in dirs if not (d / "scenario.json").exists()]
    if missing or not dirs:
        raise ValueError(f"no scenario.json in {missing or run_dir}")
    order = {sid: i for i, sid in enumerate(REGISTRY)}
    dirs.sort(key=lambda d: (order.get(d.name, len(order)), d.name))
    return [Scenario.from_json((d / "scenario.json").read_text()) for d in dirs]


def _cmd_judge(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from conformance.compare import STAGES
    from conformance.runner import judge_records

    scenarios = _load_scenarios(args.run_dir, args.scenario)
    stages = [s for s in STAGES if not args.stage or s in args.stage]
    result = judge_records(args.run_dir, scenarios, stages, report_dir=args.report_dir,
                           command="python -m conformance " + shlex.join(argv))
    _print_summary(result, args.report_dir)
    return EXIT_OK if result.ok else EXIT_DIVERGENCE


def _cmd_spread(args: argparse.Namespace) -> int:
    from conformance.compare import measure_spread
    from conformance.tolerances import STAGE_TOLERANCES, resolve_tolerance

    scenarios = _load_scenarios(args.run_dir, args.scenario)
    if args.merge and args.write is None:
        raise ValueError("--merge widens the table --write names: give --write conformance/spreads.json")
    if args.write is not None:
        _write_spreads(args, scenarios)
    rows = measure_spread(args.run_dir, scenarios, args.stage or None)
    print(f"{'stage':<14} {'tensor':<52} {'n':>4} {'max abs':>9} {'scaled':>9} {'max rel':>9} {'outside':>8} "
          f"{'atol':>8} {'margin':>8}  worst at")
    by_entry: dict[str, list] = {}
    for r in rows:
        tol = resolve_tolerance(r.stage, r.tensor, ("float32",))
        measured = r.worst_scaled if tol.scale_atol else r.worst_abs
        margin = f"{tol.atol / measured:8.3g}" if measured > 0 else "     inf"
        print(f"{r.stage:<14} {r.tensor:<52} {r.n:>4} {r.worst_abs:>9.3g} {r.worst_scaled:>9.3g} {r.worst_rel:>9.3g} "
              f"{r.worst_fraction:>8.2g} {tol.atol:>8.3g} {margin}  {r.where}")
        entry = next((e for e in STAGE_TOLERANCES if e.matches(r.stage, r.tensor)), None)
        key = f"{entry.stage} {entry.tensor_glob}" if entry else f"{r.stage} (dtype default)"
        by_entry.setdefault(key, []).append((measured, r.worst_fraction, entry, r))
    print("\nper tolerance entry (measured = the worst over its tensors; 'stale' = worse than the table's value):")
    for key, items in by_entry.items():
        measured, fraction, entry, row = max(items, key=lambda t: t[0])
        fraction = max(t[1] for t in items)
        stale = entry is not None and (measured > entry.measured * 1.01 or fraction > entry.measured_fraction * 1.01)
        print(f"  {key:<50} measured {measured:9.3g} (table {entry.measured if entry else '-':>9}) "
              f"outside {fraction:6.3g}  {row.tensor} @ {row.where}{'  STALE' if stale else ''}")
    return EXIT_OK


def _write_spreads(args: argparse.Namespace, scenarios: Sequence[Scenario]) -> None:
    """``spread --write``: the per-scenario table of a complete clean run of DEFAULT_GATE."""
    from conformance.compare import measure_scenario_spreads
    from conformance.runner import record_versions
    from conformance.scenarios import DEFAULT_GATE
    from conformance.spreads import load_spreads, machine, merge_tables, write_spreads

    ids = [sc.id for sc in scenarios]
    if args.scenario or args.stage or sorted(ids) != sorted(DEFAULT_GATE):
        raise ValueError("--write measures the whole DEFAULT_GATE: run without --scenario/--stage on a run of it")
    table: Any = measure_scenario_spreads(args.run_dir, scenarios)
    versions = record_versions(args.run_dir, ids)
    machines = [machine()]
    command = f"python -m conformance spread --run-dir RUN --write {args.write}"
    if args.merge:
        old = load_spreads.__wrapped__(args.write)
        if old["measured"].get("versions", versions) != versions:
            raise ValueError(f"--merge: {args.write} was measured with {old['measured']['versions']}, this run with "
                             f"{versions}; re-measure instead of merging across library versions")
        table = merge_tables(old["spreads"], table)
        before = old["measured"].get("machines") or ["the machine of the earlier measurement (not recorded)"]
        machines = list(dict.fromkeys([*before, *machines]))
        command += " --merge (one clean run per machine)"
    path = write_spreads(args.write, table, command=command, versions=versions, scenarios=ids, machines=machines)
    print(f"spread table: {path} ({sum(len(t) for st in table.values() for t in st.values())} tensors)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return _cmd_list(args)
        if args.command == "run":
            return _cmd_run(args, argv)
        if args.command == "judge":
            return _cmd_judge(args, argv)
        return _cmd_spread(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

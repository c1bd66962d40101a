"""The runner's process handling (fake workers: no tensorflow, no torch) and the CLI's exit codes."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import conformance.runner as runner
from conformance import cli
from conformance.compare import crash_path, judge
from conformance.runner import WorkerTask, plan_tasks, prepare_run_dir, run_workers, verdict_signature, worker_env
from conformance.verdicts import Comparison, GateResult, Verdict

# A stand-in for `python -m conformance.worker`: argv = side phase run_dir ids.  Scenario ids steer it:
# "crash*" prints 60 lines to stderr and exits 3, "hang*" sleeps, anything else writes a record whose
# forward stage holds the same array on every side and whose values show the worker's environment.
FAKE_WORKER = r'''
import json, os, sys, time
import numpy as np
side, phase, run, ids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
for sid in ids:
    if sid.startswith("crash"):
        for i in range(60):
            print(f"stderr line {i} of {sid}", file=sys.stderr)
        print(f"Fatal: simulated crash in {sid}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)
    if sid.startswith("hang"):
        time.sleep(60)
    out = os.path.join(run, sid, side)
    os.makedirs(out, exist_ok=True)
    env = {k: os.environ.get(k) for k in ("PTYCHO_THREADS", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                          "PTYCHO_MUTANT")}
    stages = {}
    arrays = {}
    if phase == "produce":
        stages["forward"] = {"status": "ok", "seconds": 0.1, "error": None, "arrays": ["forward/x"], "values": env}
        arrays["forward/x"] = np.arange(6, dtype=np.float32)
    doc = {"schema": "ptychopinn.conformance.record/1", "scenario": sid, "backend": side, "phase": phase,
           "mutant": env["PTYCHO_MUTANT"], "versions": {"fake_" + side: "1.0"}, "device": "cpu", "stages": stages,
           "params_cfg": {}, "bundle_layout": None}
    np.savez(os.path.join(out, phase + ".npz"), **arrays)
    with open(os.path.join(out, phase + ".json"), "w") as f:
        json.dump(doc, f)
'''


@pytest.fixture
def fake_worker(tmp_path: Path):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)

    def command(side, phase, run_dir, ids):
        return [sys.executable, str(script), side, phase, str(run_dir), ",".join(ids)]

    return command


@dataclass
class FakeScenario:
    id: str
    stages: tuple[str, ...] = ("forward",)
    tolerance_overrides: tuple = ()
    expected_failures: tuple = ()


def _values(run: Path, sid: str, side: str) -> dict:
    return json.loads((run / sid / side / "produce.json").read_text())["stages"]["forward"]["values"]


def test_a_crash_costs_only_the_crashing_scenario(tmp_path, fake_worker):
    run = prepare_run_dir(tmp_path / "run")
    ids = ["ok1", "crash1", "ok2"]
    run_workers(run, [WorkerTask("tensorflow", "produce", tuple(ids))], env=worker_env({}, 1), timeout_s=60, jobs=2,
                command=fake_worker)
    assert (run / "ok1" / "tensorflow" / "produce.json").exists()
    assert (run / "ok2" / "tensorflow" / "produce.json").exists()  # re-run alone after the batch died
    assert sorted(p.name for p in (run / "logs").iterdir()) == [
        "produce-tensorflow-crash1.log", "produce-tensorflow-ok1+2.log", "produce-tensorflow-ok2.log"]
    info = json.loads(crash_path(run, "crash1", "tensorflow", "produce").read_text())
    assert info["reason"] == "exited with code 3 without writing the record" and not info["timed_out"]
    lines = info["stderr_tail"].splitlines()
    assert len(lines) == 40 and lines[-1] == "Fatal: simulated crash in crash1"


def test_a_hanging_worker_is_killed_at_its_timeout(tmp_path, fake_worker):
    run = prepare_run_dir(tmp_path / "run")
    run_workers(run, [WorkerTask("pytorch", "produce", ("hang1",))], env=worker_env({}, 1), timeout_s=1, jobs=1,
                command=fake_worker)
    info = json.loads(crash_path(run, "hang1", "pytorch", "produce").read_text())
    assert info["timed_out"] and info["reason"] == "timed out after 1 s (killed)"


def test_crash_becomes_error_verdicts_with_the_stderr_tail(tmp_path, fake_worker):
    run = prepare_run_dir(tmp_path / "run")
    ids = ["ok1", "crash1"]
    tasks = plan_tasks([FakeScenario(i) for i in ids], shards=2)
    run_workers(run, tasks, env=worker_env({}, 3), timeout_s=60, jobs=3, command=fake_worker)
    verdicts = {(v.scenario, v.stage): v for v in judge(run, [FakeScenario(i) for i in ids], ["forward"])}
    assert verdicts[("ok1", "forward")].status == "pass"
    bad = verdicts[("crash1", "forward")]
    assert bad.status == "error"
    assert "tensorflow produce worker: exited with code 3" in bad.message
    assert "Fatal: simulated crash in crash1" in bad.stderr_tail


def test_worker_environment_sets_one_thread_count_and_passes_the_mutant_through(tmp_path, fake_worker, monkeypatch):
    monkeypatch.delenv("PTYCHO_THREADS", raising=False)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 2)
    env = worker_env({"PTYCHO_MUTANT": "xy_swap", "OMP_NUM_THREADS": "16"}, jobs=3)
    assert {env[v] for v in runner.THREAD_VARIABLES} == {"1"}
    assert env["PTYCHO_MUTANT"] == "xy_swap"
    run = prepare_run_dir(tmp_path / "run")
    run_workers(run, [WorkerTask("reference", "produce", ("ok1",))], env=env, timeout_s=60, jobs=1,
                command=fake_worker)
    values = _values(run, "ok1", "reference")
    assert values == {"PTYCHO_THREADS": "1", "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                      "PTYCHO_MUTANT": "xy_swap"}
    assert worker_env({"PTYCHO_THREADS": "4"}, jobs=3)["OMP_NUM_THREADS"] == "4"  # an explicit choice wins


def test_run_dir_is_cleared_only_when_a_previous_run_marked_it(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    (run / "stale.json").write_text("{}")
    prepare_run_dir(run)
    assert not (run / "stale.json").exists()
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("...")
    with pytest.raises(ValueError, match="not empty"):
        prepare_run_dir(other)
    assert (other / "thesis.tex").exists()


def test_run_gate_end_to_end_with_a_fake_worker(tmp_path, fake_worker, monkeypatch):
    import conformance.inputs
    import conformance.scenarios

    registry = {sid: FakeScenario(sid) for sid in ("ok1", "crash1")}
    monkeypatch.setattr(conformance.scenarios, "REGISTRY", registry)
    monkeypatch.setattr(conformance.scenarios, "DEFAULT_GATE", tuple(registry))
    written = []
    monkeypatch.setattr(conformance.inputs, "write_inputs", lambda sc, d: written.append((sc.id, Path(d))))
    reports = []
    monkeypatch.setattr("conformance.report.write_reports", lambda result, d: reports.append((result, d)) or {})
    result = runner.run_gate(run_dir=tmp_path / "run", report_dir=tmp_path / "reports", env={"PTYCHO_MUTANT": "m1"},
                             timeout_s=60, progress=False, worker_command=fake_worker, stages=["forward", "losses"])
    assert written == [("ok1", tmp_path / "run" / "ok1"), ("crash1", tmp_path / "run" / "crash1")]
    assert result.scenarios == ["ok1", "crash1"] and result.stages == ["forward", "losses"]
    status = {(v.scenario, v.stage): v.status for v in result.verdicts}
    assert status == {("ok1", "forward"): "pass", ("ok1", "losses"): "not_run",
                      ("crash1", "forward"): "error", ("crash1", "losses"): "not_run"}
    assert not result.ok and result.mutant == "m1"
    assert result.versions["fake_tensorflow"] == "1.0" and "numpy" in result.versions
    assert reports and reports[0][1] == tmp_path / "reports"
    with pytest.raises(ValueError, match="unknown scenarios"):
        runner.run_gate(["nope"], run_dir=tmp_path / "run2", report_dir=None, progress=False)


# --------------------------------------------------------------------------- CLI exit codes


def _result(status: str, max_abs: float = 0.0) -> GateResult:
    check = Comparison("forward/amp", "tensorflow~pytorch", status == "pass", 1e-6, 1e-5, max_abs, 0.0,
                       0 if status == "pass" else 1, 4, [], [4], "float32", None, "m", np.zeros((2, 2)))
    v = Verdict("s1", "forward", status, [check], "msg", 0.1, "python -m conformance run --scenario s1 --stage forward")
    return GateResult([v], ["s1"], ["forward"], 1.0, "2026-01-01T00:00:00+00:00", "cmd", None, {})


@pytest.fixture
def fake_gate(monkeypatch):
    calls: list[dict] = []
    outcomes: list[GateResult] = []

    def run_gate(scenario_ids=None, stages=None, **kw):
        calls.append({"scenario_ids": scenario_ids, "stages": stages, **kw})
        return outcomes[len(calls) - 1]

    monkeypatch.setattr(runner, "run_gate", run_gate)
    return calls, outcomes


@pytest.mark.parametrize(("status", "code"), [("pass", 0), ("xfail", 0), ("fail", 1), ("error", 1), ("xpass", 1)])
def test_run_exit_code_reflects_the_verdicts(fake_gate, status, code, capsys):
    calls, outcomes = fake_gate
    outcomes.append(_result(status))
    assert cli.main(["run", "--scenario", "s1", "--stage", "forward", "--no-report", "--quiet"]) == code
    assert calls[0]["scenario_ids"] == ["s1"] and calls[0]["stages"] == ["forward"]
    assert calls[0]["report_dir"] is None and calls[0]["progress"] is False
    out = capsys.readouterr().out
    assert ("CLEAN" if code == 0 else "DIVERGENCE") in out
    if code:
        assert "rerun: python -m conformance run --scenario s1 --stage forward" in out


def test_repeat_requires_identical_verdicts(fake_gate, capsys):
    calls, outcomes = fake_gate
    outcomes += [_result("pass"), _result("pass", max_abs=1e-9)]  # same verdicts, different numbers
    assert cli.main(["run", "--repeat", "2", "--no-report", "--quiet"]) == 0
    assert "identical verdicts" in capsys.readouterr().out
    outcomes += [_result("pass"), _result("fail")]
    assert cli.main(["run", "--repeat", "2", "--no-report", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "NON-DETERMINISTIC" in out and "s1 / forward: run 1 pass, run 2 fail" in out


def test_reports_only_for_the_last_repeat(fake_gate, tmp_path):
    calls, outcomes = fake_gate
    outcomes += [_result("pass"), _result("pass")]
    cli.main(["run", "--repeat", "2", "--report-dir", str(tmp_path / "r"), "--quiet"])
    assert [c["report_dir"] for c in calls] == [None, tmp_path / "r"]


def test_usage_errors_exit_2(fake_gate, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--stage", "no_such_stage"])
    assert exc.value.code == 2
    assert cli.main(["run", "--repeat", "0", "--no-report"]) == 2


def test_value_error_from_the_runner_exits_2(monkeypatch, capsys):
    def boom(*a, **k):
        raise ValueError("unknown scenarios ['x']")

    monkeypatch.setattr(runner, "run_gate", boom)
    assert cli.main(["run", "--scenario", "x", "--no-report", "--quiet"]) == 2
    assert "unknown scenarios" in capsys.readouterr().err


def test_verdict_signature_ignores_numbers_but_not_outcomes():
    assert verdict_signature(_result("pass").verdicts) == verdict_signature(_result("pass", 1.0).verdicts)
    assert verdict_signature(_result("pass").verdicts) != verdict_signature(_result("fail").verdicts)


def test_plan_splits_each_side_into_balanced_shards_and_lists_produce_first():
    scenarios = [FakeScenario("e2e", stages=("e2e",))] + [FakeScenario(f"s{i}") for i in range(6)]
    tasks = plan_tasks(scenarios, shards=2)
    assert len(tasks) == 2 * 3 * 2  # phases x sides x shards
    assert [t.phase for t in tasks] == ["produce"] * 6 + ["consume"] * 6
    assert tasks[0].side == "tensorflow"  # the longest task first
    tf_shards = [set(t.scenarios) for t in tasks if t.side == "tensorflow" and t.phase == "produce"]
    assert tf_shards[0] | tf_shards[1] == {s.id for s in scenarios} and not tf_shards[0] & tf_shards[1]
    assert {"e2e"} in [s & {"e2e"} for s in tf_shards]
    assert plan_tasks(scenarios[:1], shards=4) == [WorkerTask(side, phase, ("e2e",)) for phase in ("produce",
                                                   "consume") for side in ("tensorflow", "pytorch", "reference")]


def test_consume_waits_for_every_sides_produce_of_its_scenarios(tmp_path, fake_worker):
    run = prepare_run_dir(tmp_path / "run")
    order = []

    def logging_command(side, phase, run_dir, ids):
        if phase == "consume":  # every side's produce record of these scenarios exists already
            order.append(all((run_dir / sid / s / "produce.json").exists()
                             for sid in ids for s in ("tensorflow", "pytorch", "reference")))
        return fake_worker(side, phase, run_dir, ids)

    tasks = plan_tasks([FakeScenario(f"ok{i}") for i in range(4)], shards=2)
    run_workers(run, tasks, env=worker_env({}, 3), timeout_s=60, jobs=3, command=logging_command)
    assert order == [True] * 6


def test_judge_and_spread_need_the_scenarios_of_a_run(tmp_path, capsys):
    assert cli.main(["judge", "--run-dir", str(tmp_path)]) == 2
    assert cli.main(["spread", "--run-dir", str(tmp_path)]) == 2
    assert "no scenario.json" in capsys.readouterr().err


def test_list_prints_the_default_gate(capsys):
    from conformance.scenarios import DEFAULT_GATE

    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"{len(DEFAULT_GATE)} scenarios" in out and all(sid in out for sid in DEFAULT_GATE)

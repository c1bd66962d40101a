"""conformance.report: parity.json (schema-valid), summary.md, junit.xml, repro pages and heatmaps."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.report import MAX_HEATMAPS, REPORT_SCHEMA, STATUS_SYMBOLS, SUMMARY_LIMIT_BYTES, write_reports
from conformance.tolerances import compare_arrays
from conformance.verdicts import Comparison, GateResult, Verdict

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "specs" / "parity-report.schema.json"
STAGES = [
    "configure", "physics_ops", "forward", "losses", "gradients", "train_k_steps",
    "save_load", "transplant", "params_cfg", "bundle_layout", "e2e",
]  # fmt: skip
F32 = (1.3e-6, 1e-5)


# ------------------------------------------------------------------------------------------------ a tiny validator
# jsonschema is not a test dependency; this implements exactly the draft 2020-12 keywords the schema uses and
# refuses any other, so it can never silently ignore part of the schema.

_ANNOTATIONS = {"$schema", "$id", "title", "description"}
_TYPES = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": lambda x: isinstance(x, int | float) and not isinstance(x, bool),
}


def validate(instance: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, path: str = "$") -> list[str]:
    """Errors of ``instance`` against ``schema`` (empty when valid)."""
    root = schema if root is None else root
    unknown = set(schema) - _ANNOTATIONS - {
        "$ref", "$defs", "type", "enum", "const", "properties", "required", "additionalProperties",
        "items", "minimum", "minLength", "pattern",
    }  # fmt: skip
    if unknown:
        raise NotImplementedError(f"validator does not implement {sorted(unknown)} (at {path})")
    errors: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        errors += validate(instance, root["$defs"][ref.removeprefix("#/$defs/")], root, path)
    if "type" in schema:
        types = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not any(_TYPES[t](instance) for t in types):
            return errors + [f"{path}: {instance!r:.60} is not of type {types}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: {instance!r} != {schema['const']!r}")
    if isinstance(instance, str):
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: {instance!r} does not match {schema['pattern']!r}")
    if _TYPES["number"](instance) and "minimum" in schema and instance < schema["minimum"]:
        errors.append(f"{path}: {instance} < {schema['minimum']}")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errors += validate(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        errors += [f"{path}: missing {key!r}" for key in schema.get("required", []) if key not in instance]
        for key, value in instance.items():
            if key in props:
                errors += validate(value, props[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(value, schema["additionalProperties"], root, f"{path}.{key}")
    return errors


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


# ------------------------------------------------------------------------------------------------ synthetic results


def repro(sid: str, stage: str, mutant: str | None = None) -> str:
    prefix = f"PTYCHO_MUTANT={mutant} " if mutant else ""
    return f"{prefix}python -m conformance run --scenario {sid} --stage {stage}"


def passing_checks(sid: str, stage: str, rng: np.random.Generator) -> list[Comparison]:
    a = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
    b = a + np.float32(1e-7)
    ctx = f"{sid} / {stage} / "
    return [compare_arrays(f"{stage}/{name}", a, b, *F32, pair="tensorflow~pytorch", context=ctx)
            for name in ("x", "y")]


def make_verdict(sid: str, stage: str, status: str, rng: np.random.Generator, mutant: str | None = None,
                 pass_checks: bool = True) -> Verdict:
    """A realistic verdict of each status, with checks made by the judge's own comparison function."""
    ctx = f"{sid} / {stage} / "
    r = repro(sid, stage, mutant)
    if status == "pass":
        checks = passing_checks(sid, stage, rng) if pass_checks else []
        return Verdict(sid, stage, "pass", checks, "2 checks passed", 0.25, r)
    if status == "not_run":
        return Verdict(sid, stage, "not_run", [], f"scenario {sid} does not list stage {stage}", 0.0, r)
    if status == "fail":
        # an offset sign flip: the illuminated field lands a few pixels off in one backend
        truth = rng.standard_normal((4, 64, 64, 1)).astype(np.float32)
        moved = np.roll(truth, 3, axis=2)
        bad = compare_arrays("forward/pred_intensity", moved, truth, *F32, pair="pytorch~tensorflow", context=ctx)
        bad2 = compare_arrays("forward/obj_patches", moved * 0.5, truth * 0.5, *F32, pair="pytorch~reference",
                              context=ctx)
        ok = passing_checks(sid, stage, rng)
        text = "; ".join(c.message for c in (bad, bad2))
        return Verdict(sid, stage, "fail", [*ok, bad, bad2], text, 1.5, r)
    if status == "xfail":
        a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
        c = compare_arrays("train_k_steps/loss", a * 1.01, a, *F32, pair="tensorflow~pytorch", context=ctx)
        reason = "Adam epsilon placement differs (issue #12); measured 1e-2 relative"
        return Verdict(sid, stage, "xfail", [c], f"1 failing checks, all expected: {reason}", 0.75, r,
                       expected_failure=reason)
    if status == "xpass":
        reason = "legacy N^2 normalisation in PyTorch"
        msg = (f"strict expected failure forward/* [*] ('{reason}') matched no failing check: the bug is fixed or "
               "the entry is stale, remove it")
        return Verdict(sid, stage, "xpass", passing_checks(sid, stage, rng), msg, 0.5, r, expected_failure=reason)
    if status == "error":
        tail = "\n".join(
            ["Traceback (most recent call last):", '  File "conformance/worker.py", line 88, in main',
             "    run_stage(stage)", "\x1b[31mRuntimeError: shape mismatch ```[2, 64]``` vs [2, 32]\x1b[0m \x07"]
        )
        return Verdict(sid, stage, "error", [], f"{sid} / {stage}: pytorch produce crashed (exit 1)", 2.0, r,
                       stderr_tail=tail)
    raise ValueError(status)


def make_result(cells: dict[tuple[str, str], str], scenarios: list[str], stages: list[str] = STAGES,
                mutant: str | None = None, seconds: float = 192.4, started: str = "2026-11-23T10:00:00Z",
                pass_checks: bool = True) -> GateResult:
    rng = np.random.default_rng(0)
    verdicts = [make_verdict(sid, st, cells.get((sid, st), "pass"), rng, mutant, pass_checks)
                for sid in scenarios for st in stages]
    versions = {"python": "3.11.9", "numpy": "2.4.6", "tensorflow": "2.21.0", "torch": "2.13.0"}
    command = "python -m conformance run --report-dir reports/parity"
    return GateResult(verdicts, scenarios, stages, seconds, started, command, mutant, versions)


SCENARIOS = ["gs1_n64_pinn", "gs2_n64_off_centre", "gs3_n32_probe_big", "gs2_n128_nfs2"]
CELLS = {
    ("gs2_n64_off_centre", "forward"): "fail",
    ("gs1_n64_pinn", "train_k_steps"): "xfail",
    ("gs3_n32_probe_big", "save_load"): "error",
    ("gs2_n128_nfs2", "forward"): "xpass",
    ("gs1_n64_pinn", "e2e"): "not_run",
    ("gs3_n32_probe_big", "e2e"): "not_run",
    ("gs2_n128_nfs2", "e2e"): "not_run",
}


@pytest.fixture
def failing_result() -> GateResult:
    return make_result(CELLS, SCENARIOS)


# ------------------------------------------------------------------------------------------------ tests


def test_writes_every_output(tmp_path: Path, failing_result: GateResult) -> None:
    written = write_reports(failing_result, tmp_path / "reports" / "parity")
    base = tmp_path / "reports" / "parity"
    expected = {
        "parity.json", "summary.md", "junit.xml",
        "repro/gs2_n64_off_centre__forward.md", "repro/gs3_n32_probe_big__save_load.md",
        "repro/gs2_n128_nfs2__forward.md", "heatmaps/gs2_n64_off_centre__forward.png",
    }  # fmt: skip
    assert set(written) == expected
    assert all(p.is_file() and p == base / rel for rel, p in written.items())
    files = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()}
    assert files == expected  # no temporary files left behind


def test_parity_json_validates_against_schema(tmp_path: Path, failing_result: GateResult, schema: dict) -> None:
    write_reports(failing_result, tmp_path)
    doc = json.loads((tmp_path / "parity.json").read_text())
    assert validate(doc, schema) == []
    assert doc["schema"] == REPORT_SCHEMA and doc["ok"] is False
    assert doc["report"]["counts"] == failing_result.counts()
    assert [(f["scenario"], f["stage"], f["status"]) for f in doc["report"]["failures"]] == [
        ("gs2_n64_off_centre", "forward", "fail"),
        ("gs3_n32_probe_big", "save_load", "error"),
        ("gs2_n128_nfs2", "forward", "xpass"),
    ]
    fail = doc["report"]["failures"][0]
    assert fail["heatmap"] == "heatmaps/gs2_n64_off_centre__forward.png"
    assert (tmp_path / fail["heatmap"]).is_file() and (tmp_path / fail["repro"]).is_file()
    for entry in doc["report"]["failures"][1:]:
        assert entry["heatmap"] is None
    # a clean run validates too
    clean = tmp_path / "clean"
    write_reports(make_result({}, SCENARIOS[:2]), clean)
    assert validate(json.loads((clean / "parity.json").read_text()), schema) == []


def test_validator_is_not_vacuous(tmp_path: Path, failing_result: GateResult, schema: dict) -> None:
    write_reports(failing_result, tmp_path)
    doc = json.loads((tmp_path / "parity.json").read_text())
    broken = []
    for mutate in (
        lambda d: d["verdicts"][0].__setitem__("status", "passed"),
        lambda d: d.pop("ok"),
        lambda d: d["verdicts"][3]["checks"][0].__setitem__("n_total", -1),
        lambda d: d["verdicts"][0].__setitem__("extra", 1),
        lambda d: d["report"]["failures"][0].__setitem__("repro", "../x.md"),
        lambda d: d["verdicts"][0]["checks"][0].__setitem__("max_abs", "inf"),
        lambda d: d.__setitem__("ok", 1),
    ):
        bad = copy.deepcopy(doc)
        mutate(bad)
        broken.append(validate(bad, schema))
    assert all(broken), broken


def test_schema_with_jsonschema_if_installed(tmp_path: Path, failing_result: GateResult, schema: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    write_reports(failing_result, tmp_path)
    jsonschema.Draft202012Validator(schema).validate(json.loads((tmp_path / "parity.json").read_text()))


def test_summary_reads_as_a_review(tmp_path: Path, failing_result: GateResult) -> None:
    write_reports(failing_result, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "## ❌ Parity gate FAILED: 1 failed · 1 crashed / errored · 1 unexpectedly passed"
    assert lines[2] == (
        "**41 verdicts**, 4 scenarios × 11 stages, gate time 3 min 12 s: ✅ 37 passed · ❌ 1 failed · "
        "💥 1 crashed / errored · ⁉️ 1 unexpectedly passed · ⚠️ 1 expected failure · — 3 not run"
    )
    # the scenario x stage table: one row per scenario, one symbol per stage
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in md.splitlines() if line.startswith("| gs")}
    assert list(rows) == SCENARIOS
    assert rows["gs2_n64_off_centre"][STAGES.index("forward")] == STATUS_SYMBOLS["fail"]
    assert rows["gs1_n64_pinn"][STAGES.index("train_k_steps")] == STATUS_SYMBOLS["xfail"]
    assert rows["gs3_n32_probe_big"][STAGES.index("save_load")] == STATUS_SYMBOLS["error"]
    assert rows["gs2_n128_nfs2"][STAGES.index("forward")] == STATUS_SYMBOLS["xpass"]
    assert rows["gs1_n64_pinn"][STAGES.index("e2e")] == "—"
    assert rows["gs1_n64_pinn"][0] == "✅"
    failing_row = next(line for line in md.splitlines() if line.startswith("| **failing**"))
    assert failing_row.count("**2**") == 1  # forward fails in two scenarios
    # failures only, collapsed, with the rerun command, numbers and heatmap link
    assert md.count("<details>\n<summary>") == 3 and md.count("</details>") == 4  # + the expected-failures list
    assert "Rerun: `python -m conformance run --scenario gs2_n64_off_centre --stage forward`" in md
    assert "[repro page](repro/gs2_n64_off_centre__forward.md)" in md
    assert "[heatmaps/gs2_n64_off_centre__forward.png](heatmaps/gs2_n64_off_centre__forward.png)" in md
    assert "forward/pred_intensity [pytorch~tensorflow]: " in md and "max abs" in md
    assert "RuntimeError: shape mismatch" in md and "\x1b" not in md and "\x07" not in md
    assert "Adam epsilon placement differs" in md  # the waiver is visible, with its reason
    assert "<b>gs1_n64_pinn</b> / <b>train_k_steps</b>" not in md  # an expected failure is not a failure block
    assert "- gs1_n64_pinn / train_k_steps: Adam epsilon placement differs" in md


def test_summary_of_a_clean_run(tmp_path: Path) -> None:
    result = make_result({("a", "e2e"): "not_run"}, ["a", "b"], seconds=41.25)
    write_reports(result, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "## ✅ Parity gate passed"
    assert lines[2] == "**21 verdicts**, 2 scenarios × 11 stages, gate time 41.2 s: ✅ 21 passed · — 1 not run"
    assert "<details>" not in md and "**failing**" not in md
    assert not (tmp_path / "repro").exists() and not (tmp_path / "heatmaps").exists()


def test_summary_stays_under_one_mib_with_many_scenarios(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """8000 scenarios (a table over its budget) and 1000 failures (blocks over theirs): still < 1 MiB."""
    monkeypatch.setattr("ptycho.atomic.os.fsync", lambda fd: None)  # 1000 repro pages; durability is not tested here
    scenarios = [f"hyp_gs{i % 3 + 1}_n{32 << (i % 3)}_case{i:04d}" for i in range(8000)]
    stages = ["forward", "losses", "gradients", "params_cfg"]
    rng = np.random.default_rng(0)
    template = make_verdict("t", "forward", "fail", rng)
    waived = make_verdict("t", "losses", "xfail", rng)
    failing, xfailing = set(scenarios[1::7][:1000]), set(scenarios[::7])
    verdicts = []
    for sid in scenarios:
        for st in stages:
            if st == "forward" and sid in failing:
                verdicts.append(dataclasses.replace(template, scenario=sid, repro=repro(sid, st)))
            elif st == "losses" and sid in xfailing:
                verdicts.append(dataclasses.replace(waived, scenario=sid, repro=repro(sid, st)))
            else:
                verdicts.append(Verdict(sid, st, "pass", [], "passed", 0.1, repro(sid, st)))
    result = GateResult(verdicts, scenarios, stages, 100.0, "2026-11-23T10:00:00Z", "gate", None, {})
    write_reports(result, tmp_path)
    md = (tmp_path / "summary.md").read_bytes()
    assert SUMMARY_LIMIT_BYTES // 2 < len(md) < SUMMARY_LIMIT_BYTES  # the budget was exercised and held
    text = md.decode()
    assert text.startswith("## ❌ Parity gate FAILED: 1000 failed\n\n**32000 verdicts**, 8000 scenarios × 4 stages")
    assert "more failures not shown here" in text and "scenarios whose every stage passed are not listed" in text
    assert len(list((tmp_path / "repro").glob("*.md"))) == 1000
    assert len(list((tmp_path / "heatmaps").glob("*.png"))) == MAX_HEATMAPS


def test_junit_parses_and_counts_match(tmp_path: Path, failing_result: GateResult) -> None:
    write_reports(failing_result, tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    counts = failing_result.counts()
    assert len(cases) == len(failing_result.verdicts) - counts["not_run"] == int(suite.get("tests"))
    n_fail = sum(1 for c in cases if c.find("failure") is not None)
    n_err = sum(1 for c in cases if c.find("error") is not None)
    n_skip = sum(1 for c in cases if c.find("skipped") is not None)
    assert (n_fail, n_err, n_skip) == (counts["fail"] + counts["xpass"], counts["error"], counts["xfail"])
    assert (int(suite.get("failures")), int(suite.get("errors")), int(suite.get("skipped"))) == (n_fail, n_err, n_skip)
    assert root.get("tests") == suite.get("tests")
    by_id = {(c.get("classname"), c.get("name")): c for c in cases}
    fail = by_id[("conformance.gs2_n64_off_centre", "forward")]
    assert "forward/pred_intensity" in fail.find("failure").get("message")
    assert "max abs" in fail.find("failure").text
    assert "--scenario gs2_n64_off_centre --stage forward" in fail.find("system-out").text
    skipped = by_id[("conformance.gs1_n64_pinn", "train_k_steps")].find("skipped")
    assert skipped.get("message").startswith("expected failure: Adam epsilon placement differs")
    error = by_id[("conformance.gs3_n32_probe_big", "save_load")].find("error")
    assert "RuntimeError: shape mismatch" in error.text
    assert by_id[("conformance.gs2_n128_nfs2", "forward")].find("failure").get("type") == "unexpected-pass"
    assert ("conformance.gs1_n64_pinn", "e2e") not in by_id  # not run: the scenario does not list the stage
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["version.torch"] == "2.13.0"


def test_repro_pages(tmp_path: Path, failing_result: GateResult) -> None:
    write_reports(failing_result, tmp_path)
    page = (tmp_path / "repro" / "gs2_n64_off_centre__forward.md").read_text()
    assert "```bash\npython -m conformance run --scenario gs2_n64_off_centre --stage forward\n```" in page
    assert "**What failed:** 2 of 4 checks failed." in page
    assert "| `forward/pred_intensity` | pytorch~tensorflow |" in page
    assert "(../heatmaps/gs2_n64_off_centre__forward.png)" in page
    error = (tmp_path / "repro" / "gs3_n32_probe_big__save_load.md").read_text()
    assert "## stderr (tail)" in error and "````text" in error  # fence longer than the ``` inside the tail
    xpass = (tmp_path / "repro" / "gs2_n128_nfs2__forward.md").read_text()
    assert "matched no failing check" in xpass and "legacy N^2 normalisation" in xpass


def test_mutant_runs_carry_the_mutant_into_commands(tmp_path: Path) -> None:
    result = make_result({("s", "forward"): "fail"}, ["s"], mutant="offset_sign_flip")
    write_reports(result, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "**mutant `offset_sign_flip`**" in md
    page = (tmp_path / "repro" / "s__forward.md").read_text()
    assert "PTYCHO_MUTANT=offset_sign_flip python -m conformance run --scenario s --stage forward" in page


def test_heatmap_is_small_and_valid(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    result = make_result({("s", "forward"): "fail"}, ["s"], ["forward"])
    big = rng.random((300, 300)).astype(np.float32)  # incompressible noise, larger than the pooling limit
    for check in result.verdicts[0].checks:
        if not check.passed:
            check.worst = big
    write_reports(result, tmp_path)
    png = (tmp_path / "heatmaps" / "s__forward.png").read_bytes()
    assert len(png) <= 30 * 1024
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] < 400


def test_reports_are_deterministic_apart_from_timings(tmp_path: Path) -> None:
    first = make_result(CELLS, SCENARIOS, seconds=100.0, started="2026-11-23T10:00:00Z")
    again = make_result(CELLS, SCENARIOS, seconds=100.0, started="2026-11-23T10:00:00Z")
    later = make_result(CELLS, SCENARIOS, seconds=250.0, started="2026-11-24T09:00:00Z")
    for v in later.verdicts:
        v.seconds *= 3
    a, b, c = (write_reports(r, tmp_path / name) for r, name in ((first, "a"), (again, "b"), (later, "c")))
    assert set(a) == set(b) == set(c)
    for rel in a:
        assert a[rel].read_bytes() == b[rel].read_bytes(), rel
    for rel in a:
        if rel.startswith(("repro/", "heatmaps/")):
            assert a[rel].read_bytes() == c[rel].read_bytes(), rel

    def untimed(doc: dict) -> dict:
        doc = {k: v for k, v in doc.items() if k not in ("seconds", "started")}
        doc["verdicts"] = [{k: v for k, v in verdict.items() if k != "seconds"} for verdict in doc["verdicts"]]
        return doc

    ja, jc = (json.loads(x["parity.json"].read_text()) for x in (a, c))
    assert untimed(ja) == untimed(jc)
    md_a, md_c = (x["summary.md"].read_text().splitlines() for x in (a, c))
    differing = [i for i, (x, y) in enumerate(zip(md_a, md_c, strict=True)) if x != y]
    assert all("gate time" in md_a[i] or "started" in md_a[i] for i in differing)


def test_stale_artifacts_are_removed(tmp_path: Path, failing_result: GateResult) -> None:
    write_reports(failing_result, tmp_path)
    assert (tmp_path / "repro").is_dir()
    (tmp_path / "notes.txt").write_text("not ours")
    written = write_reports(make_result({("gs1_n64_pinn", "forward"): "fail"}, SCENARIOS[:1]), tmp_path)
    assert sorted(p.name for p in (tmp_path / "repro").iterdir()) == ["gs1_n64_pinn__forward.md"]
    assert sorted(p.name for p in (tmp_path / "heatmaps").iterdir()) == ["gs1_n64_pinn__forward.png"]
    assert (tmp_path / "notes.txt").exists() and "repro/gs1_n64_pinn__forward.md" in written


def test_unsafe_scenario_ids_get_safe_unique_file_names(tmp_path: Path, schema: dict) -> None:
    result = make_result({("a/b", "forward"): "fail", ("a:b", "forward"): "fail"}, ["a/b", "a:b"], ["forward"])
    written = write_reports(result, tmp_path)
    repro_files = sorted(rel for rel in written if rel.startswith("repro/"))
    assert len(repro_files) == 2 and all(re.fullmatch(r"repro/[A-Za-z0-9._-]+__forward\.md", r) for r in repro_files)
    assert validate(json.loads((tmp_path / "parity.json").read_text()), schema) == []

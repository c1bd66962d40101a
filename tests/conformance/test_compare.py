"""The judge on hand-written records in tmp_path (no tensorflow, no torch)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conformance.compare import STAGES, crash_path, judge, measure_spread, repro_command
from conformance.scenarios import ExpectedFailure, Scenario, ToleranceOverride

SID = "fake_gs1_n8"
RECORD_STAGES = ("configure", "physics_ops", "forward", "losses", "gradients", "train_k_steps", "params_cfg",
                 "bundle_layout", "save_load", "transplant")
PRODUCE = ("configure", "physics_ops", "forward", "losses", "gradients", "train_k_steps", "params_cfg", "bundle_layout")
CONSUME = ("save_load", "transplant", "params_cfg")


@dataclass
class FakeScenario:
    """The attributes of conformance.scenarios.Scenario the judge reads."""

    id: str = SID
    stages: tuple[str, ...] = RECORD_STAGES
    tolerance_overrides: tuple = ()
    expected_failures: tuple = ()


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    amp = rng.random((2, 8, 8, 1), dtype=np.float32)
    obj = (amp * np.exp(1j * amp)).astype(np.complex64)
    return {"amp": amp, "trimmed_object": obj, "pred_intensity": (100 * amp**2).astype(np.float32)}


def _params(point: str) -> tuple[dict, dict[str, np.ndarray]]:
    probe = (np.ones((8, 8, 1)) * (1 + 0.5j)).astype(np.complex64)
    entries = {
        "N": {"type": "int", "value": 8, "shape": None, "dtype": None},
        "nphotons": {"type": "float", "value": 1e9, "shape": None, "dtype": None},
        "model_type": {"type": "str", "value": "pinn", "shape": None, "dtype": None},
        "probe": {"type": "ndarray", "value": None, "shape": [8, 8, 1], "dtype": "complex64"},
    }
    return entries, {f"params_cfg/{point}/probe": probe}


def _layout(backend: str) -> dict:
    payload = {"tensorflow": ["model.keras"], "pytorch": ["model.pt", "lightning.ckpt"]}[backend]
    members = ["canonical_weights.h5", "manifest.dill", "manifest.json", "params.json"]
    members += [f"{m}/{p}" for m in ("autoencoder", "diffraction_to_obj") for p in payload]
    manifest = {"format": "ptychopinn.wts.h5.zip", "version": "2.0", "backend": backend,
                "models": ["autoencoder", "diffraction_to_obj"], "network": {"N": 8, "gridsize": 1},
                "intensity_scale": 1234.5, "framework": {backend: "x.y"}, "members": {}}
    return {"members": sorted(members), "manifest": manifest, "manifest_keys": sorted(manifest), "backend": backend,
            "weights": {"conv0.kernel": {"shape": [3, 3, 1, 4], "dtype": "float32"},
                        "probe.real": {"shape": [8, 8], "dtype": "float32"}}}


def write_record(run: Path, side: str, phase: str, arrays: dict, *, stages: dict | None = None,
                 params_cfg: dict | None = None, bundle_layout: dict | None = None, mutant: str | None = None,
                 sid: str = SID) -> None:
    d = run / sid / side
    d.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "ptychopinn.conformance.record/1", "scenario": sid, "backend": side, "phase": phase,
           "mutant": mutant, "versions": {"python": "3"}, "device": "cpu",
           "stages": stages or {}, "params_cfg": params_cfg or {}, "bundle_layout": bundle_layout}
    (d / f"{phase}.json").write_text(json.dumps(doc))
    np.savez(d / f"{phase}.npz", **arrays)


def ok(*names: str, seconds: float = 0.5) -> dict:
    return {n: {"status": "ok", "seconds": seconds, "error": None, "arrays": [], "values": {}} for n in names}


def make_clean_run(run: Path, *, mutant: str | None = None) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """Records of a scenario on which all three sides agree; returns the arrays written, for tampering."""
    fwd = _arrays(0)
    trained = _arrays(1)
    written: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    weights = np.linspace(-1, 1, 36, dtype=np.float32).reshape(3, 3, 1, 4)
    for side in ("tensorflow", "pytorch", "reference"):
        arrays = {f"forward/{k}": v for k, v in fwd.items()}
        arrays["losses/total"] = np.float64(0.25)
        arrays["physics_ops/translate"] = fwd["amp"][..., 0]
        params, parrays = {}, {}
        params["after_configure"], parrays = _params("after_configure")
        if side != "reference":
            arrays["gradients/conv0.kernel"] = weights * 0.1
            arrays["train_k_steps/loss"] = np.array([3.0, 2.0, 1.5], np.float32)
            arrays["train_k_steps/weights/conv0.kernel"] = weights
            params["after_training"], pa = _params("after_training")
            parrays.update(pa)
        produce_stages = ok(*PRODUCE) if side != "reference" else ok("configure", "physics_ops", "forward", "losses",
                                                                       "params_cfg")
        write_record(run, side, "produce", {**arrays, **parrays}, stages=produce_stages, params_cfg=params,
                     bundle_layout=_layout(side) if side != "reference" else None, mutant=mutant)
        written[(side, "produce")] = {**arrays, **parrays}
        consume: dict[str, np.ndarray] = {}
        if side == "reference":
            for peer in ("tensorflow", "pytorch"):
                consume.update({f"transplant/{peer}/{k}": v for k, v in trained.items()})
            write_record(run, side, "consume", consume, stages=ok("transplant"), mutant=mutant)
        else:
            consume.update({f"save_load/{k}": v for k, v in trained.items()})
            consume.update({f"save_load/saver/{k}": v for k, v in trained.items()})
            consume.update({f"transplant/memory/{k}": v for k, v in trained.items()})
            consume.update({f"transplant/file/{k}": v for k, v in trained.items()})
            params, parrays = _params("after_load")
            write_record(run, side, "consume", {**consume, **parrays}, stages=ok(*CONSUME),
                         params_cfg={"after_load": params}, mutant=mutant)
            consume.update(parrays)
        written[(side, "consume")] = consume
    return written


def rewrite(run: Path, side: str, phase: str, arrays: dict, **changes) -> None:
    """Rewrite one record with new arrays (and optionally new JSON fields)."""
    path = run / SID / side / f"{phase}.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))
    np.savez(run / SID / side / f"{phase}.npz", **arrays)


def by_stage(verdicts) -> dict:
    return {v.stage: v for v in verdicts}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return tmp_path / "run"


def test_clean_records_pass_every_listed_stage(run):
    make_clean_run(run)
    verdicts = judge(run, [FakeScenario()])
    assert [v.stage for v in verdicts] == list(STAGES)
    v = by_stage(verdicts)
    for stage in RECORD_STAGES:
        assert v[stage].status == "pass", v[stage].message
        assert v[stage].checks and all(c.passed for c in v[stage].checks)
    assert v["e2e"].status == "not_run" and not v["e2e"].checks
    assert v["forward"].seconds == pytest.approx(1.5)  # three sides x 0.5 s
    assert v["forward"].repro == f"python -m conformance run --scenario {SID} --stage forward"


def test_forward_pairs_include_each_backend_against_the_reference(run):
    make_clean_run(run)
    checks = by_stage(judge(run, [FakeScenario()], ["forward"]))["forward"].checks
    assert {c.pair for c in checks} == {"tensorflow~pytorch", "tensorflow~reference", "pytorch~reference"}
    assert {c.tensor for c in checks} == {"forward/amp", "forward/trimmed_object", "forward/pred_intensity"}


def test_a_perturbed_tensor_fails_naming_scenario_stage_tensor_and_pair(run):
    written = make_clean_run(run)
    arrays = dict(written[("pytorch", "produce")])
    arrays["forward/amp"] = arrays["forward/amp"].copy()
    arrays["forward/amp"][1, 2, 3, 0] += 0.01
    rewrite(run, "pytorch", "produce", arrays)
    v = by_stage(judge(run, [FakeScenario()]))
    assert v["forward"].status == "fail"
    assert f"{SID} / forward / forward/amp [tensorflow~pytorch]: 1/128 elements" in v["forward"].message
    failing = {(c.tensor, c.pair) for c in v["forward"].checks if not c.passed}
    assert failing == {("forward/amp", "tensorflow~pytorch"), ("forward/amp", "pytorch~reference")}
    bad = next(c for c in v["forward"].checks if not c.passed)
    assert bad.mismatch_locations == [[1, 2, 3, 0]] and bad.max_abs == pytest.approx(0.01, rel=1e-3)
    assert v["losses"].status == "pass"  # other stages unaffected


def test_a_tensor_missing_on_one_side_fails(run):
    written = make_clean_run(run)
    arrays = {k: v for k, v in written[("pytorch", "produce")].items() if k != "gradients/conv0.kernel"}
    rewrite(run, "pytorch", "produce", arrays)
    v = by_stage(judge(run, [FakeScenario()], ["gradients"]))["gradients"]
    assert v.status == "fail"
    assert "gradients/conv0.kernel [tensorflow~pytorch]: present in tensorflow, missing in pytorch" in v.message


def test_nan_in_one_backend_fails(run):
    written = make_clean_run(run)
    arrays = dict(written[("tensorflow", "produce")])
    arrays["train_k_steps/loss"] = np.array([3.0, np.nan, 1.5], np.float32)
    rewrite(run, "tensorflow", "produce", arrays)
    v = by_stage(judge(run, [FakeScenario()], ["train_k_steps"]))["train_k_steps"]
    assert v.status == "fail" and "tensorflow: 1 NaN, 0 inf" in v.message


def test_stage_error_in_a_record_becomes_an_error_verdict_with_the_traceback_tail(run):
    make_clean_run(run)
    stages = ok(*PRODUCE)
    tb = "\n".join(f"line {i}" for i in range(100)) + "\nRuntimeError: boom"
    stages["gradients"] = {"status": "error", "seconds": 0.1, "arrays": [], "values": {},
                           "error": {"type": "RuntimeError", "message": "boom", "traceback": tb}}
    path = run / SID / "pytorch" / "produce.json"
    doc = json.loads(path.read_text())
    doc["stages"] = stages
    path.write_text(json.dumps(doc))
    v = by_stage(judge(run, [FakeScenario()]))
    assert v["gradients"].status == "error"
    assert "pytorch: RuntimeError: boom" in v["gradients"].message
    assert v["gradients"].stderr_tail.endswith("RuntimeError: boom")
    assert len(v["gradients"].stderr_tail.splitlines()) == 41  # header + last 40 lines
    assert v["forward"].status == "pass"


def test_a_crashed_consume_worker_errors_only_the_consume_stages(run):
    make_clean_run(run)
    (run / SID / "tensorflow" / "consume.json").unlink()
    crash = crash_path(run, SID, "tensorflow", "consume")
    crash.write_text(json.dumps({"reason": "killed by signal SIGSEGV", "stderr_tail": "Fatal Python error"}))
    v = by_stage(judge(run, [FakeScenario()]))
    for stage in ("save_load", "transplant", "params_cfg"):
        assert v[stage].status == "error", stage
        assert "tensorflow consume worker: killed by signal SIGSEGV" in v[stage].message
        assert "Fatal Python error" in v[stage].stderr_tail
    assert v["forward"].status == "pass" and v["bundle_layout"].status == "pass"


def test_a_missing_record_without_crash_evidence_is_an_error(run):
    make_clean_run(run)
    (run / SID / "reference" / "produce.json").unlink()
    v = by_stage(judge(run, [FakeScenario()]))
    assert v["forward"].status == "error" and "no produce record" in v["forward"].message
    assert v["gradients"].status == "pass"  # the reference plays no part in gradients


def test_a_listed_stage_absent_from_the_record_is_an_error(run):
    make_clean_run(run)
    path = run / SID / "pytorch" / "produce.json"
    doc = json.loads(path.read_text())
    del doc["stages"]["losses"]
    path.write_text(json.dumps(doc))
    v = by_stage(judge(run, [FakeScenario()], ["losses"]))["losses"]
    assert v.status == "error" and "has no 'losses' stage" in v.message


def test_unknown_record_schema_is_an_error(run):
    make_clean_run(run)
    path = run / SID / "pytorch" / "produce.json"
    doc = json.loads(path.read_text())
    doc["schema"] = "something/else"
    path.write_text(json.dumps(doc))
    assert by_stage(judge(run, [FakeScenario()], ["forward"]))["forward"].status == "error"


def test_params_cfg_compares_types_values_and_key_sets(run):
    written = make_clean_run(run)
    params, _ = _params("after_training")
    params["N"] = {"type": "float", "value": 8.0, "shape": None, "dtype": None}
    del params["model_type"]
    params["extra_key"] = {"type": "bool", "value": True, "shape": None, "dtype": None}
    path = run / SID / "pytorch" / "produce.json"
    doc = json.loads(path.read_text())
    doc["params_cfg"]["after_training"] = params
    path.write_text(json.dumps(doc))
    arrays = dict(written[("pytorch", "produce")])
    arrays["params_cfg/after_configure/probe"] = arrays["params_cfg/after_configure/probe"] * np.complex64(1j)
    np.savez(run / SID / "pytorch" / "produce.npz", **arrays)
    v = by_stage(judge(run, [FakeScenario()], ["configure", "params_cfg"]))
    msg = v["params_cfg"].message
    assert v["params_cfg"].status == "fail"
    assert "'N': type int vs float" in msg
    assert "key 'model_type' missing in pytorch" in msg and "key 'extra_key' missing in tensorflow" in msg
    failing = {c.tensor for c in v["params_cfg"].checks if not c.passed}
    assert failing == {"params_cfg/after_configure", "params_cfg/after_training"}
    assert v["configure"].status == "fail" and "'probe'" in v["configure"].message


def test_params_cfg_values_compare_exactly(run):
    make_clean_run(run)
    path = run / SID / "pytorch" / "produce.json"
    doc = json.loads(path.read_text())
    doc["params_cfg"]["after_training"]["nphotons"]["value"] = 1e9 * (1 + 1e-12)
    path.write_text(json.dumps(doc))
    v = by_stage(judge(run, [FakeScenario()], ["params_cfg"]))["params_cfg"]
    assert v.status == "fail" and "'nphotons': 1000000000.0 vs 1000000000.001" in v.message


def test_backend_tag_in_params_must_name_each_backend_itself(run):
    make_clean_run(run)
    for side in ("tensorflow", "pytorch", "reference"):
        path = run / SID / side / "produce.json"
        doc = json.loads(path.read_text())
        tag = {"tensorflow": "tensorflow", "pytorch": "tensorflow", "reference": "anything"}[side]
        doc["params_cfg"]["after_configure"]["backend"] = {"type": "str", "value": tag, "shape": None, "dtype": None}
        path.write_text(json.dumps(doc))
    v = by_stage(judge(run, [FakeScenario()], ["configure"]))["configure"]
    failing = {c.pair: c.message for c in v.checks if not c.passed}
    assert set(failing) == {"tensorflow~pytorch", "pytorch~reference"}  # tensorflow~reference passes: the
    for message in failing.values():  # reference's own tag is never compared
        assert "'backend': pytorch records 'tensorflow', expected its own name 'pytorch'" in message


def test_bundle_layout_checks_backend_tag_members_manifest_and_weights(run):
    make_clean_run(run)
    layout = _layout("pytorch")
    layout["manifest"]["backend"] = None
    layout["members"].remove("params.json")
    layout["manifest_keys"].remove("intensity_scale")
    layout["manifest"]["network"] = {"N": 8, "gridsize": 2}
    layout["weights"]["conv0.kernel"]["shape"] = [4, 1, 3, 3]
    path = run / SID / "pytorch" / "produce.json"
    doc = json.loads(path.read_text())
    doc["bundle_layout"] = layout
    path.write_text(json.dumps(doc))
    v = by_stage(judge(run, [FakeScenario()], ["bundle_layout"]))["bundle_layout"]
    failing = {(c.tensor, c.pair): c.message for c in v.checks if not c.passed}
    assert set(failing) == {("bundle_layout/backend", "bundle~pytorch"),
                            ("bundle_layout/members", "tensorflow~pytorch"),
                            ("bundle_layout/manifest_keys", "tensorflow~pytorch"),
                            ("bundle_layout/manifest", "tensorflow~pytorch"),
                            ("bundle_layout/weights", "tensorflow~pytorch")}
    assert "manifest backend None, expected 'pytorch'" in failing[("bundle_layout/backend", "bundle~pytorch")]
    assert "'params.json' only in tensorflow" in failing[("bundle_layout/members", "tensorflow~pytorch")]
    assert "'network'" in failing[("bundle_layout/manifest", "tensorflow~pytorch")]
    assert "[4, 1, 3, 3]" in failing[("bundle_layout/weights", "tensorflow~pytorch")]


def test_bundle_payload_of_the_wrong_backend_is_not_normalised_away(run):
    make_clean_run(run)
    layout = _layout("tensorflow")
    layout["members"] = [m.replace("model.keras", "model.pt") for m in layout["members"]]
    path = run / SID / "tensorflow" / "produce.json"
    doc = json.loads(path.read_text())
    doc["bundle_layout"] = layout
    path.write_text(json.dumps(doc))
    v = by_stage(judge(run, [FakeScenario()], ["bundle_layout"]))["bundle_layout"]
    assert v.status == "fail" and "'autoencoder/model.pt' only in tensorflow" in v.message


def test_save_load_compares_loaded_with_saver_and_params_after_load(run):
    written = make_clean_run(run)
    arrays = dict(written[("tensorflow", "consume")])
    arrays["save_load/pred_intensity"] = arrays["save_load/pred_intensity"] * np.float32(1.01)
    rewrite(run, "tensorflow", "consume", arrays)
    v = by_stage(judge(run, [FakeScenario()], ["save_load"]))["save_load"]
    failing = {(c.tensor, c.pair) for c in v.checks if not c.passed}
    assert failing == {("save_load/pred_intensity", "tensorflow:loaded~tensorflow:saver")}
    params = {c.tensor: c for c in v.checks if c.tensor == "params_cfg/after_load"}
    assert params and params["params_cfg/after_load"].passed


def test_transplant_checks_memory_and_file_routes_against_the_peer_and_the_reference(run):
    written = make_clean_run(run)
    arrays = dict(written[("pytorch", "consume")])
    arrays["transplant/file/amp"] = np.zeros_like(arrays["transplant/file/amp"])
    rewrite(run, "pytorch", "consume", arrays)
    v = by_stage(judge(run, [FakeScenario()], ["transplant"]))["transplant"]
    pairs = {c.pair for c in v.checks}
    assert pairs == {"pytorch<-tensorflow:memory~tensorflow", "pytorch<-tensorflow:file~tensorflow",
                     "tensorflow~reference<-tensorflow", "tensorflow<-pytorch:memory~pytorch",
                     "tensorflow<-pytorch:file~pytorch", "pytorch~reference<-pytorch"}
    failing = {(c.tensor, c.pair) for c in v.checks if not c.passed}
    assert failing == {("transplant/file/amp", "pytorch<-tensorflow:file~tensorflow")}


def _tamper_forward(run, written, delta=0.01):
    arrays = dict(written[("pytorch", "produce")])
    arrays["forward/amp"] = arrays["forward/amp"] + np.float32(delta)
    rewrite(run, "pytorch", "produce", arrays)


def test_matching_expected_failure_gives_xfail_with_its_reason(run):
    written = make_clean_run(run)
    _tamper_forward(run, written)
    xf = ExpectedFailure(stage="forward", tensor_glob="forward/amp", reason="known amp drift, issue #7")
    v = by_stage(judge(run, [FakeScenario(expected_failures=(xf,))], ["forward"]))["forward"]
    assert v.status == "xfail" and v.expected_failure == "known amp drift, issue #7"
    assert not v.failing


def test_expected_failure_restricted_to_a_pair_leaves_other_pairs_failing(run):
    written = make_clean_run(run)
    _tamper_forward(run, written)
    xf = ExpectedFailure(stage="forward", tensor_glob="forward/amp", backend_pair_glob="tensorflow~*",
                         reason="tf only")
    v = by_stage(judge(run, [FakeScenario(expected_failures=(xf,))], ["forward"]))["forward"]
    assert v.status == "fail" and "[pytorch~reference]" in v.message


def test_strict_expected_failure_that_matches_nothing_is_an_xpass_failure(run):
    make_clean_run(run)
    xf = ExpectedFailure(stage="forward", tensor_glob="forward/amp", reason="fixed long ago")
    v = by_stage(judge(run, [FakeScenario(expected_failures=(xf,))], ["forward"]))["forward"]
    assert v.status == "xpass" and v.failing
    assert "matched no failing check" in v.message and "fixed long ago" in v.message


def test_non_strict_expected_failure_that_matches_nothing_passes_with_a_note(run):
    make_clean_run(run)
    xf = ExpectedFailure(stage="forward", tensor_glob="forward/amp", reason="hypothesis-driven", strict=False)
    v = by_stage(judge(run, [FakeScenario(expected_failures=(xf,))], ["forward"]))["forward"]
    assert v.status == "pass" and "did not occur: hypothesis-driven" in v.message


def test_errors_are_never_downgraded_by_an_expected_failure(run):
    make_clean_run(run)
    (run / SID / "pytorch" / "produce.json").unlink()
    xf = ExpectedFailure(stage="forward", tensor_glob="*", reason="r")
    v = by_stage(judge(run, [FakeScenario(expected_failures=(xf,))], ["forward"]))["forward"]
    assert v.status == "error"


def test_tolerance_override_by_scenario_applies_with_its_reason(run):
    written = make_clean_run(run)
    _tamper_forward(run, written, delta=1e-4)
    ov = ToleranceOverride(stage="forward", tensor_glob="forward/amp", rtol=0.0, atol=1e-3,
                           reason="GPU convolution", evidence="max abs 1e-4 measured on H100, 24 scenarios")
    v = by_stage(judge(run, [FakeScenario(tolerance_overrides=(ov,))], ["forward"]))["forward"]
    assert v.status == "pass"
    amp = next(c for c in v.checks if c.tensor == "forward/amp" and c.pair == "tensorflow~pytorch")
    assert amp.atol == 1e-3 and "override: GPU convolution" in amp.message
    assert by_stage(judge(run, [FakeScenario()], ["forward"]))["forward"].status == "fail"


def test_a_stage_with_nothing_to_compare_fails_instead_of_passing_vacuously(run):
    make_clean_run(run)
    for side in ("tensorflow", "pytorch"):
        path = run / SID / side / "produce.npz"
        with np.load(path) as npz:
            kept = {k: npz[k] for k in npz.files if not k.startswith("gradients/")}
        np.savez(path, **kept)
    v = by_stage(judge(run, [FakeScenario()], ["gradients"]))["gradients"]
    assert v.status == "fail" and "nothing to compare" in v.message


def test_mutant_named_in_records_goes_into_the_repro_command(run):
    make_clean_run(run, mutant="offset_sign_flip")
    v = by_stage(judge(run, [FakeScenario()], ["forward"]))["forward"]
    assert v.repro == repro_command(SID, "forward", "offset_sign_flip")
    assert v.repro.startswith("PTYCHO_MUTANT=offset_sign_flip python -m conformance run --scenario")


def test_unknown_stage_is_refused(run):
    make_clean_run(run)
    with pytest.raises(ValueError, match="unknown stages"):
        judge(run, [FakeScenario()], ["forwards"])


def test_judge_accepts_real_scenario_objects(run):
    make_clean_run(run)
    real = Scenario.from_dict({**Scenario.from_dict(_any_registered()).to_dict(), "id": SID})
    verdicts = judge(run, [real], ["forward"])
    assert verdicts[0].scenario == SID


def _any_registered() -> dict:
    from conformance.scenarios import REGISTRY

    return next(iter(REGISTRY.values())).to_dict()


def test_measure_spread_reports_worst_errors_per_tensor(run):
    written = make_clean_run(run)
    arrays = dict(written[("pytorch", "produce")])
    arrays["forward/pred_intensity"] = arrays["forward/pred_intensity"] + np.float32(0.5)
    rewrite(run, "pytorch", "produce", arrays)
    rows = {(r.stage, r.tensor): r for r in measure_spread(run, [FakeScenario()])}
    r = rows[("forward", "forward/pred_intensity")]
    assert r.n == 3 and r.worst_abs == pytest.approx(0.5)
    larger = max(float(np.abs(written[("tensorflow", "produce")]["forward/pred_intensity"]).max()),
                 float(np.abs(arrays["forward/pred_intensity"]).max()))
    assert r.worst_scaled == pytest.approx(0.5 / larger, rel=1e-3)  # relative to the larger side
    assert rows[("forward", "forward/amp")].worst_abs == 0.0


def test_trained_intensity_scale_in_the_manifest_compares_within_float32(run):
    make_clean_run(run)
    path = run / SID / "pytorch" / "produce.json"
    for value, status in ((1234.5 * (1 + 5e-7), "pass"), (1234.5 * (1 + 6e-5), "fail")):
        doc = json.loads(path.read_text())
        doc["bundle_layout"]["manifest"]["intensity_scale"] = value
        path.write_text(json.dumps(doc))
        v = by_stage(judge(run, [FakeScenario()], ["bundle_layout"]))["bundle_layout"]
        assert v.status == status, v.message
    assert "'intensity_scale': 1234.5 vs 1234.57" in v.message


def test_a_bundle_the_reader_refuses_is_still_judged_structurally(run):
    """An error verdict for bundle_layout carries the structural checks, so it names the backend tag."""
    make_clean_run(run)
    layout = _layout("pytorch")
    del layout["manifest"]["backend"]
    layout["manifest_keys"].remove("backend")
    layout["backend"] = None
    layout["read_error"] = "BundleFormatError: manifest.json lacks the key 'backend'"
    path = run / SID / "pytorch" / "produce.json"
    doc = json.loads(path.read_text())
    doc["bundle_layout"] = layout
    doc["stages"]["bundle_layout"] = {"status": "error", "seconds": 0.1, "arrays": [], "values": {},
                                      "error": {"type": "BundleFormatError", "message": "lacks 'backend'",
                                                "traceback": "BundleFormatError: lacks 'backend'"}}
    path.write_text(json.dumps(doc))
    v = by_stage(judge(run, [FakeScenario()], ["bundle_layout"]))["bundle_layout"]
    assert v.status == "error"
    failing = {(c.tensor, c.pair) for c in v.checks if not c.passed}
    assert ("bundle_layout/backend", "bundle~pytorch") in failing
    assert ("bundle_layout/readable", "bundle~pytorch") in failing
    assert ("bundle_layout/backend", "bundle~tensorflow") not in failing

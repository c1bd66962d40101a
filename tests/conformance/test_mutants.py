"""The mutants of ``planted_bugs``: registry, activation semantics, real behaviour changes, kill logic.

Each behaviour test observes the mutated backend through the path the gate drives (the parity
API or the Keras layers the model is wired from) on a tiny input, before, during and after the
patch: the output must change while the mutant is applied and be restored exactly after
``Patch.undo``.  Tests of TensorFlow mutants are marked ``tf``, of PyTorch mutants ``torch``.
The kill-run logic is tested with a fake gate (no worker processes).
"""

from __future__ import annotations

import json
import math
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import planted_bugs as mutants
from conformance.verdicts import Comparison, GateResult, Verdict
from planted_bugs import REGISTRY, REQUIRED_BUG_CLASSES, activate, kill, module

# --------------------------------------------------------------------------- helpers

#: Modules of each backend a mutant may patch (never the shared core: ptycho.reference,
#: ptycho.conventions, ptycho.bundle, ptycho.config, ptycho.network_spec, ...).
BACKEND_MODULES = {
    "tensorflow": ("ptycho_tf.",),
    "pytorch": ("ptycho_torch.",),
}


def _cplx(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape != b.shape or float(np.max(np.abs(a - b))) > 1e-3 * max(1.0, float(np.max(np.abs(b))))
    return a != b


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _check_effect(name: str, observe: Callable[[], Any]) -> None:
    """``observe()`` differs while mutant ``name`` is applied and is restored exactly after undo."""
    before = observe()
    patch = module(name).apply()
    try:
        during = observe()
    finally:
        patch.undo()
    after = observe()
    assert _differs(during, before), f"mutant {name} did not change what the gate observes"
    assert _same(after, before), f"undoing mutant {name} did not restore the original behaviour"


@pytest.fixture
def deactivate():
    """Undo every mutant :func:`activate` applied during the test."""
    yield
    mutants.deactivate()


# --------------------------------------------------------------------------- registry


def test_registry_covers_every_required_bug_class():
    classes = [m.bug_class for m in REGISTRY.values()]
    assert set(classes) == set(REQUIRED_BUG_CLASSES)
    assert len(REQUIRED_BUG_CLASSES) == 14  # issue 5's twelve, issue 10's optimizer drift and lost gradient
    assert len(classes) == 15 and classes.count("optimizer constant drift") == 2


def test_mutants_are_spread_over_both_backends():
    per_backend = {b: sum(m.backend == b for m in REGISTRY.values()) for b in mutants.BACKENDS}
    assert min(per_backend.values()) >= 4, per_backend


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_mutant_patches_one_attribute_of_its_own_backend(name):
    mutant = REGISTRY[name]
    mod = module(name)
    assert callable(mod.apply)
    target_module, _, attr = mutant.target.partition(":")
    assert attr and "." not in attr.split(".")[-1]
    assert target_module.startswith(BACKEND_MODULES[mutant.backend]), mutant.target
    assert mutant.expected and all(stage and glob for stage, glob in mutant.expected)


def test_mutant_scenarios_are_default_gate_scenarios():
    from conformance.scenarios import DEFAULT_GATE

    for m in REGISTRY.values():
        assert set(m.scenarios) <= set(DEFAULT_GATE), (m.name, m.scenarios)


def test_mutant_expected_stages_are_listed_by_their_scenarios():
    from conformance.scenarios import REGISTRY as SCENARIOS

    for m in REGISTRY.values():
        for sid in m.scenarios:
            assert {stage for stage, _ in m.expected} & set(SCENARIOS[sid].stages), (m.name, sid)


def test_unknown_mutant_name_raises_listing_the_known_ones():
    with pytest.raises(ValueError, match="unknown mutant 'nope'.*offset_sign_flip"):
        activate("nope", "tensorflow")
    with pytest.raises(ValueError, match="xy_swap"):
        mutants.get("nope")


def test_constructing_a_bad_mutant_record_is_refused():
    good = REGISTRY["xy_swap"]
    with pytest.raises(ValueError, match="backend"):
        mutants.Mutant(good.name, "reference", good.bug_class, "", "", good.expected, good.scenarios)
    with pytest.raises(ValueError, match="bug class"):
        mutants.Mutant(good.name, good.backend, "typo", "", "", good.expected, good.scenarios)


# --------------------------------------------------------------------------- activation


@pytest.mark.parametrize("name", [None, ""])
def test_activate_without_a_name_is_a_noop(name, deactivate):
    activate(name, "tensorflow")
    activate(name, "pytorch")
    assert mutants.active() == {}


def test_activate_ignores_a_mutant_of_another_backend(deactivate):
    before = set(sys.modules)
    activate("xy_swap", "pytorch")  # a TensorFlow mutant in a torch worker
    activate("offset_sign_flip", "tensorflow")  # a torch mutant in a TensorFlow worker
    activate("offset_sign_flip", "reference")  # the reference is never mutated
    assert mutants.active() == {}
    assert not {"tensorflow", "torch"} & (set(sys.modules) - before)


@pytest.mark.torch
def test_activate_applies_a_mutant_once_in_its_own_backend(deactivate):
    from ptycho import conventions
    from ptycho_torch import physics as torch_physics

    activate("offset_sign_flip", "pytorch")
    activate("offset_sign_flip", "pytorch")  # applying twice must not flip the sign back
    assert torch_physics.REASSEMBLY_SHIFT_SIGN == -conventions.REASSEMBLY_SHIFT_SIGN
    assert mutants.active() == {"offset_sign_flip": REGISTRY["offset_sign_flip"].target}
    mutants.deactivate()
    assert torch_physics.REASSEMBLY_SHIFT_SIGN == conventions.REASSEMBLY_SHIFT_SIGN
    assert mutants.active() == {}


# --------------------------------------------------------------------------- PyTorch mutants


def _config_and_weights(gridsize: int = 1, **model: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """A tiny ``ModelConfig`` (N=32, nfs=1) and its canonical initial weights (no framework needed)."""
    from ptycho.canonical_weights import init_canonical_weights
    from ptycho.config.config import ModelConfig
    from ptycho.network_spec import network_spec_from_config
    from ptycho.reference.physics import default_probe, normalize_probe

    cfg = ModelConfig(N=32, gridsize=gridsize, n_filters_scale=1, **model)
    weights = init_canonical_weights(network_spec_from_config(cfg), seed=0, log_scale=math.log(10.0),
                                     probe=normalize_probe(default_probe(32), 4.0))
    return cfg, weights


def _torch_handle(gridsize: int = 1, **model: Any):
    from ptycho_torch import parity_api as pa

    cfg, weights = _config_and_weights(gridsize, **model)
    return cfg, weights, pa.build(cfg, weights=weights, probe_mask=False, gaussian_smoothing_sigma=0.0)


@pytest.mark.torch
def test_offset_sign_flip_changes_torch_reassembly(rng):
    from ptycho_torch import parity_api as pa

    patches, pos = _cplx(rng, 2, 16, 16, 4), rng.uniform(-3, 3, (2, 1, 2, 4)).astype(np.float32)
    _check_effect("offset_sign_flip", lambda: pa.physics_op("reassemble_patches", patches, pos, 24))


@pytest.mark.torch
def test_gridsize_channels_breaks_reloading_a_gridsize2_torch_bundle(tmp_path):
    from ptycho import params
    from ptycho_torch import parity_api as pa

    _cfg, _w, handle = _torch_handle(gridsize=2)
    path = pa.save_bundle(handle, tmp_path, params.snapshot())

    def reload() -> str:
        try:
            return f"C={pa.load_bundle(path).model.C}"
        except Exception as exc:  # noqa: BLE001 - the observable is the outcome
            return type(exc).__name__

    _check_effect("gridsize_channels", reload)


@pytest.mark.torch
def test_object_big_default_drift_changes_the_torch_model_built_from_a_config(rng):
    from ptycho_torch import parity_api as pa

    cfg, weights = _config_and_weights(object_big=True)
    x = rng.uniform(0.1, 1.0, (2, 32, 32, 1)).astype(np.float32)
    pos = rng.uniform(-2, 2, (2, 1, 2, 1)).astype(np.float32)

    def padded_object() -> np.ndarray:
        handle = pa.build(cfg, weights=weights, probe_mask=False, gaussian_smoothing_sigma=0.0)
        return pa.forward(handle, x, pos)["padded_object"]

    _check_effect("object_big_default_drift", padded_object)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:test_data_file is not set")
def test_config_field_dropped_changes_what_the_torch_config_path_writes_to_params_cfg(tmp_path):
    from ptycho import params
    from ptycho_torch.config_factory import create_training_payload

    data = tmp_path / "train.npz"
    data.touch()
    overrides = {"N": 32, "gridsize": 2, "n_filters_scale": 1, "n_groups": 4}  # the worker's configure call

    def configured() -> dict[str, Any]:
        params.reset()
        create_training_payload(data, tmp_path / "out", overrides=overrides)
        return {k: params.cfg[k] for k in ("N", "gridsize", "n_filters_scale")}

    assert configured() == {"N": 32, "gridsize": 2, "n_filters_scale": 1}
    _check_effect("config_field_dropped", configured)


@pytest.mark.torch
def test_bundle_backend_tag_strips_the_manifest_backend_of_torch_bundles(tmp_path):
    from ptycho import params
    from ptycho_torch import parity_api as pa

    _cfg, _w, handle = _torch_handle()
    counter = iter(range(10))

    def manifest_backend() -> str | None:
        path = pa.save_bundle(handle, tmp_path / str(next(counter)), params.snapshot())
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read("manifest.json")).get("backend")

    _check_effect("bundle_backend_tag", manifest_backend)


@pytest.mark.torch
def test_stitch_channels_confusion_changes_the_torch_stitcher(rng):
    from ptycho_torch import parity_api as pa

    obj, offsets = _cplx(rng, 5, 16, 16, 1), rng.uniform(0, 20, (5, 1, 2, 1))
    _check_effect("stitch_channels_confusion", lambda: pa.physics_op("reassemble_position", obj, offsets, 8))


@pytest.mark.torch
def test_adam_epsilon_drift_changes_torch_steps_on_tiny_gradients():
    from conformance.optimizer_check import optimizer_case
    from conformance.scenarios import REGISTRY as SCENARIOS
    from ptycho_torch import parity_api as pa

    w, g, lrs = optimizer_case(SCENARIOS["gs1_n32"], "tiny")  # updates ~3e-6 per step: observe them in lr units
    _check_effect("adam_epsilon_drift", lambda: pa.optimizer_steps(w, g, lrs)["kernel"] / lrs[0])


@pytest.mark.torch
def test_gradient_zeroed_reports_zeros_for_one_torch_parameter(rng):
    from planted_bugs.gradient_zeroed import ZEROED
    from ptycho_torch import parity_api as pa

    _cfg, _w, handle = _torch_handle()
    x = rng.uniform(0.1, 1.0, (2, 32, 32, 1)).astype(np.float32)
    pos = rng.uniform(-2, 2, (2, 1, 2, 1)).astype(np.float32)
    scale = float(np.abs(pa.loss_and_grads(handle, x, pos)[1][ZEROED]).max())  # ~1e-7 here: observe relative
    assert scale > 0
    _check_effect("gradient_zeroed", lambda: pa.loss_and_grads(handle, x, pos)[1][ZEROED] / scale)


# --------------------------------------------------------------------------- TensorFlow mutants


@pytest.mark.tf
def test_xy_swap_changes_tensorflow_patch_extraction(rng):
    from ptycho_tf import parity_api as pa

    canvas, pos = _cplx(rng, 2, 24, 24, 1), rng.uniform(-3, 3, (2, 1, 2, 4)).astype(np.float32)
    _check_effect("xy_swap", lambda: pa.physics_op("extract_patches", canvas, pos, 16))


@pytest.mark.tf
def test_intensity_norm_n_squared_changes_tensorflow_normalisation(rng):
    from ptycho_tf import parity_api as pa

    d = np.abs(_cplx(rng, 3, 16, 16, 2))
    _check_effect("intensity_norm_n_squared", lambda: pa.physics_op("normalize_x_full", d)[0])


@pytest.mark.tf
def test_batch_merge_reassembly_merges_only_from_64_patches(rng):
    from ptycho_tf import layers as tf_layers

    patches, pos = _cplx(rng, 16, 8, 8, 4), rng.uniform(-2, 2, (16, 1, 2, 4)).astype(np.float32)
    layer = tf_layers.ReassemblePatches(12)  # what the model's padded_obj layer calls
    _check_effect("batch_merge_reassembly", lambda: np.asarray(layer([patches, pos])))
    below = np.asarray(layer([patches[:15], pos[:15]]))  # 15 x 4 = 60 < 64: per sample, unchanged
    patch = module("batch_merge_reassembly").apply()
    try:
        assert np.array_equal(np.asarray(layer([patches[:15], pos[:15]])), below)
    finally:
        patch.undo()


@pytest.mark.tf
def test_nonstrict_weight_loading_leaves_a_tensorflow_layer_at_its_initial_weights():
    from ptycho_tf import parity_api as pa

    cfg, weights = _config_and_weights()

    def first_kernel() -> np.ndarray:
        handle = pa.build(cfg, weights=weights, probe_mask=False, gaussian_smoothing_sigma=0.0)
        return pa.get_weights(handle)["encoder.block0.conv0.kernel"]

    assert np.array_equal(first_kernel(), weights["encoder.block0.conv0.kernel"])
    _check_effect("nonstrict_weight_loading", first_kernel)


@pytest.mark.tf
def test_ifftshift_before_fft_changes_tensorflow_diffraction(rng):
    from ptycho_tf import layers as tf_layers

    psi = _cplx(rng, 2, 16, 16, 4)
    _check_effect("ifftshift_before_fft", lambda: np.asarray(tf_layers.Diffract()(psi)))


@pytest.mark.tf
def test_an_ifftshift_over_the_spatial_axes_only_would_be_an_equivalent_mutant(rng):
    """Why the mutant shifts every axis: on the spatial axes alone |F| does not change (even N)."""
    from ptycho_tf import physics as tf_helper

    psi = _cplx(rng, 2, 4, 16, 16)
    plain = np.asarray(tf_helper.diffract(psi))
    shifted = np.asarray(tf_helper.diffract(np.fft.ifftshift(psi, axes=(-2, -1))))
    np.testing.assert_allclose(shifted, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.tf
def test_gaussian_sigma_ignored_changes_the_tensorflow_probe_layer(rng):
    from ptycho_tf import layers as tf_layers

    layer = tf_layers.ProbeIllumination(16, gaussian_smoothing_sigma=1.0)  # the model's 'probe' layer
    layer.build(None)
    patches = _cplx(rng, 2, 16, 16, 1)
    _check_effect("gaussian_sigma_ignored", lambda: np.asarray(layer(patches)))


@pytest.mark.tf
def test_adam_beta2_drift_changes_tensorflow_steps():
    from conformance.optimizer_check import optimizer_case
    from conformance.scenarios import REGISTRY as SCENARIOS
    from ptycho_tf import parity_api as pa

    w, g, lrs = optimizer_case(SCENARIOS["gs1_n32"], "large")  # updates ~lr per step: observe them in lr units
    _check_effect("adam_beta2_drift", lambda: pa.optimizer_steps(w, g, lrs)["kernel"] / lrs[0])


#: The behaviour test of every mutant (a new mutant must add one).
BEHAVIOUR_TESTS = {
    "offset_sign_flip": test_offset_sign_flip_changes_torch_reassembly,
    "gridsize_channels": test_gridsize_channels_breaks_reloading_a_gridsize2_torch_bundle,
    "object_big_default_drift": test_object_big_default_drift_changes_the_torch_model_built_from_a_config,
    "config_field_dropped": test_config_field_dropped_changes_what_the_torch_config_path_writes_to_params_cfg,
    "bundle_backend_tag": test_bundle_backend_tag_strips_the_manifest_backend_of_torch_bundles,
    "stitch_channels_confusion": test_stitch_channels_confusion_changes_the_torch_stitcher,
    "xy_swap": test_xy_swap_changes_tensorflow_patch_extraction,
    "intensity_norm_n_squared": test_intensity_norm_n_squared_changes_tensorflow_normalisation,
    "batch_merge_reassembly": test_batch_merge_reassembly_merges_only_from_64_patches,
    "nonstrict_weight_loading": test_nonstrict_weight_loading_leaves_a_tensorflow_layer_at_its_initial_weights,
    "ifftshift_before_fft": test_ifftshift_before_fft_changes_tensorflow_diffraction,
    "gaussian_sigma_ignored": test_gaussian_sigma_ignored_changes_the_tensorflow_probe_layer,
    "adam_beta2_drift": test_adam_beta2_drift_changes_tensorflow_steps,
    "adam_epsilon_drift": test_adam_epsilon_drift_changes_torch_steps_on_tiny_gradients,
    "gradient_zeroed": test_gradient_zeroed_reports_zeros_for_one_torch_parameter,
}


def test_every_mutant_has_a_behaviour_test_marked_for_its_backend():
    assert set(BEHAVIOUR_TESTS) == set(REGISTRY)
    for name, test in BEHAVIOUR_TESTS.items():
        marks = {m.name for m in getattr(test, "pytestmark", [])}
        assert {"tensorflow": "tf", "pytorch": "torch"}[REGISTRY[name].backend] in marks, name


# --------------------------------------------------------------------------- kill logic (fake gate)


def _check(tensor: str, passed: bool, pair: str = "tensorflow~pytorch") -> Comparison:
    return Comparison(tensor, pair, passed, 1e-6, 1e-5, None if passed else 1.0, None, 0 if passed else 1, 1, [],
                      [], "float32", None, f"{tensor}: {'ok' if passed else 'differs'}")


def _result(verdicts: list[Verdict], mutant: str | None = None) -> GateResult:
    return GateResult(verdicts, sorted({v.scenario for v in verdicts}), sorted({v.stage for v in verdicts}), 1.0,
                      "2026-01-01T00:00:00+00:00", "test", mutant, {})


def _verdict(stage: str, status: str, checks: list[Comparison], scenario: str = "s1") -> Verdict:
    return Verdict(scenario, stage, status, checks, "", 0.1, f"python -m conformance run --scenario {scenario}")


def test_diagnose_caught_by_an_expected_check():
    m = REGISTRY["xy_swap"]
    result = _result([
        _verdict("forward", "fail", [_check("forward/amp", True), _check("forward/padded_object", False)]),
        _verdict("losses", "fail", [_check("losses/total", False)]),
    ])  # fmt: skip
    row = kill.diagnose(m, result, 3.0)
    assert row.status == "caught" and row.killed
    assert row.caught_by == ["s1/forward:forward/padded_object [tensorflow~pytorch]"]
    assert row.also_failing == ["s1/losses:losses/total [tensorflow~pytorch]"]


def test_diagnose_wrong_check_and_survivor():
    m = REGISTRY["xy_swap"]
    wrong = kill.diagnose(m, _result([_verdict("losses", "fail", [_check("losses/total", False)])]), 1.0)
    assert wrong.status == "wrong check" and not wrong.killed
    survived = kill.diagnose(m, _result([_verdict("forward", "pass", [_check("forward/padded_object", True)])]), 1.0)
    assert survived.status == "survived" and not survived.killed


def test_diagnose_stage_error_matches_only_a_wildcard_expectation():
    err = _result([_verdict("save_load", "error", [])])
    assert kill.diagnose(REGISTRY["gridsize_channels"], err, 1.0).status == "caught"  # expects save_load:*
    assert kill.diagnose(REGISTRY["xy_swap"], _result([_verdict("forward", "error", [])]), 1.0).status == "wrong check"


def test_diagnose_ignores_checks_that_fail_on_clean_code_too():
    m = REGISTRY["bundle_backend_tag"]  # expects bundle_layout:bundle_layout/backend
    pre = _verdict("bundle_layout", "fail", [_check("bundle_layout/backend", False)])
    baseline = {"s1/bundle_layout:bundle_layout/backend [tensorflow~pytorch]"}
    row = kill.diagnose(m, _result([pre]), 1.0, baseline)
    assert row.status == "survived" and "clean gate fails too" in row.message
    assert row.also_failing == sorted(baseline)
    assert kill.diagnose(m, _result([pre]), 1.0).status == "caught"  # without the baseline it would count


def test_run_mutant_passes_the_mutant_to_the_gate_and_reports_a_crash(tmp_path):
    seen: dict[str, Any] = {}

    def fake_gate(ids, **kw):
        seen.update(kw, ids=ids)
        return _result([_verdict("forward", "fail", [_check("forward/illuminated", False)])], "gaussian_sigma_ignored")

    mutant = REGISTRY["gaussian_sigma_ignored"]
    run = kill.run_mutant(mutant, tmp_path, threads=1, timeout_s=5, gate=fake_gate)
    assert kill.kill_row(mutant, run).status == "caught"
    assert seen["env"]["PTYCHO_MUTANT"] == "gaussian_sigma_ignored"
    from conformance.scenarios import DEFAULT_GATE

    assert seen["ids"] == list(DEFAULT_GATE)  # judged by the full default gate, not hand-picked scenarios
    assert seen["run_dir"] == tmp_path / "gaussian_sigma_ignored"
    kill.run_mutant(mutant, tmp_path, threads=1, timeout_s=5, gate=fake_gate, quick=True)
    assert seen["ids"] == list(mutant.scenarios)  # --quick: the mutant's own scenarios, for iteration

    def broken_gate(ids, **kw):
        raise RuntimeError("no worker")

    run = kill.run_mutant(REGISTRY["xy_swap"], tmp_path, threads=1, timeout_s=5, gate=broken_gate)
    crashed = kill.kill_row(REGISTRY["xy_swap"], run)
    assert crashed.status == "crashed" and "no worker" in crashed.message


def test_clean_runs_must_pass_and_agree(tmp_path):
    calls: list[str] = []

    def steady(ids, **kw):
        calls.append(kw["env"]["PTYCHO_MUTANT"])
        return _result([_verdict("forward", "pass", [_check("forward/amp", True)])])

    runs = [kill.run_gate_once("", ["s1"], tmp_path / f"clean-{i}", threads=1, timeout_s=5, gate=steady)
            for i in (1, 2)]
    clean = kill.clean_result(["s1"], runs)
    assert clean.passed and clean.identical and calls == ["", ""]

    def flaky(ok: bool):
        return lambda ids, **kw: _result([_verdict("forward", "pass" if ok else "fail", [_check("forward/amp", ok)])])

    runs = [kill.run_gate_once("", ["s1"], tmp_path / "c", threads=1, timeout_s=5, gate=flaky(ok))
            for ok in (True, False)]
    clean = kill.clean_result(["s1"], runs)
    assert not clean.passed and not clean.identical and clean.differences
    assert clean.failing == ["s1/forward:forward/amp [tensorflow~pytorch]"]


def test_main_writes_the_kill_table_and_fails_on_a_survivor(tmp_path, monkeypatch):
    from conformance import runner

    def fake_run_gate(ids, **kw):
        if kw["env"]["PTYCHO_MUTANT"] == "xy_swap":
            return _result([_verdict("forward", "fail", [_check("forward/object_patches", False)])], "xy_swap")
        return _result([_verdict("forward", "pass", [_check("forward/amp", True)])])

    monkeypatch.setattr(runner, "run_gate", fake_run_gate)
    args = ["--report-dir", str(tmp_path), "--jobs", "1", "--run-root", str(tmp_path / "runs")]
    assert kill.main(["--only", "xy_swap", *args]) == 0
    doc = json.loads((tmp_path / "kill_table.json").read_text())
    assert doc["ok"] and doc["mutants"][0]["status"] == "caught" and doc["clean"]["passed"]
    table = (tmp_path / "kill_table.md").read_text()
    assert "| `xy_swap` | tensorflow | x/y swap |" in table and "✅ caught" in table
    assert kill.main(["--only", "xy_swap", "gaussian_sigma_ignored", *args]) == 1
    assert "❌ survived" in Path(tmp_path / "kill_table.md").read_text()

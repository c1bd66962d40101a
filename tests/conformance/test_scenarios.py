"""The scenario registry: coverage of the gate, validation, JSON round trip (no framework imports)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conformance import scenarios as sc
from conformance.scenarios import (
    CORE,
    DEFAULT_GATE,
    FULL,
    REGISTRY,
    STAGES,
    DataSpec,
    ExpectedFailure,
    Scenario,
    ToleranceOverride,
    make_scenario,
    stage_closure,
)
from ptycho.config.config import ModelConfig

GATE = [REGISTRY[sid] for sid in DEFAULT_GATE]


def _values(key: str) -> set:
    defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    return {s.model.get(key, defaults[key]) for s in GATE}


def test_default_gate_has_at_least_24_distinct_registered_scenarios():
    assert len(DEFAULT_GATE) >= 24
    assert len(set(DEFAULT_GATE)) == len(DEFAULT_GATE)
    assert set(DEFAULT_GATE) <= set(REGISTRY)
    assert all(REGISTRY[sid].id == sid for sid in REGISTRY)


def test_gate_covers_every_required_feature():
    assert {s.data.gridsize for s in GATE} >= {1, 2, 3}
    assert {s.data.N for s in GATE} >= {32, 64, 128}
    assert _values("object_big") == {True, False}
    assert _values("probe_big") == {True, False}
    assert _values("pad_object") == {True, False}
    assert _values("probe_mask") == {True, False}
    assert any(s.model.get("gaussian_smoothing_sigma", 0.0) > 0 for s in GATE)
    assert _values("amp_activation") == {"sigmoid", "swish", "softplus", "relu"}
    assert _values("n_filters_scale") >= {1, 2}
    assert _values("model_type") == {"pinn", "supervised"}
    assert any(s.data.offsets == "off_centre" for s in GATE)
    assert any(s.data.offsets == "off_centre" and s.data.gridsize > 1 for s in GATE)
    assert any(s.batch * s.C >= 64 for s in GATE)
    assert {stage for s in GATE for stage in s.stages} == set(STAGES)
    assert 1 <= sum("e2e" in s.stages for s in GATE) <= 2


def test_gate_scenarios_stay_small():
    for s in GATE:
        if s.data.N == 128 or s.model.get("n_filters_scale", 2) == 2:
            assert s.batch <= 2, s.id
        assert s.batch * s.C <= 72, s.id


def test_json_round_trip_is_exact_and_stable():
    for s in REGISTRY.values():
        text = s.to_json()
        back = Scenario.from_json(text)
        assert back == s and hash(back) == hash(s)
        assert back.to_json() == text
        assert json.loads(text)["id"] == s.id


def test_round_trip_keeps_overrides_and_expected_failures():
    s = make_scenario(
        "x", stages=CORE,
        tolerance_overrides=[ToleranceOverride("forward", "forward/pred_*", 1e-5, 1e-4, "summing stage",
                                               "max rel 3e-6 over 10 runs")],
        expected_failures=[ExpectedFailure("gradients", "gradients/probe.*", reason="known", strict=False,
                                           backend_pair_glob="tensorflow~*")],
    )  # fmt: skip
    assert Scenario.from_dict(json.loads(s.to_json())) == s


@pytest.mark.parametrize("field", ["reason", "evidence"])
def test_tolerance_override_without_reason_or_evidence_raises(field):
    kw = dict(stage="forward", tensor_glob="*", rtol=1e-5, atol=1e-5, reason="why", evidence="measured")
    kw[field] = "  "
    with pytest.raises(ValueError, match=field):
        ToleranceOverride(**kw)


def test_expected_failure_needs_a_reason_and_keywords():
    with pytest.raises(ValueError, match="reason"):
        ExpectedFailure("forward", "*", reason="")
    with pytest.raises(TypeError):
        ExpectedFailure("forward", "*", "*", "reason")  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown stage"):
        ExpectedFailure("warp", "*", reason="r")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stages=("forward", "warp")), "stages"),
        (dict(stages=("configure", "transplant")), "save_load"),
        (dict(model={"amp_activation": "tanh"}), "amp_activation"),
        (dict(model={"no_such_field": 1}), "unknown ModelConfig"),
        (dict(training={"no_such_key": 1}), "unknown training"),
        (dict(training={"nphotons": 1e6}), "set by the harness"),
        (dict(training={"k_steps": 0}), "k_steps"),
        (dict(expected_failures=[ExpectedFailure("e2e", "*", reason="r")]), "does not run"),
    ],
)
def test_invalid_scenarios_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_scenario("bad", **kwargs)


def test_model_and_data_must_agree():
    good = make_scenario("ok", N=32, gridsize=2)
    with pytest.raises(ValueError, match="N/gridsize"):
        Scenario(good.id, good.data, {**good.model, "gridsize": 1}, good.training, good.stages)


def test_data_spec_validation():
    with pytest.raises(ValueError, match="N"):
        DataSpec(N=48, gridsize=1, n_groups=1)
    with pytest.raises(ValueError, match="K"):
        DataSpec(N=32, gridsize=3, n_groups=1, K=4)
    with pytest.raises(ValueError, match="shift_xy"):
        DataSpec(N=32, gridsize=1, n_groups=1, offsets="off_centre", shift_xy=(5.5, 0.0))  # margin 5
    d = DataSpec(N=32, gridsize=2, n_groups=3)
    assert (d.C, d.P, d.margin) == (4, 46, 7.0)


def test_stage_closure_adds_prerequisites_the_scenario_has():
    assert stage_closure(["transplant"], FULL) == ("save_load", "transplant")
    assert stage_closure(["bundle_layout"], ["bundle_layout"]) == ("bundle_layout",)
    assert stage_closure(["forward", "configure"], FULL) == ("configure", "forward")


def test_training_config_comes_from_the_scenario():
    s = REGISTRY["pinn_mixed_loss_gs2"]
    cfg = s.training_config("inputs.npz", "out")
    assert (cfg.n_groups, cfg.neighbor_count, cfg.subsample_seed) == (s.batch, s.data.K, s.data.seed)
    assert s.loss_weights == {"nll_weight": 1.0, "mae_weight": 0.3}
    assert cfg.intensity_scale_trainable is False
    assert (s.k_steps, s.lr) == (3, 1e-3)


def test_scenarios_from_ids_names_unknown_ids():
    assert [s.id for s in sc.scenarios_from_ids(DEFAULT_GATE[:2])] == list(DEFAULT_GATE[:2])
    with pytest.raises(KeyError, match="nope"):
        sc.scenarios_from_ids(["nope"])

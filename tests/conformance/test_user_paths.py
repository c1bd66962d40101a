"""The user-path stages (data, config, workflow, inference): generated config cases, the torch bridge
mapping found by perturbation, the CLI doors' flags, the core's batch plan and the judge's checks.

No tensorflow; the torch config modules import no torch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conformance import user_paths as up
from conformance.compare import SideRecord, _config_checks, _inference_config_checks, _workflow_checks
from conformance.scenarios import DEFAULT_GATE, REGISTRY, USER
from ptycho.config.config import DEFAULT_ONLY_FIELDS, InferenceConfig, ModelConfig, TrainingConfig
from ptycho.training_plan import SCHEDULERS
from ptycho_torch import config_bridge
from ptycho_torch import config_params as cp

TORCH_CLASSES = (cp.DataConfig, cp.ModelConfig, cp.TrainingConfig)


# --------------------------------------------------------------------------- generated cases
def test_every_config_field_of_the_case_differs_from_its_default():
    case = up.config_case(32, 2)
    assert up.check_case(case) == []
    every = {f.name for f in dataclasses.fields(ModelConfig)} | {f.name for f in dataclasses.fields(TrainingConfig)}
    # n_images: the deprecated alias of n_groups; default-only fields have no other valid value
    default_only = DEFAULT_ONLY_FIELDS[ModelConfig] | DEFAULT_ONLY_FIELDS[TrainingConfig]
    assert default_only  # the exclusion below is not vacuous
    assert set(case) == every - {"model", "n_images"} - default_only
    TrainingConfig(model=ModelConfig(N=32), **{k: v for k, v in case.items()
                                                if k not in {f.name for f in dataclasses.fields(ModelConfig)}})


def test_every_inference_case_field_differs_from_its_default():
    defaults = {f.name: f.default for f in dataclasses.fields(InferenceConfig)}
    case = up.inference_case()
    assert set(case) == set(up.INFERENCE_CASE_FIELDS)
    assert [k for k, v in case.items() if v == defaults[k] and type(v) is type(defaults[k])] == []


def test_a_case_with_a_default_value_is_reported():
    case = up.config_case(32, 2)
    case["probe_scale"] = ModelConfig().probe_scale
    assert up.check_case(case) == ["probe_scale"]


def test_the_bridge_carries_every_torch_field_to_its_documented_canonical_field():
    """Found by perturbation: dropping a field in config_bridge empties its set here."""
    found = up.bridged_fields(config_bridge.to_model_config, config_bridge.to_training_config, TORCH_CLASSES)
    expected = {name: {up.TORCH_RENAMED.get(name, name)} for name in found}
    expected["learning_rate"] = set()  # the execution config's, never params.cfg
    assert found == expected


def test_a_dropped_bridge_field_is_found(monkeypatch):
    real = config_bridge.to_model_config

    def dropping(data, model, overrides=None):
        cfg = real(data, model, overrides)
        return dataclasses.replace(cfg, probe_scale=ModelConfig().probe_scale)

    found = up.bridged_fields(dropping, config_bridge.to_training_config, TORCH_CLASSES)
    assert found["probe_scale"] == set()


def test_torch_side_values_cover_every_torch_config_field():
    case = up.config_case(32, 2)
    kws = up.torch_side_values(case, TORCH_CLASSES)
    for cls, kw in zip(TORCH_CLASSES, kws, strict=True):
        assert set(kw) == {f.name for f in dataclasses.fields(cls)} - {"learning_rate"}
        cls(**kw)


def test_ptycho_train_flags_parse_back_to_the_case():
    from ptycho.cli.train import build_parser

    case = up.config_case(32, 2, "tensorflow")
    args = build_parser().parse_args(up.ptycho_train_argv(up.door_case("ptycho_train", case), "tensorflow"))
    for flag, name in up.PTYCHO_TRAIN_FLAGS.items():
        assert getattr(args, flag.lstrip("-")) == case[name], flag


def test_torch_train_flags_parse_back_to_the_case():
    pytest.importorskip("torch")
    from ptycho_torch.train import build_parser

    case = up.config_case(32, 2)
    args = build_parser().parse_args(up.torch_train_argv(up.door_case("torch_train", case)))
    for flag, name in up.TORCH_TRAIN_FLAGS.items():  # one vocabulary: every flag's dest is its own name
        assert getattr(args, flag.lstrip("-")) == case[name], flag


def test_door_config_keeps_only_what_the_door_can_say():
    case = up.config_case(32, 2)
    cfg = up.door_config("ptycho_train", case, "tensorflow")
    assert cfg.model.gridsize == 2 and cfg.batch_size == case["batch_size"]
    assert cfg.model.probe_scale == ModelConfig().probe_scale  # no such flag: the default
    assert cfg.backend == "tensorflow"


# --------------------------------------------------------------------------- the core's batch plan
def test_reference_batches_follow_the_plan_with_a_last_partial_batch(tmp_path):
    from ptycho.simulate import simulate_dataset
    from ptycho.training_plan import epoch_order, split_train_val

    raw = simulate_dataset(32, 30, seed=3, scan_spacing=3.0)
    raw.to_file(tmp_path / "train.npz")
    raw.to_file(tmp_path / "test.npz")
    cfg = TrainingConfig(model=ModelConfig(N=32, gridsize=2), n_groups=23, batch_size=8, nepochs=3,
                         neighbor_count=7, subsample_seed=5)
    out = up.reference_batches(cfg, tmp_path / "train.npz", tmp_path / "test.npz")
    assert sorted(out) == ["infer", "train/e0", "train/e1", "val"]
    n_train = len(split_train_val(23)[0])
    assert [len(x) for x, _ in out["train/e0"]] == [8, 8, n_train - 16]
    assert [len(x) for x, _ in out["infer"]] == [8, 8, 7]
    assert out["train/e0"][0][0].shape[1:] == (32, 32, 4) and out["train/e0"][0][1].shape[1:] == (1, 2, 4)
    e0 = np.concatenate([x for x, _ in out["train/e0"]])
    e1 = np.concatenate([x for x, _ in out["train/e1"]])
    assert not np.array_equal(e0, e1)  # reshuffled every epoch ...
    inv0 = np.argsort(epoch_order(n_train, seed=5, epoch=0))
    inv1 = np.argsort(epoch_order(n_train, seed=5, epoch=1))
    np.testing.assert_array_equal(e0[inv0], e1[inv1])  # ... the same training groups in the plan's order


def test_put_batches_records_order_content_and_sizes():
    got = {}
    x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    p = np.zeros((2, 1, 2, 1), np.float32)
    up.put_batches(got.__setitem__, "train/e0", [(x, p), (x[:1], p[:1])])
    assert got["train/e0/sizes"].tolist() == [2, 1] and got["train/e0/x_scaled"].shape == (3, 4, 4, 1)
    up.put_batches(got.__setitem__, "infer", [])  # a pipeline that yields nothing is recorded as empty
    assert got["infer/sizes"].shape == (0,) and got["infer/x_scaled"].shape == (0,)


# --------------------------------------------------------------------------- scenarios
def test_the_gate_runs_the_user_stages_at_gridsize_1_2_and_3_with_every_non_default_scheduler():
    gate = [REGISTRY[s] for s in DEFAULT_GATE]
    for stage in USER:
        assert any(stage in s.stages for s in gate), stage
    assert {s.data.gridsize for s in gate if "data" in s.stages} == {1, 2, 3}
    assert {s.data.gridsize for s in gate if "inference" in s.stages} >= {2, 3}
    assert {s.data.gridsize for s in gate if "e2e" in s.stages} >= {1, 2}
    schedulers = {s.training_config().scheduler for s in gate if "workflow" in s.stages}
    assert schedulers == set(SCHEDULERS) - {"Default"}
    flags = [(s.training_config().intensity_scale_trainable, s.training_config().probe_trainable)
             for s in gate if "workflow" in s.stages]
    assert (False, True) in flags


# --------------------------------------------------------------------------- the judge
def _entry(value, type_name: str) -> dict:
    return {"type": type_name, "value": value, "shape": None, "dtype": None}


def _side(name: str, points: dict[str, dict]) -> SideRecord:
    rec = SideRecord(name)
    rec.params_cfg = {p: {k: _entry(v, type(v).__name__) for k, v in keys.items()} for p, keys in points.items()}
    return rec


def _config_sides(**torch_changes):
    snap = {"N": 32, "gridsize": 2, "probe_scale": 2.0}
    doors = list(up.DOORS)
    ref = _side("reference", {f"config/{d}": snap for d in doors})
    tf = _side("tensorflow", {f"config/{d}": snap for d in doors if "tensorflow" in up.DOORS[d][0]})
    pt_points = {f"config/{d}": snap for d in doors}
    for door, change in torch_changes.items():
        pt_points[f"config/{door}"] = {**snap, **change}
    return {"tensorflow": tf, "pytorch": _side("pytorch", pt_points), "reference": ref}


def test_config_checks_pass_identical_doors_and_name_the_door_that_drops_a_field():
    assert all(c.passed for c in _config_checks(_config_sides(), ""))
    bad = [c for c in _config_checks(_config_sides(torch_configs={"probe_scale": 4.0}), "") if not c.passed]
    assert [(c.tensor, c.pair) for c in bad] == [("config/torch_configs", "pytorch~reference")]
    assert "'probe_scale': 4.0 vs 2.0" in bad[0].message


def test_config_checks_compare_types():
    bad = [c for c in _config_checks(_config_sides(torch_train={"N": 32.0}), "") if not c.passed]
    assert bad and "type float vs int" in bad[0].message


def test_workflow_trainable_check_names_frozen_and_extra_parameters():
    sc = REGISTRY["e2e_gs2_n32"]
    from ptycho.network_spec import network_spec_from_config

    names = network_spec_from_config(sc.model_config()).param_names()
    good = sorted(n for n in names if n != "intensity_scale.log_scale")  # frozen scale, trainable probe
    sides = {}
    for name, trainable in (("tensorflow", good), ("pytorch", [*good[:-1], "intensity_scale.log_scale"])):
        rec = SideRecord(name)
        rec.stages = {"workflow": {"status": "ok", "values": {"trainable": trainable}}}
        sides[name] = rec
    checks = {c.pair: c for c in _workflow_checks(sc, sides, "")}
    assert checks["tensorflow~spec"].passed
    msg = checks["pytorch~spec"].message
    assert not checks["pytorch~spec"].passed and "is not trained" in msg and "should be frozen" in msg


def test_inference_config_checks_compare_the_loaded_params_with_the_saved_ones():
    saved = {"N": 32, "gridsize": 2}
    sides = {name: _side(name, {"workflow/saved": saved, "inference/loaded": saved, "inference/payload": saved})
             for name in ("tensorflow", "pytorch")}
    sides["reference"] = _side("reference", {"inference/payload": saved})
    assert all(c.passed for c in _inference_config_checks(sides, ""))
    sides["pytorch"] = _side("pytorch", {"workflow/saved": saved, "inference/loaded": {"N": 32, "gridsize": 1},
                                         "inference/payload": saved})
    bad = [c for c in _inference_config_checks(sides, "") if not c.passed]
    assert [c.pair for c in bad] == ["pytorch:loaded~pytorch:saved"] and "'gridsize': 1 vs 2" in bad[0].message

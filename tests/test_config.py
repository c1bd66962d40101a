"""Tests of ptycho.config.config: dataclass defaults, validation, and the bridge to params.cfg."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptycho import conventions, params
from ptycho.config.config import (
    KEY_MAPPINGS,
    InferenceConfig,
    ModelConfig,
    PyTorchExecutionConfig,
    TrainingConfig,
    dataclass_to_legacy_dict,
    update_legacy_dict,
    validate_execution_config,
    validate_inference_config,
    validate_model_config,
    validate_training_config,
)
from ptycho.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "config_bridge" / "baseline_params.json"
SPEC = REPO / "specs" / "config.md"


def _inference(**kw: Any) -> InferenceConfig:
    kw.setdefault("model", ModelConfig())
    return InferenceConfig(model_path=Path("model_dir"), test_data_file=Path("test.npz"), **kw)


# --------------------------------------------------------------------------- defaults
# Upstream defaults (upstream-tf.md section 2), written out independently of the code.
MODEL_DEFAULTS = {
    "N": 64, "gridsize": 1, "n_filters_scale": 2, "model_type": "pinn", "architecture": "cnn",
    "fno_modes": 12, "fno_width": 32, "fno_blocks": 4, "fno_cnn_blocks": 2, "learned_input_channels": 1,
    "max_hidden_channels": None, "resnet_width": None, "fno_input_transform": "none",
    "generator_output_mode": "real_imag", "amp_activation": "sigmoid", "object_big": True,
    "probe_big": True, "probe_mask": False, "probe_mask_sigma": 1.0, "probe_mask_diameter": None,
    "pad_object": True, "probe_scale": 4.0, "gaussian_smoothing_sigma": 0.0,
}
TRAINING_DEFAULTS = {
    "train_data_file": None, "test_data_file": None, "batch_size": 16, "nepochs": 50, "mae_weight": 0.0,
    "nll_weight": 1.0, "realspace_mae_weight": 0.0, "realspace_weight": 0.0, "nphotons": 1e9,
    "n_groups": 512, "n_images": None, "n_subsample": None, "subsample_seed": None, "neighbor_count": 4,
    "enable_oversampling": False, "neighbor_pool_size": None, "positions_provided": True,
    "probe_trainable": False, "intensity_scale_trainable": True, "output_dir": Path("training_outputs"),
    "sequential_sampling": False, "backend": "tensorflow", "torch_loss_mode": "poisson",
    "torch_mae_pred_l2_match_target": False, "gradient_clip_val": None, "gradient_clip_algorithm": "norm",
    "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999,
    "scheduler": "Default", "lr_warmup_epochs": 0, "lr_min_ratio": 0.1, "plateau_factor": 0.5,
    "plateau_patience": 2, "plateau_min_lr": 5e-5, "plateau_threshold": 0.0,
}
INFERENCE_DEFAULTS = {
    "n_groups": None, "n_images": None, "n_subsample": None, "subsample_seed": None, "neighbor_count": 4,
    "enable_oversampling": False, "neighbor_pool_size": None, "debug": False,
    "output_dir": Path("inference_outputs"), "backend": "tensorflow",
}
EXECUTION_DEFAULTS = {
    "accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "deterministic": True,
    "precision": "32-true",
    "gradient_clip_val": None, "gradient_clip_algorithm": "norm", "accum_steps": 1, "num_workers": 0,
    "pin_memory": False, "persistent_workers": False, "prefetch_factor": None, "learning_rate": 1e-3,
    "scheduler": "Default", "enable_progress_bar": False, "enable_checkpointing": True,
    "checkpoint_save_top_k": 1, "checkpoint_monitor_metric": "val_loss", "checkpoint_mode": "min",
    "early_stop_patience": 100, "logger_backend": "csv", "recon_log_every_n_epochs": None,
    "recon_log_num_patches": 4, "recon_log_fixed_indices": None, "recon_log_stitch": False,
    "recon_log_max_stitch_samples": None, "ffno_encoder_blocks": 24, "ffno_encoder_modes": 12,
    "ffno_encoder_share_weights": True, "ffno_encoder_gate_init": 0.1, "ffno_encoder_norm": "instance",
    "ffno_encoder_mlp_ratio": 2.0, "spectral_bottleneck_blocks": 6, "spectral_bottleneck_modes": 12,
    "spectral_bottleneck_share_weights": True, "spectral_bottleneck_gate_init": 0.1,
    "spectral_bottleneck_gate_mode": "shared", "inference_batch_size": None, "middle_trim": 0,
    "pad_eval": False,
}


@pytest.mark.parametrize(
    "make, expected",
    [
        (ModelConfig, MODEL_DEFAULTS),
        (lambda: TrainingConfig(model=ModelConfig()), TRAINING_DEFAULTS),
        (_inference, INFERENCE_DEFAULTS),
        (PyTorchExecutionConfig, EXECUTION_DEFAULTS),
    ],
    ids=["model", "training", "inference", "execution"],
)
def test_field_defaults(make, expected):
    obj = make()
    names = {f.name for f in dataclasses.fields(obj)} - {"model", "model_path", "test_data_file"}
    if isinstance(obj, TrainingConfig):
        names.add("test_data_file")
    assert names == set(expected)
    for name, value in expected.items():
        got = getattr(obj, name)
        assert got == value and type(got) is type(value), name


def test_backend_field_defaults_to_tensorflow_and_accepts_pytorch():
    assert TrainingConfig(model=ModelConfig(), backend="pytorch").backend == "pytorch"
    assert _inference(backend="pytorch").backend == "pytorch"
    with pytest.raises(ConfigError, match="backend='jax'"):
        TrainingConfig(model=ModelConfig(), backend="jax")


def test_configs_are_mutable_not_frozen():
    m = ModelConfig()
    m.gridsize = 2
    t = TrainingConfig(model=m)
    t.nepochs = 3
    assert (t.model.gridsize, t.nepochs) == (2, 3)


# --------------------------------------------------------------------------- per-field validation
# One invalid value for every field; a test below checks the table covers every field.
MODEL_BAD = {
    "N": 48, "gridsize": 0, "n_filters_scale": -1, "model_type": "gan", "architecture": "unet",
    "fno_modes": 0, "fno_width": 1.5, "fno_blocks": "4", "fno_cnn_blocks": -1, "learned_input_channels": 0,
    "max_hidden_channels": 0, "resnet_width": -3, "fno_input_transform": "exp",
    "generator_output_mode": "rgb", "amp_activation": "tanh", "object_big": 1, "probe_big": "yes",
    "probe_mask": None, "probe_mask_sigma": -0.1, "probe_mask_diameter": 0.0, "pad_object": 0,
    "probe_scale": 0.0, "gaussian_smoothing_sigma": float("nan"),
}
TRAINING_BAD = {
    "model": {"N": 64}, "train_data_file": 3, "test_data_file": b"x.npz", "batch_size": 0, "nepochs": -5,
    "mae_weight": 1.5, "nll_weight": -0.1, "realspace_mae_weight": 2.0, "realspace_weight": float("inf"),
    "nphotons": 0.0, "n_groups": 0, "n_images": -1, "n_subsample": 0, "subsample_seed": -1,
    "neighbor_count": 0, "enable_oversampling": "no", "neighbor_pool_size": 0, "positions_provided": 1,
    "probe_trainable": "False", "intensity_scale_trainable": None, "output_dir": None,
    "sequential_sampling": 0.0, "backend": "jax", "torch_loss_mode": "mse",
    "torch_mae_pred_l2_match_target": "x", "gradient_clip_val": -1.0, "gradient_clip_algorithm": "l1",
    "optimizer": "rmsprop", "momentum": 1.5, "weight_decay": -1e-4, "adam_beta1": 1.0, "adam_beta2": -0.1,
    "scheduler": "Cosine", "lr_warmup_epochs": -1, "lr_min_ratio": 1.1, "plateau_factor": 1.0,
    "plateau_patience": -1, "plateau_min_lr": -1.0, "plateau_threshold": -0.5,
}
INFERENCE_BAD = {
    "model": None, "model_path": None, "test_data_file": None, "n_groups": 0, "n_images": 0,
    "n_subsample": -2, "subsample_seed": 1.5, "neighbor_count": -4, "enable_oversampling": 1,
    "neighbor_pool_size": 0, "debug": "true", "output_dir": 5, "backend": "TensorFlow",
}
EXECUTION_BAD = {
    "accelerator": "tpu", "devices": 0, "num_nodes": 0, "strategy": "", "deterministic": "yes", "precision": "64-true",
    "gradient_clip_val": -0.5, "gradient_clip_algorithm": "max", "accum_steps": 0, "num_workers": -1,
    "pin_memory": 1, "persistent_workers": "no", "prefetch_factor": 0, "learning_rate": 0.0,
    "scheduler": "Cyclic", "enable_progress_bar": None, "enable_checkpointing": 0,
    "checkpoint_save_top_k": -1, "checkpoint_monitor_metric": 5, "checkpoint_mode": "avg",
    "early_stop_patience": 0, "logger_backend": "wandb", "recon_log_every_n_epochs": 0,
    "recon_log_num_patches": 0, "recon_log_fixed_indices": [0, -1], "recon_log_stitch": "y",
    "recon_log_max_stitch_samples": 0, "ffno_encoder_blocks": 0, "ffno_encoder_modes": -1,
    "ffno_encoder_share_weights": 1, "ffno_encoder_gate_init": 0.0, "ffno_encoder_norm": "",
    "ffno_encoder_mlp_ratio": float("nan"), "spectral_bottleneck_blocks": 0, "spectral_bottleneck_modes": 0,
    "spectral_bottleneck_share_weights": None, "spectral_bottleneck_gate_init": float("inf"),
    "spectral_bottleneck_gate_mode": "per_layer", "inference_batch_size": 0, "middle_trim": -1,
    "pad_eval": "no",
}


def _build(cls: type, **kw: Any) -> Any:
    if cls is TrainingConfig:
        kw.setdefault("model", ModelConfig())
    if cls is InferenceConfig:
        kw.setdefault("model", ModelConfig())
        kw.setdefault("model_path", Path("m"))
        kw.setdefault("test_data_file", Path("t.npz"))
    return cls(**kw)


BAD_CASES = [
    (cls, name, value)
    for cls, table in [
        (ModelConfig, MODEL_BAD),
        (TrainingConfig, TRAINING_BAD),
        (InferenceConfig, INFERENCE_BAD),
        (PyTorchExecutionConfig, EXECUTION_BAD),
    ]
    for name, value in table.items()
]


@pytest.mark.parametrize("cls, table", [
    (ModelConfig, MODEL_BAD), (TrainingConfig, TRAINING_BAD),
    (InferenceConfig, INFERENCE_BAD), (PyTorchExecutionConfig, EXECUTION_BAD),
])
def test_bad_value_table_covers_every_field(cls, table):
    assert set(table) == {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls, name, value", BAD_CASES, ids=[f"{c.__name__}.{n}" for c, n, _ in BAD_CASES])
def test_invalid_field_value_raises_config_error_naming_field_value_and_allowed(cls, name, value):
    with pytest.raises(ConfigError) as info:
        _build(cls, **{name: value})
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == name
    assert err.allowed
    message = str(err)
    assert message.startswith(f"{name}={value!r} is invalid: expected ")
    assert err.allowed in message


def test_tpu_accelerator_message_says_unsupported():
    with pytest.raises(ConfigError, match="TPU execution is not supported"):
        PyTorchExecutionConfig(accelerator="tpu")


@pytest.mark.parametrize("accelerator", ["auto", "cpu", "gpu", "cuda", "mps"])
def test_accelerator_values_accepted_and_auto_left_unresolved(accelerator):
    assert PyTorchExecutionConfig(accelerator=accelerator).accelerator == accelerator


def test_execution_config_cross_field_rules():
    with pytest.raises(ConfigError, match="persistent_workers"):
        PyTorchExecutionConfig(persistent_workers=True)
    with pytest.raises(ConfigError, match="prefetch_factor"):
        PyTorchExecutionConfig(prefetch_factor=2)
    ok = PyTorchExecutionConfig(num_workers=2, persistent_workers=True, prefetch_factor=2,
                                devices="auto", deterministic="warn", logger_backend=None,
                                precision="bf16-mixed")
    validate_execution_config(ok)
    ok.num_workers = 0
    with pytest.raises(ConfigError, match="persistent_workers"):
        validate_execution_config(ok)


@pytest.mark.parametrize("N", conventions.SUPPORTED_N)
def test_every_supported_N_is_accepted(N):
    m = ModelConfig(N=N)
    validate_model_config(m)
    assert m.N == N


@pytest.mark.parametrize("N", [48, 512, -64, 64.0, True, "64", None])
def test_unsupported_N_is_rejected_listing_the_allowed_values(N):
    with pytest.raises(ConfigError, match=r"expected one of 32, 64, 128, 256"):
        ModelConfig(N=N)


def test_numeric_values_and_paths_are_normalised_at_construction():
    m = ModelConfig(N=np.int64(128), gridsize=np.int32(2), probe_scale=2, object_big=np.bool_(False))
    assert (m.N, m.gridsize, m.probe_scale, m.object_big) == (128, 2, 2.0, False)
    assert (type(m.N), type(m.gridsize), type(m.probe_scale), type(m.object_big)) == (int, int, float, bool)
    t = TrainingConfig(model=m, train_data_file="a/train.npz", output_dir="out", nphotons=np.float32(1e6))
    assert t.train_data_file == Path("a/train.npz") and t.output_dir == Path("out")
    assert type(t.nphotons) is float


# --------------------------------------------------------------------------- n_groups / n_images
def test_n_groups_defaults_to_512_for_training_and_none_for_inference():
    assert TrainingConfig(model=ModelConfig()).n_groups == 512
    assert _inference().n_groups is None


@pytest.mark.parametrize("make", [
    lambda **kw: TrainingConfig(model=ModelConfig(), **kw),
    lambda **kw: _inference(**kw),
], ids=["training", "inference"])
def test_n_images_is_copied_into_n_groups_with_a_deprecation_warning(make):
    with pytest.warns(DeprecationWarning, match="n_images is deprecated"):
        c = make(n_images=100)
    assert c.n_groups == 100
    with pytest.warns(DeprecationWarning):
        assert make(n_images=7, n_groups=7).n_groups == 7
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match="n_images=7"):
        make(n_images=7, n_groups=8)


def test_no_deprecation_warning_without_n_images():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainingConfig(model=ModelConfig(), n_groups=64)


# --------------------------------------------------------------------------- Ptychodus usage
def test_ptychodus_placeholder_assign_pickle_then_bridge():
    model = ModelConfig(N=0, gridsize=2, probe_scale=4.0)  # placeholder: N not known yet
    training = TrainingConfig(model=model, train_data_file=Path("scan.npz"), output_dir=Path("out"))
    with pytest.raises(ConfigError, match=r"N=0 is invalid.*placeholder"):
        validate_model_config(training.model)

    training.model.N = 64  # Ptychodus assigns N on the instance once it knows the probe size
    clone = pickle.loads(pickle.dumps(training))  # and ships the config to a child process
    assert clone == training and clone is not training
    validate_training_config(clone)

    params.cfg["N"] = 128
    update_legacy_dict(params.cfg, clone)
    assert params.cfg["N"] == 64
    assert params.cfg["gridsize"] == 2
    assert params.get_padded_size() == 64 + 4 + 10


def test_placeholder_N_is_not_written_to_cfg():
    params.cfg["N"] = 128
    update_legacy_dict(params.cfg, TrainingConfig(model=ModelConfig(N=0, gridsize=3)))
    assert params.cfg["N"] == 128
    assert params.cfg["gridsize"] == 3


@pytest.mark.parametrize("obj", [
    ModelConfig(), TrainingConfig(model=ModelConfig()), _inference(), PyTorchExecutionConfig(),
], ids=["model", "training", "inference", "execution"])
def test_every_config_pickles(obj):
    assert pickle.loads(pickle.dumps(obj)) == obj


# --------------------------------------------------------------------------- legacy bridge
def test_update_legacy_dict_training_config_key_by_key():
    config = TrainingConfig(
        model=ModelConfig(N=128, gridsize=2, n_filters_scale=1, object_big=False, probe_big=True,
                          probe_mask=True, pad_object=False, probe_scale=2.0, amp_activation="swish",
                          gaussian_smoothing_sigma=0.5),
        train_data_file=Path("/data/train.npz"),
        test_data_file=Path("/data/test.npz"),
        batch_size=8,
        nepochs=7,
        nphotons=1e6,
        n_groups=300,
        neighbor_count=7,
        positions_provided=False,
        probe_trainable=True,
        intensity_scale_trainable=False,
        output_dir=Path("/runs/out"),
        backend="pytorch",
        mae_weight=0.2,
        nll_weight=0.8,
    )
    cfg: dict[str, Any] = {}
    update_legacy_dict(cfg, config)
    expected = {
        "N": 128,
        "gridsize": 2,
        "n_filters_scale": 1,
        "object.big": False,
        "probe.big": True,
        "probe.mask": True,
        "pad_object": False,
        "probe_scale": 2.0,
        "amp_activation": "swish",
        "gaussian_smoothing_sigma": 0.5,
        "probe.trainable": True,
        "intensity_scale.trainable": False,
        "positions.provided": False,
        "output_prefix": "/runs/out",
        "train_data_file_path": "/data/train.npz",
        "test_data_file_path": "/data/test.npz",
        "batch_size": 8,
        "nepochs": 7,
        "nphotons": 1e6,
        "n_groups": 300,
        "neighbor_count": 7,
        "backend": "pytorch",
        "mae_weight": 0.2,
        "nll_weight": 0.8,
        "model_type": "pinn",
    }
    for key, value in expected.items():
        assert key in cfg, key
        assert cfg[key] == value and type(cfg[key]) is type(value), key
    # The modern names of mapped fields never appear.
    assert not set(KEY_MAPPINGS) & set(cfg)


def test_legacy_dict_keys_are_all_fields_flattened_and_renamed():
    config = TrainingConfig(model=ModelConfig())
    d = dataclass_to_legacy_dict(config)
    names = [f.name for f in dataclasses.fields(TrainingConfig) if f.name != "model"]
    names += [f.name for f in dataclasses.fields(ModelConfig)]
    assert set(d) == {KEY_MAPPINGS.get(n, n) for n in names}
    assert not any(isinstance(v, Path) for v in d.values())
    inf = dataclass_to_legacy_dict(_inference())
    assert inf["model_path"] == "model_dir" and inf["test_data_file_path"] == "test.npz"
    assert inf["output_prefix"] == "inference_outputs"
    assert dataclass_to_legacy_dict(ModelConfig(object_big=False))["object.big"] is False


def test_key_mappings_are_upstreams():
    assert KEY_MAPPINGS == {
        "object_big": "object.big", "probe_big": "probe.big", "probe_mask": "probe.mask",
        "probe_trainable": "probe.trainable", "intensity_scale_trainable": "intensity_scale.trainable",
        "positions_provided": "positions.provided", "output_dir": "output_prefix",
        "train_data_file": "train_data_file_path", "test_data_file": "test_data_file_path",
    }


def test_none_values_are_skipped_and_keep_existing_entries():
    cfg = {"n_subsample": 77, "train_data_file_path": "/old.npz", "gradient_clip_val": 1.0}
    update_legacy_dict(cfg, TrainingConfig(model=ModelConfig()))
    assert cfg["n_subsample"] == 77
    assert cfg["train_data_file_path"] == "/old.npz"
    assert cfg["gradient_clip_val"] == 1.0
    assert None not in cfg.values()


@pytest.mark.parametrize("bad", [PyTorchExecutionConfig(), {"N": 64}, None, object()],
                         ids=["execution", "dict", "none", "object"])
def test_update_legacy_dict_rejects_execution_config_and_non_configs(bad):
    cfg: dict[str, Any] = {}
    with pytest.raises(TypeError):
        update_legacy_dict(cfg, bad)
    with pytest.raises(TypeError):
        dataclass_to_legacy_dict(bad)
    assert cfg == {}


def test_execution_config_message_says_it_never_reaches_params_cfg():
    with pytest.raises(TypeError, match="never reaches params.cfg"):
        update_legacy_dict(params.cfg, PyTorchExecutionConfig())


def test_invalid_value_assigned_after_construction_is_caught_before_writing():
    config = TrainingConfig(model=ModelConfig())
    config.model.gridsize = -1
    before = params.snapshot()
    with pytest.raises(ConfigError, match="gridsize=-1"):
        update_legacy_dict(params.cfg, config)
    assert params.cfg == before


def test_params_cfg_matches_upstream_baseline_fixture():
    """Training then inference update, as upstream's test_params_cfg_matches_baseline."""
    baseline = json.loads(FIXTURE.read_text())
    assert len(baseline) == 31
    model = ModelConfig(N=128, gridsize=3, model_type="pinn", n_filters_scale=2, amp_activation="swish",
                        object_big=False, probe_big=False, probe_mask=True, pad_object=False,
                        probe_scale=2.0, gaussian_smoothing_sigma=0.5)
    training = TrainingConfig(
        model=model, train_data_file=Path("/canonical/baseline/train_data.npz"),
        test_data_file=Path("/canonical/baseline/test_data.npz"), n_groups=1024, n_subsample=2048,
        subsample_seed=42, output_dir=Path("/canonical/baseline/training_outputs"), batch_size=32,
        nepochs=100, mae_weight=0.3, nll_weight=0.7, realspace_mae_weight=0.05, realspace_weight=0.1,
        positions_provided=False, probe_trainable=True, intensity_scale_trainable=True,
        sequential_sampling=True, nphotons=5e8, neighbor_count=6, backend="pytorch",
    )
    inference = InferenceConfig(
        model=model, model_path=Path("/canonical/baseline/model_directory"),
        test_data_file=Path("/canonical/baseline/inference_data.npz"), n_groups=512, n_subsample=1024,
        subsample_seed=99, output_dir=Path("/canonical/baseline/inference_outputs"), debug=True,
        neighbor_count=6, backend="pytorch",
    )
    params.cfg.clear()
    update_legacy_dict(params.cfg, training)
    update_legacy_dict(params.cfg, inference)
    mismatches = [
        f"{key}: cfg={params.cfg.get(key, '<missing>')!r} baseline={value!r}"
        for key, value in baseline.items()
        if key not in params.cfg or params.cfg[key] != value or type(params.cfg[key]) is not type(value)
    ]
    assert not mismatches, mismatches


# --------------------------------------------------------------------------- validation at use
def test_validate_model_config_rejects_unimplemented_architecture():
    m = ModelConfig(architecture="fno")  # accepted at construction for upstream compatibility
    with pytest.raises(ConfigError, match="architecture='fno'.*'cnn'"):
        validate_model_config(m)


def test_validate_functions_recheck_fields_assigned_after_construction():
    m = ModelConfig()
    m.probe_scale = -1.0
    with pytest.raises(ConfigError, match="probe_scale=-1.0"):
        validate_model_config(m)
    t = TrainingConfig(model=ModelConfig())
    t.nphotons = 0
    with pytest.raises(ConfigError, match="nphotons=0"):
        validate_training_config(t)


@pytest.mark.parametrize("batch_size, ok", [(1, True), (16, True), (64, True), (24, False), (3, False)])
def test_validate_training_config_requires_power_of_two_batch(batch_size, ok):
    t = TrainingConfig(model=ModelConfig(), batch_size=batch_size)
    if ok:
        validate_training_config(t)
    else:
        with pytest.raises(ConfigError, match="power of 2"):
            validate_training_config(t)


@pytest.mark.parametrize("fn", [validate_model_config, validate_training_config,
                                validate_inference_config, validate_execution_config])
def test_validate_functions_reject_the_wrong_type(fn):
    with pytest.raises(TypeError):
        fn(object())


def test_validate_inference_config_requires_the_model_bundle(tmp_path):
    config = _inference()
    config.model_path = tmp_path
    with pytest.raises(ConfigError) as info:
        validate_inference_config(config)
    assert info.value.field == "model_path"
    assert "wts.h5.zip" in str(info.value) and "Fix:" in str(info.value)

    (tmp_path / "wts.h5.zip").write_bytes(b"PK")
    validate_inference_config(config)

    config.model_path = tmp_path / "wts.h5"  # upstream accepts the stem of the archive
    validate_inference_config(config)
    config.model_path = tmp_path / "wts.h5.zip"
    validate_inference_config(config)
    config.model_path = tmp_path / "missing"
    with pytest.raises(ConfigError, match="model_path="):
        validate_inference_config(config)


def test_validate_inference_config_rejects_placeholder_N(tmp_path):
    (tmp_path / "wts.h5.zip").write_bytes(b"PK")
    config = InferenceConfig(model=ModelConfig(N=0), model_path=tmp_path, test_data_file=Path("t.npz"))
    with pytest.raises(ConfigError, match="placeholder"):
        validate_inference_config(config)


# --------------------------------------------------------------------------- spec agreement
def _spec_rows(section: str) -> dict[str, list[str]]:
    """Table rows ``| `name` | ... |`` of the '## section' of specs/config.md, by name."""
    text = SPEC.read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"section '## {section}' missing from {SPEC}"
    rows = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if line.startswith("| `") and len(cells) >= 3:
            rows[cells[0].strip("`")] = cells
    return rows


def _fmt(value: Any) -> str:
    return f"`Path({str(value)!r})`" if isinstance(value, Path) else f"`{value!r}`"


@pytest.mark.parametrize("section, obj, required", [
    ("ModelConfig", ModelConfig(), ()),
    ("TrainingConfig", TrainingConfig(model=ModelConfig()), ("model",)),
    ("InferenceConfig", _inference(), ("model", "model_path", "test_data_file")),
    ("PyTorchExecutionConfig", PyTorchExecutionConfig(), ()),
])
def test_spec_lists_every_field_with_its_default_and_legacy_key(section, obj, required):
    rows = _spec_rows(section)
    names = [f.name for f in dataclasses.fields(obj)]
    assert set(rows) == set(names)
    for name in names:
        cells = rows[name]
        default = "required" if name in required else _fmt(getattr(obj, name))
        assert cells[2] == default, (name, cells[2], default)
        if not isinstance(obj, PyTorchExecutionConfig) and name != "model":
            assert cells[4] == f"`{KEY_MAPPINGS.get(name, name)}`", name


def test_spec_lists_every_legacy_only_key_with_its_default():
    rows = _spec_rows("Legacy-only keys")
    assert set(rows) == set(params.LEGACY_ONLY_DEFAULTS)
    for key, value in params.LEGACY_ONLY_DEFAULTS.items():
        assert rows[key][1] == _fmt(value), key


def test_spec_mentions_every_runtime_and_derived_key():
    text = SPEC.read_text()
    for key in params.RUNTIME_KEYS + params.DERIVED_KEYS:
        assert f"`{key}`" in text, key


# --------------------------------------------------------------------------- no silently ignored settings
# Fields that construct (upstream configs carry them) but that no backend implements: every non-default
# value is a ConfigError naming the field (specs/config.md, "Validation").
DEFAULT_ONLY = [
    (TrainingConfig, "optimizer", "sgd"), (TrainingConfig, "optimizer", "adamw"),
    (TrainingConfig, "momentum", 0.5), (TrainingConfig, "weight_decay", 1e-4),
    (TrainingConfig, "adam_beta1", 0.8), (TrainingConfig, "adam_beta2", 0.99),
    (PyTorchExecutionConfig, "recon_log_every_n_epochs", 5), (PyTorchExecutionConfig, "recon_log_num_patches", 8),
    (PyTorchExecutionConfig, "recon_log_fixed_indices", [0, 1]), (PyTorchExecutionConfig, "recon_log_stitch", True),
    (PyTorchExecutionConfig, "recon_log_max_stitch_samples", 10),
    (PyTorchExecutionConfig, "ffno_encoder_blocks", 4), (PyTorchExecutionConfig, "spectral_bottleneck_gate_mode",
                                                         "per_block"),
    (PyTorchExecutionConfig, "middle_trim", 2), (PyTorchExecutionConfig, "pad_eval", True),
]


@pytest.mark.parametrize("cls, name, value", DEFAULT_ONLY, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in DEFAULT_ONLY])
def test_unimplemented_fields_reject_every_non_default_value(cls, name, value):
    with pytest.raises(ConfigError) as info:
        _build(cls, **{name: value})
    assert info.value.field == name and "Fix:" in str(info.value)
    obj = _build(cls)  # the default constructs, and a later assignment is caught at the re-check
    setattr(obj, name, value)
    check = validate_execution_config if cls is PyTorchExecutionConfig else validate_training_config
    with pytest.raises(ConfigError, match=f"^{name}="):
        check(obj)

"""Build every configuration object of a PyTorch run from CLI-style overrides (upstream ``config_factory``).

Precedence, highest first: explicit ``overrides`` > ``execution_config`` fields > defaults (the
torch dataclass defaults, which are the canonical ones).  The canonical config is then written to
``ptycho.params.cfg`` with ``update_legacy_dict`` (CONFIG-001) before any scan data is read; the
execution config never reaches ``params.cfg``.

``C = gridsize**2`` is derived once: the torch ``DataConfig.C`` property and the canonical
``ModelConfig.gridsize`` come from the same ``gridsize`` / ``grid_size`` value, and the network,
the data loaders and the Lightning module all read the canonical config.

Override keys (anything else raises ``ValueError`` listing them): the fields of the torch
``DataConfig`` / ``ModelConfig`` / ``TrainingConfig`` / ``InferenceConfig``, every field of the
canonical ``ModelConfig`` / ``TrainingConfig`` / ``InferenceConfig`` and of
``PyTorchExecutionConfig``, and the aliases ``gridsize`` (-> ``grid_size``), ``neighbor_count``
(-> ``K``), ``max_epochs`` / ``nepochs`` (-> ``epochs``), ``model_type`` (-> ``mode``) and
``torch_loss_mode`` (-> ``loss_function``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ptycho import params
from ptycho.bundle import bundle_path, read_bundle
from ptycho.config.config import InferenceConfig as TFInferenceConfig
from ptycho.config.config import ModelConfig as TFModelConfig
from ptycho.config.config import PyTorchExecutionConfig, update_legacy_dict, validate_execution_config
from ptycho.config.config import TrainingConfig as TFTrainingConfig
from ptycho.errors import ConfigError, DataContractError
from ptycho_torch import config_params as cp
from ptycho_torch.config_bridge import to_inference_config, to_model_config, to_training_config

__all__ = [
    "InferencePayload",
    "TrainingPayload",
    "create_inference_payload",
    "create_training_payload",
    "infer_probe_size",
]

_ALIASES = {
    "gridsize": "grid_size",
    "neighbor_count": "K",
    "max_epochs": "epochs",
    "nepochs": "epochs",
    "model_type": "mode",
    "torch_loss_mode": "loss_function",
}
_MODE_FROM_TYPE = {"pinn": "Unsupervised", "supervised": "Supervised"}
_LOSS_FROM_MODE = {"poisson": "Poisson", "mae": "MAE"}
#: Overrides that belong to the execution config and also to the training config (the canonical
#: TrainingConfig has the clipping fields too: routed to the execution config only, they never reached
#: params.cfg or the bundle; the conformance gate's config stage found it).
_SHARED_EXECUTION = ("learning_rate", "scheduler", "gradient_clip_val", "gradient_clip_algorithm")


@dataclass
class TrainingPayload:
    """Everything a training run needs; ``tf_training_config`` is the canonical config (in params.cfg)."""

    tf_training_config: TFTrainingConfig
    pt_data_config: cp.DataConfig
    pt_model_config: cp.ModelConfig
    pt_training_config: cp.TrainingConfig
    execution_config: PyTorchExecutionConfig
    overrides_applied: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferencePayload:
    """Everything an inference run needs; ``tf_inference_config`` is the canonical config (in params.cfg)."""

    tf_inference_config: TFInferenceConfig
    pt_data_config: cp.DataConfig
    pt_inference_config: cp.InferenceConfig
    execution_config: PyTorchExecutionConfig
    overrides_applied: dict[str, Any] = field(default_factory=dict)


def infer_probe_size(path: str | PathLike) -> int:
    """``probeGuess.shape[0]`` of an NPZ file (reads only that array).

    Raises ``FileNotFoundError`` or ``DataContractError`` (unlike upstream, which fell back to 64).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = data.files
            shape = data["probeGuess"].shape if "probeGuess" in files else None
    except (OSError, ValueError) as exc:
        raise DataContractError(
            f"not a readable NPZ file ({exc})", file=path, fix="pass an NPZ in the data contract"
        ) from None
    if shape is None:
        raise DataContractError("missing", file=path, field="probeGuess", fix="add the probe guess [N, N]")
    if len(shape) != 2 or shape[0] != shape[1]:
        raise DataContractError(f"has shape {shape}, expected a square [N, N]", file=path, field="probeGuess")
    return int(shape[0])


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _normalise_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Translate aliases into torch field names (``gridsize`` -> ``grid_size`` tuple, ...)."""
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        name = _ALIASES.get(key, key)
        if key == "gridsize":
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ConfigError("gridsize", value, "a positive integer")
            value = (int(value), int(value))
        elif key == "model_type":
            if value not in _MODE_FROM_TYPE:
                raise ValueError(f"model_type={value!r} is invalid: expected one of {sorted(_MODE_FROM_TYPE)}")
            value = _MODE_FROM_TYPE[value]
        elif key == "torch_loss_mode":
            if value not in _LOSS_FROM_MODE:
                raise ValueError(f"torch_loss_mode={value!r} is invalid: expected one of {sorted(_LOSS_FROM_MODE)}")
            value = _LOSS_FROM_MODE[value]
        if name in out and out[name] != value:
            raise ValueError(f"conflicting overrides for {name!r}: {out[name]!r} and {value!r} (from {key!r})")
        out[name] = value
    return out


def _split(
    overrides: dict[str, Any], torch_classes: tuple[type, ...], canonical_classes: tuple[type, ...]
) -> tuple[dict[type, dict[str, Any]], dict[type, dict[str, Any]], dict[str, Any]]:
    """Route every override to the torch configs, the canonical configs (bridge) or the execution config."""
    torch_parts: dict[type, dict[str, Any]] = {cls: {} for cls in torch_classes}
    canonical_parts: dict[type, dict[str, Any]] = {cls: {} for cls in canonical_classes}
    execution: dict[str, Any] = {}
    exec_names = _names(PyTorchExecutionConfig)
    for key, value in overrides.items():
        routed = False
        if key in exec_names:
            execution[key] = value
            routed = True
            if key not in _SHARED_EXECUTION:
                continue
        for cls in torch_classes:
            if key in _names(cls):
                torch_parts[cls][key] = value
                routed = True
                break
        else:
            for cls in canonical_classes:
                if key in _names(cls) - {"model"}:
                    canonical_parts[cls][key] = value
                    routed = True
                    break
        if not routed:
            allowed = set().union(*(_names(c) for c in (*torch_classes, *canonical_classes)))
            allowed |= exec_names | set(_ALIASES)
            raise ValueError(f"unknown override {key!r}; allowed keys: {sorted(allowed - {'model'})}")
    return torch_parts, canonical_parts, execution


def _resolve_execution(
    execution_config: PyTorchExecutionConfig | None, execution_overrides: dict[str, Any]
) -> PyTorchExecutionConfig:
    base = execution_config if execution_config is not None else PyTorchExecutionConfig()
    validate_execution_config(base)
    return dataclasses.replace(base, **execution_overrides) if execution_overrides else dataclasses.replace(base)


def create_training_payload(
    train_data_file: str | PathLike,
    output_dir: str | PathLike,
    overrides: dict[str, Any] | None = None,
    execution_config: PyTorchExecutionConfig | None = None,
) -> TrainingPayload:
    """Build the configs of a training run and write the canonical one to ``params.cfg``.

    Args:
        train_data_file: training NPZ (must exist).
        output_dir: where the run writes (recorded in the config; created by the workflow).
        overrides: required ``n_groups``; any key of the module docstring.  ``N`` defaults to the
            training file's probe size, ``gridsize`` to 1.
        execution_config: runtime knobs (default ``PyTorchExecutionConfig()``); a copy with the
            execution overrides applied is returned in the payload.

    Raises:
        FileNotFoundError: no training file.  ValueError / ConfigError: a missing ``n_groups``, an
        unknown override or an invalid value.
    """
    train_data_file = Path(train_data_file)
    if not train_data_file.is_file():
        raise FileNotFoundError(f"{train_data_file}: training data file not found")
    norm = _normalise_overrides(overrides)
    if norm.get("n_groups") is None:
        raise ValueError("overrides must include 'n_groups' (the number of groups to train on; --n_groups)")
    applied: dict[str, Any] = dict(overrides or {})
    if "N" not in norm:
        norm["N"] = infer_probe_size(train_data_file)
        applied["N"] = norm["N"]
    torch_parts, canonical_parts, exec_overrides = _split(
        norm, (cp.DataConfig, cp.ModelConfig, cp.TrainingConfig), (TFModelConfig, TFTrainingConfig)
    )
    execution = _resolve_execution(execution_config, exec_overrides)
    training_kw = torch_parts[cp.TrainingConfig]
    training_kw.setdefault("learning_rate", execution.learning_rate)
    if "scheduler" not in training_kw and execution.scheduler != "Default":
        training_kw["scheduler"] = execution.scheduler
    execution = dataclasses.replace(
        execution, learning_rate=float(training_kw["learning_rate"]),
        scheduler=training_kw.get("scheduler", execution.scheduler),
    )
    data = cp.DataConfig(**torch_parts[cp.DataConfig])
    model = cp.ModelConfig(**torch_parts[cp.ModelConfig])
    training = cp.TrainingConfig(train_data_file=train_data_file, output_dir=Path(output_dir), **training_kw)
    model_tf = to_model_config(data, model, canonical_parts[TFModelConfig])
    tf_training = to_training_config(model_tf, data, model, training, canonical_parts[TFTrainingConfig])
    update_legacy_dict(params.cfg, tf_training)
    applied.update(
        accelerator=execution.accelerator, deterministic=execution.deterministic, num_workers=execution.num_workers,
        learning_rate=execution.learning_rate, scheduler=execution.scheduler, precision=execution.precision,
        logger_backend=execution.logger_backend, accum_steps=execution.accum_steps,
    )
    return TrainingPayload(tf_training, data, model, training, execution, applied)


def create_inference_payload(
    model_path: str | PathLike,
    test_data_file: str | PathLike,
    output_dir: str | PathLike,
    overrides: dict[str, Any] | None = None,
    execution_config: PyTorchExecutionConfig | None = None,
) -> InferencePayload:
    """Build the configs of an inference run and write the canonical one to ``params.cfg``.

    The architecture (``N``, ``gridsize``, ...) comes from the bundle's manifest, so inference
    always matches the trained model (upstream defaulted gridsize to 1 here).  ``n_groups`` is
    optional (None = every group).

    Raises:
        FileNotFoundError: no model directory / bundle / test file.  BundleBackendMismatchError: a
        TensorFlow bundle.  ValueError: an unknown override or invalid value.
    """
    model_path, test_data_file = Path(model_path), Path(test_data_file)
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: model directory not found")
    if not bundle_path(model_path).is_file():
        raise FileNotFoundError(f"{bundle_path(model_path)}: no wts.h5.zip model bundle (train a model first)")
    if not test_data_file.is_file():
        raise FileNotFoundError(f"{test_data_file}: test data file not found")
    bundle = read_bundle(model_path, expected_backend="pytorch")
    network = bundle.manifest["network"]
    norm = _normalise_overrides(overrides)
    if "K" not in norm and bundle.params.get("neighbor_count") is not None:
        # group as the training data was grouped (a gridsize-3 group needs 8 neighbours, the default K is 4)
        norm["K"] = int(bundle.params["neighbor_count"])
    for key, bundle_key in (("N", "N"), ("grid_size", "gridsize")):
        if key in norm:
            want = norm[key] if key == "N" else norm[key][0]
            if want != network[bundle_key]:
                raise ValueError(f"{bundle_key}={want!r} disagrees with the model bundle ({network[bundle_key]!r})")
    torch_parts, canonical_parts, exec_overrides = _split(
        norm, (cp.DataConfig, cp.ModelConfig, cp.InferenceConfig), (TFModelConfig, TFInferenceConfig)
    )
    execution = _resolve_execution(execution_config, exec_overrides)
    inference_kw = torch_parts[cp.InferenceConfig]
    if "batch_size" in inference_kw and execution.inference_batch_size is None:
        execution = dataclasses.replace(execution, inference_batch_size=int(inference_kw["batch_size"]))
    data = cp.DataConfig(**{**torch_parts[cp.DataConfig], "N": network["N"],
                            "grid_size": (network["gridsize"], network["gridsize"])})
    model_kw = {k: network[k] for k in ("n_filters_scale", "object_big", "probe_big", "pad_object", "amp_activation")}
    model = cp.ModelConfig(**{**torch_parts[cp.ModelConfig], **model_kw})
    inference = cp.InferenceConfig(output_dir=Path(output_dir), **inference_kw)
    model_tf = to_model_config(data, model, canonical_parts[TFModelConfig])
    tf_inference = to_inference_config(
        model_tf, data, inference,
        {**canonical_parts[TFInferenceConfig], "model_path": model_path, "test_data_file": test_data_file},
    )
    update_legacy_dict(params.cfg, tf_inference)
    applied = dict(overrides or {})
    applied.update(accelerator=execution.accelerator, num_workers=execution.num_workers,
                   inference_batch_size=execution.inference_batch_size, precision=execution.precision)
    return InferencePayload(tf_inference, data, inference, execution, applied)

"""Bridge from the PyTorch-side configs (:mod:`ptycho_torch.config_params`) to the canonical ones.

Upstream mappings (``specs/pytorch-backend.md``):

==================================== ==========================================
torch field                          canonical field
==================================== ==========================================
``DataConfig.grid_size (g, g)``      ``ModelConfig.gridsize = g`` (non-square: ValueError)
``ModelConfig.mode``                 ``model_type``: Unsupervised -> 'pinn', Supervised -> 'supervised'
``ModelConfig.amp_activation``       silu / SiLU -> 'swish'; sigmoid, swish, softplus, relu unchanged
``TrainingConfig.epochs``            ``nepochs``
``DataConfig.K``                     ``neighbor_count``
``TrainingConfig.nll``               ``nll_weight`` = 1.0 if nll else 0.0
``ModelConfig.loss_function``        ``torch_loss_mode``: Poisson -> 'poisson', MAE -> 'mae'
``ModelConfig.intensity_scale_trainable`` / ``probe_trainable``  the TrainingConfig fields of that name
``DataConfig.probe_scale``           ``ModelConfig.probe_scale``
==================================== ==========================================

``overrides`` (a dict of canonical field names) are applied last.  A required value that is
neither set nor overridden raises a ``ValueError`` naming the override to pass.  The canonical
dataclasses validate every value (``ConfigError``, a ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from ptycho.config.config import InferenceConfig as TFInferenceConfig
from ptycho.config.config import ModelConfig as TFModelConfig
from ptycho.config.config import TrainingConfig as TFTrainingConfig
from ptycho_torch.config_params import DataConfig, InferenceConfig, ModelConfig, TrainingConfig

__all__ = ["AMP_ACTIVATION_MAP", "MODE_MAP", "to_inference_config", "to_model_config", "to_training_config"]

#: torch ``mode`` -> canonical ``model_type``.
MODE_MAP: dict[str, str] = {"Unsupervised": "pinn", "Supervised": "supervised"}
#: torch ``amp_activation`` -> canonical ``amp_activation``.
AMP_ACTIVATION_MAP: dict[str, str] = {
    "silu": "swish",
    "SiLU": "swish",
    "swish": "swish",
    "sigmoid": "sigmoid",
    "softplus": "softplus",
    "relu": "relu",
}
_LOSS_MAP = {"Poisson": "poisson", "MAE": "mae"}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _apply(kwargs: dict[str, Any], overrides: dict[str, Any] | None, cls: type) -> dict[str, Any]:
    if not overrides:
        return kwargs
    unknown = sorted(set(overrides) - _field_names(cls))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} override(s) {unknown}; allowed: {sorted(_field_names(cls))}")
    return {**kwargs, **overrides}


def to_model_config(data: DataConfig, model: ModelConfig, overrides: dict[str, Any] | None = None) -> TFModelConfig:
    """Canonical ``ModelConfig`` from the torch data and model configs (``overrides`` applied last)."""
    gx, gy = data.grid_size
    if gx != gy:
        raise ValueError(f"Non-square grids not supported: grid_size={data.grid_size}; use (g, g)")
    if model.mode not in MODE_MAP:
        raise ValueError(f"mode={model.mode!r} is invalid: expected one of {sorted(MODE_MAP)}")
    if model.amp_activation not in AMP_ACTIVATION_MAP:
        raise ValueError(
            f"amp_activation={model.amp_activation!r} is invalid: expected one of {sorted(AMP_ACTIVATION_MAP)}"
        )
    kwargs: dict[str, Any] = {
        "N": data.N,
        "gridsize": gx,
        "n_filters_scale": model.n_filters_scale,
        "model_type": MODE_MAP[model.mode],
        "amp_activation": AMP_ACTIVATION_MAP[model.amp_activation],
        "object_big": model.object_big,
        "probe_big": model.probe_big,
        "probe_mask": bool(model.probe_mask),
        "pad_object": model.pad_object,
        "probe_scale": data.probe_scale,
        "gaussian_smoothing_sigma": model.gaussian_smoothing_sigma,
    }
    return TFModelConfig(**_apply(kwargs, overrides, TFModelConfig))


def to_training_config(
    model_tf: TFModelConfig,
    data: DataConfig,
    pt_model: ModelConfig,
    training: TrainingConfig,
    overrides: dict[str, Any] | None = None,
) -> TFTrainingConfig:
    """Canonical ``TrainingConfig`` (``backend='pytorch'``); ``train_data_file`` and ``n_groups`` are required."""
    if pt_model.loss_function not in _LOSS_MAP:
        raise ValueError(f"loss_function={pt_model.loss_function!r} is invalid: expected one of {sorted(_LOSS_MAP)}")
    kwargs: dict[str, Any] = {
        "model": model_tf,
        "train_data_file": training.train_data_file,
        "test_data_file": training.test_data_file,
        "output_dir": training.output_dir,
        "batch_size": training.batch_size,
        "nepochs": training.epochs,
        "nll_weight": 1.0 if training.nll else 0.0,
        "mae_weight": training.mae_weight,
        "nphotons": data.nphotons,
        "n_groups": training.n_groups,
        "n_subsample": data.n_subsample,
        "subsample_seed": data.subsample_seed,
        "neighbor_count": data.K,
        "sequential_sampling": data.sequential_sampling,
        "intensity_scale_trainable": pt_model.intensity_scale_trainable,
        "probe_trainable": pt_model.probe_trainable,
        "torch_loss_mode": _LOSS_MAP[pt_model.loss_function],
        "scheduler": training.scheduler,
        "backend": "pytorch",
    }
    kwargs = _apply(kwargs, overrides, TFTrainingConfig)
    if kwargs.get("train_data_file") is None:
        raise ValueError("train_data_file is required: set TrainingConfig.train_data_file or pass the override "
                         "{'train_data_file': path}")
    if kwargs.get("n_groups") is None:
        raise ValueError("n_groups is required: set TrainingConfig.n_groups or pass the override {'n_groups': n} "
                         "(otherwise params.cfg['n_groups'] would be left unset)")
    if kwargs.get("test_data_file") is None:
        warnings.warn("test_data_file is not set: training runs without a test set", UserWarning, stacklevel=2)
    for key in ("train_data_file", "test_data_file", "output_dir"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = Path(kwargs[key])
    return TFTrainingConfig(**kwargs)


def to_inference_config(
    model_tf: TFModelConfig,
    data: DataConfig,
    inference: InferenceConfig,
    overrides: dict[str, Any] | None = None,
) -> TFInferenceConfig:
    """Canonical ``InferenceConfig`` (``backend='pytorch'``); ``model_path`` and ``test_data_file`` are required."""
    kwargs: dict[str, Any] = {
        "model": model_tf,
        "n_groups": inference.n_groups,
        "n_subsample": data.n_subsample,
        "subsample_seed": data.subsample_seed,
        "neighbor_count": data.K,
        "output_dir": inference.output_dir,
        "backend": "pytorch",
        "debug": False,
    }
    kwargs = _apply(kwargs, overrides, TFInferenceConfig)
    for key in ("model_path", "test_data_file"):
        if kwargs.get(key) is None:
            raise ValueError(f"{key} is required: pass the override {{'{key}': path}}")
    return TFInferenceConfig(**kwargs)

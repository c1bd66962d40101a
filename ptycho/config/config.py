"""Typed configuration dataclasses and the one-way bridge to ``ptycho.params.cfg``.

Data flow::

    ModelConfig / TrainingConfig / InferenceConfig
        --update_legacy_dict(cfg, config)-->  ptycho.params.cfg  (legacy keys)

    PyTorchExecutionConfig  -->  the PyTorch backend only (never params.cfg)

The field names, types and defaults follow upstream PtychoPINN
(``specs/config.md`` has the full table, with the legacy key of every field).

Validation happens in three places:

* ``__post_init__`` checks every field's type and range and raises
  :class:`~ptycho.errors.ConfigError` (a ``ValueError``) naming the field, the
  value and what is allowed.  Integer-valued floats, NumPy scalars and ``str``
  paths are normalised to ``float`` / ``int`` / :class:`~pathlib.Path`.
  ``ModelConfig.N == 0`` is accepted here as the "not set yet" placeholder that
  Ptychodus constructs before it knows the probe size.
* ``update_legacy_dict`` re-checks the fields (values may have been assigned on
  the instance after construction; the configs are mutable) and skips the
  placeholder ``N == 0`` like a ``None``.
* ``validate_model_config`` / ``validate_training_config`` /
  ``validate_inference_config`` / ``validate_execution_config`` are the full
  checks run where a config is *used*: they reject the placeholder ``N == 0``
  and add the rules that depend on more than one field or on the file system.

This module never imports TensorFlow or PyTorch: Ptychodus imports it in a
process that has neither.  ``PyTorchExecutionConfig.accelerator='auto'`` is
therefore kept unresolved here; the PyTorch backend resolves it.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ptycho import conventions
from ptycho.errors import ConfigError

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ONLY_FIELDS",
    "IMPLEMENTED_ARCHITECTURES",
    "KEY_MAPPINGS",
    "InferenceConfig",
    "ModelConfig",
    "N_PLACEHOLDER",
    "PyTorchExecutionConfig",
    "TrainingConfig",
    "dataclass_to_legacy_dict",
    "legacy_rule",
    "update_legacy_dict",
    "validate_execution_config",
    "validate_inference_config",
    "validate_model_config",
    "validate_training_config",
]

#: ``ModelConfig.N`` value meaning "not set yet" (Ptychodus builds configs before it knows N).
N_PLACEHOLDER: int = 0
#: Names ``ModelConfig.architecture`` accepts (upstream's list, kept so upstream configs construct).
ARCHITECTURES: tuple[str, ...] = ("cnn", "ffno", "fno", "fno_vanilla", "neuralop_uno")
#: Architectures this package implements; ``validate_model_config`` rejects the others.
IMPLEMENTED_ARCHITECTURES: tuple[str, ...] = ("cnn",)
#: Name of the model bundle a training run writes into its output directory.
MODEL_BUNDLE_NAME: str = "wts.h5.zip"

_MODEL_TYPES = ("pinn", "supervised")
_FNO_INPUT_TRANSFORMS = ("none", "sqrt", "log1p", "instancenorm")
_GENERATOR_OUTPUT_MODES = ("real_imag", "amp_phase_logits", "amp_phase")
_AMP_ACTIVATIONS = conventions.AMP_ACTIVATIONS
_BACKENDS = ("tensorflow", "pytorch")
#: ``TrainingConfig.torch_loss_mode`` values.
TORCH_LOSS_MODES: tuple[str, ...] = ("poisson", "mae")
_CLIP_ALGORITHMS = ("norm", "value", "agc")
_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULERS = ("Default", "Exponential", "WarmupCosine", "ReduceLROnPlateau")
_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
_PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
_CHECKPOINT_MODES = ("min", "max")
_LOGGER_BACKENDS = ("csv", "tensorboard", "mlflow", None)
_GATE_MODES = ("shared", "per_block")

#: Modern dataclass field name -> legacy ``params.cfg`` key (upstream's table, unchanged).
KEY_MAPPINGS: dict[str, str] = {
    "object_big": "object.big",
    "probe_big": "probe.big",
    "probe_mask": "probe.mask",
    "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
    "positions_provided": "positions.provided",
    "output_dir": "output_prefix",
    "train_data_file": "train_data_file_path",
    "test_data_file": "test_data_file_path",
}

# --------------------------------------------------------------------------- field rules
#: A rule checks one value: ``rule(field_name, value) -> normalised value``, or raises ConfigError.
Rule = Callable[[str, Any], Any]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _int_rule(minimum: int, *, optional: bool = False) -> Rule:
    """Integer ``>= minimum`` (``None`` too when ``optional``); returns a Python ``int``."""
    words = {0: "a non-negative integer", 1: "a positive integer"}
    allowed = words.get(minimum, f"an integer >= {minimum}") + (" or None" if optional else "")

    def rule(name: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if not _is_int(value) or value < minimum:
            raise ConfigError(name, value, allowed)
        return int(value)

    return rule


def _float_rule(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Rule:
    """Finite real number within optional bounds; returns a Python ``float``."""
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        bounds = f" {'<' if high_open else '<='} {high:g}"
    else:
        bounds = ""
    allowed = f"a finite number{bounds}" + (" or None" if optional else "")

    def rule(name: str, value: Any) -> float | None:
        if value is None and optional:
            return None
        if not _is_real(value) or not math.isfinite(value):
            raise ConfigError(name, value, allowed)
        v = float(value)
        if low is not None and (v < low or (low_open and v == low)):
            raise ConfigError(name, value, allowed)
        if high is not None and (v > high or (high_open and v == high)):
            raise ConfigError(name, value, allowed)
        return v

    return rule


def _choice_rule(options: tuple[Any, ...]) -> Rule:
    """One of ``options`` (compared by type and value, so ``True`` never matches ``1``)."""
    allowed = "one of " + ", ".join(repr(o) for o in options)

    def rule(name: str, value: Any) -> Any:
        for option in options:
            if type(value) is type(option) and value == option:
                return option
        raise ConfigError(name, value, allowed)

    return rule


def _bool_rule(name: str, value: Any) -> bool:
    """``True`` or ``False`` (a NumPy bool is accepted and converted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(name, value, "a bool (True or False)")
    return bool(value)


def _str_rule(name: str, value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(name, value, "a non-empty string")
    return value


def _path_rule(*, optional: bool) -> Rule:
    """A ``str`` or ``os.PathLike`` (``None`` too when ``optional``); returns a :class:`Path`."""
    allowed = "a path (str or pathlib.Path)" + (" or None" if optional else "")

    def rule(name: str, value: Any) -> Path | None:
        if value is None and optional:
            return None
        if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)) or str(value) == "":
            raise ConfigError(name, value, allowed)
        return Path(value)

    return rule


def _check_N(name: str, value: Any, *, allow_placeholder: bool) -> int:
    """``N`` must be one of ``conventions.SUPPORTED_N``; ``0`` only where the placeholder is allowed."""
    supported = ", ".join(str(n) for n in conventions.SUPPORTED_N)
    if _is_int(value):
        if int(value) in conventions.SUPPORTED_N:
            return int(value)
        if int(value) == N_PLACEHOLDER:
            if allow_placeholder:
                return N_PLACEHOLDER
            raise ConfigError(
                name,
                value,
                f"one of {supported}",
                fix="N=0 is the 'not set yet' placeholder; assign the patch (probe) size, "
                "e.g. config.model.N = 64, before using the config",
            )
    raise ConfigError(
        name,
        value,
        f"one of {supported} (0 is accepted at construction as a 'not set yet' placeholder)",
    )


_POS_INT = _int_rule(1)
_NONNEG_INT = _int_rule(0)
_OPT_POS_INT = _int_rule(1, optional=True)
_OPT_NONNEG_INT = _int_rule(0, optional=True)
_POS_FLOAT = _float_rule(0.0, low_open=True)
_NONNEG_FLOAT = _float_rule(0.0)
_UNIT = _float_rule(0.0, 1.0)
_OPT_PATH = _path_rule(optional=True)
_PATH = _path_rule(optional=False)

_MODEL_RULES: dict[str, Rule] = {
    "gridsize": _POS_INT,
    "n_filters_scale": _POS_INT,
    "model_type": _choice_rule(_MODEL_TYPES),
    "architecture": _choice_rule(ARCHITECTURES),
    "fno_modes": _POS_INT,
    "fno_width": _POS_INT,
    "fno_blocks": _POS_INT,
    "fno_cnn_blocks": _NONNEG_INT,
    "learned_input_channels": _POS_INT,
    "max_hidden_channels": _OPT_POS_INT,
    "resnet_width": _OPT_POS_INT,
    "fno_input_transform": _choice_rule(_FNO_INPUT_TRANSFORMS),
    "generator_output_mode": _choice_rule(_GENERATOR_OUTPUT_MODES),
    "amp_activation": _choice_rule(_AMP_ACTIVATIONS),
    "object_big": _bool_rule,
    "probe_big": _bool_rule,
    "probe_mask": _bool_rule,
    "probe_mask_sigma": _NONNEG_FLOAT,
    "probe_mask_diameter": _float_rule(0.0, low_open=True, optional=True),
    "pad_object": _bool_rule,
    "probe_scale": _POS_FLOAT,
    "gaussian_smoothing_sigma": _NONNEG_FLOAT,
}

# Fields shared by TrainingConfig and InferenceConfig use the same rule in both.
_SAMPLING_RULES: dict[str, Rule] = {
    "n_groups": _OPT_POS_INT,
    "n_images": _OPT_POS_INT,
    "n_subsample": _OPT_POS_INT,
    "subsample_seed": _OPT_NONNEG_INT,
    "neighbor_count": _POS_INT,
    "enable_oversampling": _bool_rule,
    "neighbor_pool_size": _OPT_POS_INT,
    "output_dir": _PATH,
    "backend": _choice_rule(_BACKENDS),
}

def _default_only(base: Rule, default: Any, why: str) -> Rule:
    """``base``, then only ``default``: the field exists (upstream configs construct) but no backend implements
    another value, so anything else is a ConfigError naming the field instead of a silently ignored setting."""

    def rule(name: str, value: Any) -> Any:
        value = base(name, value)
        if value != default:
            raise ConfigError(name, value, f"{default!r} ({why})", fix=f"remove {name} or set it to {default!r}")
        return value

    rule.default_only = True  # type: ignore[attr-defined]  (DEFAULT_ONLY_FIELDS collects these)
    return rule


_ADAM_ONLY = "both backends train with Keras-formula Adam only"
_NO_RECON_LOG = "reconstruction logging is not implemented"
_CNN_ONLY = "only the 'cnn' generator is implemented"

_TRAINING_RULES: dict[str, Rule] = {
    **_SAMPLING_RULES,
    "train_data_file": _OPT_PATH,
    "test_data_file": _OPT_PATH,
    "batch_size": _POS_INT,
    "nepochs": _POS_INT,
    "mae_weight": _UNIT,
    "nll_weight": _UNIT,
    "realspace_mae_weight": _UNIT,
    "realspace_weight": _UNIT,
    "nphotons": _POS_FLOAT,
    "positions_provided": _bool_rule,
    "probe_trainable": _bool_rule,
    "intensity_scale_trainable": _bool_rule,
    "sequential_sampling": _bool_rule,
    "torch_loss_mode": _choice_rule(TORCH_LOSS_MODES),
    "torch_mae_pred_l2_match_target": _bool_rule,
    "gradient_clip_val": _float_rule(0.0, optional=True),
    "gradient_clip_algorithm": _choice_rule(_CLIP_ALGORITHMS),
    "optimizer": _default_only(_choice_rule(_OPTIMIZERS), "adam", _ADAM_ONLY),
    "momentum": _default_only(_UNIT, 0.9, "SGD momentum; " + _ADAM_ONLY),
    "weight_decay": _default_only(_NONNEG_FLOAT, 0.0, "weight decay is not implemented; " + _ADAM_ONLY),
    "adam_beta1": _default_only(_float_rule(0.0, 1.0, high_open=True), 0.9, "Keras' default, fixed in both backends"),
    "adam_beta2": _default_only(_float_rule(0.0, 1.0, high_open=True), 0.999, "Keras' default, fixed in both backends"),
    "scheduler": _choice_rule(_SCHEDULERS),
    "lr_warmup_epochs": _NONNEG_INT,
    "lr_min_ratio": _UNIT,
    "plateau_factor": _float_rule(0.0, 1.0, low_open=True, high_open=True),
    "plateau_patience": _NONNEG_INT,
    "plateau_min_lr": _NONNEG_FLOAT,
    "plateau_threshold": _NONNEG_FLOAT,
}

_INFERENCE_RULES: dict[str, Rule] = {
    **_SAMPLING_RULES,
    "model_path": _PATH,
    "test_data_file": _PATH,
    "debug": _bool_rule,
}


def _accelerator_rule(name: str, value: Any) -> str:
    if value == "tpu":
        raise ConfigError(
            name, value, "one of " + ", ".join(repr(a) for a in _ACCELERATORS),
            fix="TPU execution is not supported; use 'cpu', 'gpu'/'cuda' or 'mps'",
        )
    return _choice_rule(_ACCELERATORS)(name, value)


def _devices_rule(name: str, value: Any) -> int | str:
    if value == "auto" and isinstance(value, str):
        return value
    if not _is_int(value) or value < 1:
        raise ConfigError(name, value, "a positive integer or 'auto'")
    return int(value)


def _deterministic_rule(name: str, value: Any) -> bool | str:
    if isinstance(value, str) and value == "warn":
        return value
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(name, value, "a bool or 'warn'")
    return bool(value)


def _indices_rule(name: str, value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(name, value, "a list of non-negative integers or None")
    items = list(value)
    if not all(_is_int(i) and i >= 0 for i in items):
        raise ConfigError(name, value, "a list of non-negative integers or None")
    return [int(i) for i in items]


_EXECUTION_RULES: dict[str, Rule] = {
    "accelerator": _accelerator_rule,
    "devices": _devices_rule,
    "num_nodes": _POS_INT,
    "strategy": _str_rule,
    "deterministic": _deterministic_rule,
    "precision": _choice_rule(_PRECISIONS),
    "gradient_clip_val": _float_rule(0.0, optional=True),
    "gradient_clip_algorithm": _choice_rule(_CLIP_ALGORITHMS),
    "accum_steps": _POS_INT,
    "num_workers": _NONNEG_INT,
    "pin_memory": _bool_rule,
    "persistent_workers": _bool_rule,
    "prefetch_factor": _OPT_POS_INT,
    "learning_rate": _POS_FLOAT,
    "scheduler": _choice_rule(_SCHEDULERS),
    "enable_progress_bar": _bool_rule,
    "enable_checkpointing": _bool_rule,
    "checkpoint_save_top_k": _NONNEG_INT,
    "checkpoint_monitor_metric": _str_rule,
    "checkpoint_mode": _choice_rule(_CHECKPOINT_MODES),
    "early_stop_patience": _POS_INT,
    "logger_backend": _choice_rule(_LOGGER_BACKENDS),
    "recon_log_every_n_epochs": _default_only(_OPT_POS_INT, None, _NO_RECON_LOG),
    "recon_log_num_patches": _default_only(_POS_INT, 4, _NO_RECON_LOG),
    "recon_log_fixed_indices": _default_only(_indices_rule, None, _NO_RECON_LOG),
    "recon_log_stitch": _default_only(_bool_rule, False, _NO_RECON_LOG),
    "recon_log_max_stitch_samples": _default_only(_OPT_POS_INT, None, _NO_RECON_LOG),
    "ffno_encoder_blocks": _default_only(_POS_INT, 24, _CNN_ONLY),
    "ffno_encoder_modes": _default_only(_POS_INT, 12, _CNN_ONLY),
    "ffno_encoder_share_weights": _default_only(_bool_rule, True, _CNN_ONLY),
    "ffno_encoder_gate_init": _default_only(_POS_FLOAT, 0.1, _CNN_ONLY),
    "ffno_encoder_norm": _default_only(_str_rule, "instance", _CNN_ONLY),
    "ffno_encoder_mlp_ratio": _default_only(_POS_FLOAT, 2.0, _CNN_ONLY),
    "spectral_bottleneck_blocks": _default_only(_POS_INT, 6, _CNN_ONLY),
    "spectral_bottleneck_modes": _default_only(_POS_INT, 12, _CNN_ONLY),
    "spectral_bottleneck_share_weights": _default_only(_bool_rule, True, _CNN_ONLY),
    "spectral_bottleneck_gate_init": _default_only(_float_rule(), 0.1, _CNN_ONLY),
    "spectral_bottleneck_gate_mode": _default_only(_choice_rule(_GATE_MODES), "shared", _CNN_ONLY),
    "inference_batch_size": _OPT_POS_INT,
    "middle_trim": _default_only(_NONNEG_INT, 0, "inference trimming is not implemented"),
    "pad_eval": _default_only(_bool_rule, False, "padded evaluation is not implemented"),
}


def _checked_values(obj: Any, rules: Mapping[str, Rule], *, allow_placeholder: bool) -> dict[str, Any]:
    """Apply ``rules`` to every field of ``obj`` (except ``model``); return the normalised values."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name == "model":
            if not isinstance(value, ModelConfig):
                raise ConfigError("model", value, "a ModelConfig instance")
            out[f.name] = value
        elif f.name == "N":
            out[f.name] = _check_N("N", value, allow_placeholder=allow_placeholder)
        else:
            out[f.name] = rules[f.name](f.name, value)
    return out


def _normalise(obj: Any, rules: Mapping[str, Rule]) -> None:
    """Check every field (placeholder allowed) and write the normalised values back."""
    for name, value in _checked_values(obj, rules, allow_placeholder=True).items():
        if getattr(obj, name) is not value:
            setattr(obj, name, value)


def _check_n_images(obj: TrainingConfig | InferenceConfig) -> None:
    """Copy the deprecated ``n_images`` into ``n_groups`` (with a DeprecationWarning)."""
    if obj.n_images is None:
        return
    warnings.warn(
        "n_images is deprecated; use n_groups (the number of groups, whatever the gridsize)",
        DeprecationWarning,
        stacklevel=4,
    )
    if obj.n_groups is None:
        obj.n_groups = obj.n_images
    elif obj.n_groups != obj.n_images:
        raise ConfigError(
            "n_images", obj.n_images, f"None or equal to n_groups={obj.n_groups!r}",
            fix="set only n_groups (n_images is a deprecated alias)",
        )


# --------------------------------------------------------------------------- dataclasses
@dataclass
class ModelConfig:
    """Network architecture and physics options (legacy keys in ``specs/config.md``).

    Mutable and picklable.  ``N=0`` is accepted as a "not set yet" placeholder;
    :func:`validate_model_config` rejects it.
    """

    #: Patch / diffraction size in pixels: one of ``conventions.SUPPORTED_N`` (0 = placeholder).
    N: int = 64
    #: Groups are ``gridsize x gridsize`` neighbouring scan positions; ``C = gridsize**2`` channels.
    gridsize: int = 1
    #: Width multiplier of the CNN filters.
    n_filters_scale: int = 2
    #: 'pinn' (physics loss on diffraction) or 'supervised' (real-space labels).
    model_type: Literal["pinn", "supervised"] = "pinn"
    #: Generator network; only 'cnn' is implemented (the others construct but fail validation).
    architecture: Literal["cnn", "ffno", "fno", "fno_vanilla", "neuralop_uno"] = "cnn"
    fno_modes: int = 12
    fno_width: int = 32
    fno_blocks: int = 4
    fno_cnn_blocks: int = 2
    learned_input_channels: int = 1
    max_hidden_channels: int | None = None
    resnet_width: int | None = None
    fno_input_transform: Literal["none", "sqrt", "log1p", "instancenorm"] = "none"
    generator_output_mode: Literal["real_imag", "amp_phase_logits", "amp_phase"] = "real_imag"
    #: Activation of the amplitude decoder head.
    amp_activation: Literal["sigmoid", "swish", "softplus", "relu"] = "sigmoid"
    #: Reassemble the C patches of a group onto one canvas (True) or pad a single patch (False).
    object_big: bool = True
    #: Decoder border branch active (True) or zero border (False).
    probe_big: bool = True
    #: Multiply the illuminated object by the disk mask of radius N//4.
    probe_mask: bool = False
    probe_mask_sigma: float = 1.0
    probe_mask_diameter: float | None = None
    #: Decoder output is N/2 wide plus a border (True) or full N (False).
    pad_object: bool = True
    #: Probe normalisation: ``mean|disk * probe| = 1 / probe_scale``.
    probe_scale: float = conventions.DEFAULT_PROBE_SCALE
    #: Sigma of the 3x3 Gaussian smoothing of the illuminated object (0 = off).
    gaussian_smoothing_sigma: float = 0.0

    def __post_init__(self) -> None:
        _normalise(self, _MODEL_RULES)


@dataclass
class TrainingConfig:
    """Training run settings; ``model`` holds the architecture.

    ``n_groups`` defaults to 512; the deprecated ``n_images`` is copied into it
    with a DeprecationWarning.  The optimiser / scheduler / clipping fields are
    consumed by the PyTorch backend only (upstream TF hard-codes Adam, lr 1e-3).
    """

    model: ModelConfig
    train_data_file: Path | None = None
    test_data_file: Path | None = None
    batch_size: int = 16
    nepochs: int = 50
    mae_weight: float = 0.0
    nll_weight: float = 1.0
    realspace_mae_weight: float = 0.0
    realspace_weight: float = 0.0
    #: Mean photon count per diffraction pattern; sets ``intensity_scale = sqrt(nphotons)/(N/2)``.
    nphotons: float = 1e9
    #: Number of groups to train on (default 512 when neither n_groups nor n_images is given).
    n_groups: int | None = None
    #: Deprecated alias of n_groups.
    n_images: int | None = None
    n_subsample: int | None = None
    subsample_seed: int | None = None
    #: K: nearest neighbours considered when forming a group.
    neighbor_count: int = 4
    enable_oversampling: bool = False
    neighbor_pool_size: int | None = None
    positions_provided: bool = True
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    output_dir: Path = Path("training_outputs")
    sequential_sampling: bool = False
    backend: Literal["tensorflow", "pytorch"] = "tensorflow"
    torch_loss_mode: Literal["poisson", "mae"] = "poisson"
    torch_mae_pred_l2_match_target: bool = False
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value", "agc"] = "norm"
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    scheduler: Literal["Default", "Exponential", "WarmupCosine", "ReduceLROnPlateau"] = "Default"
    lr_warmup_epochs: int = 0
    lr_min_ratio: float = 0.1
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    plateau_min_lr: float = 5e-5
    plateau_threshold: float = 0.0

    def __post_init__(self) -> None:
        _normalise(self, _TRAINING_RULES)
        _check_n_images(self)
        if self.n_groups is None:
            self.n_groups = 512


@dataclass
class InferenceConfig:
    """Inference run settings.  ``model_path`` is the training output directory holding ``wts.h5.zip``."""

    model: ModelConfig
    model_path: Path
    test_data_file: Path
    #: Number of groups to reconstruct (None = all).
    n_groups: int | None = None
    #: Deprecated alias of n_groups.
    n_images: int | None = None
    n_subsample: int | None = None
    subsample_seed: int | None = None
    neighbor_count: int = 4
    enable_oversampling: bool = False
    neighbor_pool_size: int | None = None
    debug: bool = False
    output_dir: Path = Path("inference_outputs")
    backend: Literal["tensorflow", "pytorch"] = "tensorflow"

    def __post_init__(self) -> None:
        _normalise(self, _INFERENCE_RULES)
        _check_n_images(self)


@dataclass
class PyTorchExecutionConfig:
    """Runtime knobs of the PyTorch backend (Lightning Trainer, DataLoader, logging).

    Never written to ``params.cfg`` (:func:`update_legacy_dict` raises TypeError
    for it).  ``accelerator='auto'`` stays unresolved here because this module
    must not import torch; the PyTorch backend resolves it at run time.
    """

    #: ``'cpu'`` unless a GPU is asked for (``'auto'`` picks one when present).
    accelerator: str = "cpu"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    deterministic: bool | str = True
    precision: Literal["32-true", "16-mixed", "bf16-mixed"] = "32-true"
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: Literal["norm", "value", "agc"] = "norm"
    accum_steps: int = 1
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    learning_rate: float = 1e-3
    scheduler: Literal["Default", "Exponential", "WarmupCosine", "ReduceLROnPlateau"] = "Default"
    enable_progress_bar: bool = False
    enable_checkpointing: bool = True
    checkpoint_save_top_k: int = 1
    checkpoint_monitor_metric: str = "val_loss"
    checkpoint_mode: Literal["min", "max"] = "min"
    early_stop_patience: int = 100
    logger_backend: Literal["csv", "tensorboard", "mlflow"] | None = "csv"
    recon_log_every_n_epochs: int | None = None
    recon_log_num_patches: int = 4
    recon_log_fixed_indices: list[int] | None = None
    recon_log_stitch: bool = False
    recon_log_max_stitch_samples: int | None = None
    ffno_encoder_blocks: int = 24
    ffno_encoder_modes: int = 12
    ffno_encoder_share_weights: bool = True
    ffno_encoder_gate_init: float = 0.1
    ffno_encoder_norm: str = "instance"
    ffno_encoder_mlp_ratio: float = 2.0
    spectral_bottleneck_blocks: int = 6
    spectral_bottleneck_modes: int = 12
    spectral_bottleneck_share_weights: bool = True
    spectral_bottleneck_gate_init: float = 0.1
    spectral_bottleneck_gate_mode: Literal["shared", "per_block"] = "shared"
    inference_batch_size: int | None = None
    middle_trim: int = 0
    pad_eval: bool = False

    def __post_init__(self) -> None:
        _normalise(self, _EXECUTION_RULES)
        _check_execution_cross_fields(self)


def _check_execution_cross_fields(config: PyTorchExecutionConfig) -> None:
    if config.persistent_workers and config.num_workers == 0:
        raise ConfigError(
            "persistent_workers", True, "False when num_workers == 0", fix="set num_workers > 0"
        )
    if config.prefetch_factor is not None and config.num_workers == 0:
        raise ConfigError(
            "prefetch_factor", config.prefetch_factor, "None when num_workers == 0",
            fix="set num_workers > 0 or leave prefetch_factor=None",
        )


_RULES_BY_CLASS: dict[type, Mapping[str, Rule]] = {
    ModelConfig: _MODEL_RULES,
    TrainingConfig: _TRAINING_RULES,
    InferenceConfig: _INFERENCE_RULES,
    PyTorchExecutionConfig: _EXECUTION_RULES,
}

#: Per config class, the fields that accept only their default (they exist for upstream configs, but no
#: backend implements another value, so anything else is a ConfigError naming the field).
DEFAULT_ONLY_FIELDS: dict[type, frozenset[str]] = {
    cls: frozenset(name for name, rule in rules.items() if getattr(rule, "default_only", False))
    for cls, rules in _RULES_BY_CLASS.items()
}

_LegacyConfig = ModelConfig | TrainingConfig | InferenceConfig


# --------------------------------------------------------------------------- validation at use
def _require(config: Any, cls: type) -> None:
    if not isinstance(config, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(config).__name__}")


def validate_model_config(config: ModelConfig) -> None:
    """Full check of a ModelConfig where it is used.

    Re-checks every field (values may have been assigned after construction),
    rejects the placeholder ``N == 0`` and any architecture other than 'cnn'.
    Raises ConfigError; TypeError if ``config`` is not a ModelConfig.
    """
    _require(config, ModelConfig)
    _checked_values(config, _MODEL_RULES, allow_placeholder=False)
    if config.architecture not in IMPLEMENTED_ARCHITECTURES:
        raise ConfigError(
            "architecture", config.architecture, "'cnn' (the only architecture ptychopinn implements)",
            fix="use architecture='cnn'",
        )


def validate_training_config(config: TrainingConfig) -> None:
    """Full check of a TrainingConfig: the model checks, every field, ``batch_size`` a power of 2."""
    _require(config, TrainingConfig)
    validate_model_config(config.model)
    _checked_values(config, _TRAINING_RULES, allow_placeholder=False)
    if config.batch_size & (config.batch_size - 1):
        raise ConfigError("batch_size", config.batch_size, "a positive power of 2")
    if config.n_groups is None:
        raise ConfigError("n_groups", None, "a positive integer", fix="set n_groups (default 512)")


def validate_inference_config(config: InferenceConfig) -> None:
    """Full check of an InferenceConfig, including that the model bundle exists.

    ``model_path`` is either a directory that contains ``wts.h5.zip`` or the
    path of the archive itself (``X``, ``X.zip``, or ``wts.h5`` standing for
    ``wts.h5.zip`` are tried, as upstream does).
    """
    _require(config, InferenceConfig)
    validate_model_config(config.model)
    _checked_values(config, _INFERENCE_RULES, allow_placeholder=False)
    path = Path(config.model_path)
    fix = f"point model_path at the training output directory that holds {MODEL_BUNDLE_NAME}"
    if path.is_dir():
        if not (path / MODEL_BUNDLE_NAME).is_file():
            raise ConfigError(
                "model_path", str(path), f"a directory containing {MODEL_BUNDLE_NAME}",
                fix=f"{path / MODEL_BUNDLE_NAME} does not exist; {fix}",
            )
        return
    candidates = [path, path.with_name(path.name + ".zip")]
    if not any(c.is_file() for c in candidates):
        raise ConfigError(
            "model_path", str(path),
            f"an existing directory containing {MODEL_BUNDLE_NAME} or an existing bundle file",
            fix=f"checked {', '.join(str(c) for c in candidates)}; {fix}",
        )


def validate_execution_config(config: PyTorchExecutionConfig) -> None:
    """Full check of a PyTorchExecutionConfig (fields may have been assigned after construction)."""
    _require(config, PyTorchExecutionConfig)
    _checked_values(config, _EXECUTION_RULES, allow_placeholder=False)
    _check_execution_cross_fields(config)


# --------------------------------------------------------------------------- legacy bridge
def _legacy_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def dataclass_to_legacy_dict(obj: _LegacyConfig) -> dict[str, Any]:
    """Translate a config into legacy ``params.cfg`` keys and values.

    ``dataclasses.asdict``; the nested ``model`` is flattened into the top
    level; fields in :data:`KEY_MAPPINGS` are renamed; every ``Path`` becomes a
    ``str``; ``None`` stays ``None``; all other fields keep their names.  No
    validation; TypeError for anything but a Model/Training/InferenceConfig.
    """
    if isinstance(obj, PyTorchExecutionConfig):
        raise TypeError(
            "PyTorchExecutionConfig is runtime-only and never reaches params.cfg; "
            "pass it to the PyTorch backend instead"
        )
    if not isinstance(obj, (ModelConfig, TrainingConfig, InferenceConfig)):
        raise TypeError(
            f"expected a ModelConfig, TrainingConfig or InferenceConfig, got {type(obj).__name__}"
        )
    d = asdict(obj)
    d.update(d.pop("model", {}))
    return {KEY_MAPPINGS.get(k, k): _legacy_value(v) for k, v in d.items()}


def update_legacy_dict(cfg: MutableMapping[str, Any], config: _LegacyConfig) -> None:
    """Write ``config`` into the legacy dict ``cfg`` (normally ``ptycho.params.cfg``) in place.

    Every field is re-checked first (placeholder ``N == 0`` allowed), so a bad
    value assigned after construction raises ConfigError and writes nothing.
    ``None`` values and the placeholder ``N == 0`` are skipped, leaving the
    existing entries.  Raises TypeError for a PyTorchExecutionConfig (runtime
    only, never in ``params.cfg``) or any non-config object.
    """
    d = dataclass_to_legacy_dict(config)
    rules = next(r for cls, r in _RULES_BY_CLASS.items() if isinstance(config, cls))
    _checked_values(config, rules, allow_placeholder=True)
    if isinstance(config, (TrainingConfig, InferenceConfig)):
        _checked_values(config.model, _MODEL_RULES, allow_placeholder=True)
    for key, value in d.items():
        if value is None or (key == "N" and value == N_PLACEHOLDER):
            continue
        cfg[key] = value


_LEGACY_RULES: dict[str, Rule] = {
    KEY_MAPPINGS.get(name, name): rule
    for name, rule in {**_MODEL_RULES, **_INFERENCE_RULES, **_TRAINING_RULES}.items()
}


def legacy_rule(key: str) -> Rule | None:
    """The rule of the dataclass field behind legacy key ``key`` (None if no dataclass has it).

    Used by ``ptycho.params.set``.  For ``N`` the placeholder 0 is rejected;
    path rules return a ``str`` (the form stored in ``params.cfg``).
    """
    if key == "N":
        return lambda name, value: _check_N(name, value, allow_placeholder=False)
    rule = _LEGACY_RULES.get(key)
    if rule is None:
        return None
    return lambda name, value: _legacy_value(rule(name, value))

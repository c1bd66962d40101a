"""The legacy global configuration dict ``cfg`` and its accessors.

``cfg`` is one module-level dict, never rebound (only mutated in place), that
legacy-style code reads with :func:`get`.  It starts as a deep copy of
:data:`DEFAULT_CFG` and is filled from the typed configs by
``ptycho.config.config.update_legacy_dict(cfg, config)``.

Key groups (every key is described in :data:`KEY_DOCS` and ``specs/config.md``):

* dataclass-backed keys: built FROM the dataclass defaults
  (``dataclass_to_legacy_dict(TrainingConfig(model=ModelConfig()))`` without the
  data-file path keys, which default to None, plus ``debug`` from
  ``InferenceConfig``), so the two can never drift apart;
* legacy-only keys that no dataclass exposes (``offset``,
  ``max_position_jitter``, ... ; :data:`LEGACY_ONLY_DEFAULTS`);
* runtime keys written by the backends (``intensity_scale``, ``probe``;
  :data:`RUNTIME_KEYS`), absent until written;
* derived keys (``bigN``, ``padding_size``, ``padded_size``;
  :data:`DERIVED_KEYS`), computed on every read and never stored.

Deviation from upstream: upstream ``get('bigN')`` also writes ``cfg['bigN']``.
Here reads have no side effects, so two processes (or backends) that wrote
the same configuration hold identical ``cfg`` snapshots whatever they read.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import numpy as np

from ptycho import conventions
from ptycho.config.config import (
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
    _bool_rule,
    _choice_rule,
    _float_rule,
    _int_rule,
    dataclass_to_legacy_dict,
    legacy_rule,
)
from ptycho.errors import ConfigError

__all__ = [
    "DEFAULT_CFG",
    "DERIVED_KEYS",
    "KEY_DOCS",
    "LEGACY_ONLY_DEFAULTS",
    "RUNTIME_KEYS",
    "cfg",
    "get",
    "get_bigN",
    "get_padded_size",
    "get_padding_size",
    "isolated",
    "params",
    "reset",
    "restore",
    "check_value",
    "set",
    "snapshot",
    "validate",
]

#: Allowed values of ``cfg['data_source']`` (upstream's list).
DATA_SOURCES: tuple[str, ...] = (
    "lines", "grf", "experimental", "points", "testimg", "diagonals", "xpp", "V", "generic",
)

#: Dataclass path keys whose default is None; they are left out of DEFAULT_CFG (absent = not set).
_UNSET_PATH_KEYS: tuple[str, ...] = ("train_data_file_path", "test_data_file_path")

#: Keys no dataclass exposes, with their defaults (upstream ``DEFAULT_CFG`` values).
LEGACY_ONLY_DEFAULTS: dict[str, Any] = {
    "offset": conventions.OFFSET,
    "max_position_jitter": conventions.MAX_POSITION_JITTER,
    "default_probe_scale": conventions.DEFAULT_PROBE_WINDOW_SCALE,
    "sim_jitter_scale": 0.0,
    "tv_weight": 0.0,
    "data_source": "generic",
    "h5_path": "wts.h5",
    "outer_offset_train": None,
    "outer_offset_test": None,
    "big_gridsize": 10,
    "nimgs_train": 9,
    "nimgs_test": 3,
    "size": 392,
    "set_phi": False,
    "label": "",
    "npseed": 42,
}

#: Keys written at run time by a backend; not in DEFAULT_CFG.
RUNTIME_KEYS: tuple[str, ...] = ("intensity_scale", "probe")
#: Keys computed from other keys on every read; never stored in ``cfg``.
DERIVED_KEYS: tuple[str, ...] = ("bigN", "padding_size", "padded_size")


def _build_default_cfg() -> dict[str, Any]:
    """Dataclass defaults in legacy form, then the legacy-only keys."""
    d = dataclass_to_legacy_dict(TrainingConfig(model=ModelConfig()))
    for key in _UNSET_PATH_KEYS:
        del d[key]
    d["debug"] = next(f.default for f in fields(InferenceConfig) if f.name == "debug")
    overlap = d.keys() & LEGACY_ONLY_DEFAULTS.keys()
    if overlap:  # pragma: no cover - guards future edits
        raise RuntimeError(f"legacy-only keys shadow dataclass keys: {sorted(overlap)}")
    d.update(LEGACY_ONLY_DEFAULTS)
    return d


#: The initial contents of ``cfg``.  Never mutate it; use :func:`reset` to go back to it.
DEFAULT_CFG: dict[str, Any] = _build_default_cfg()

#: The global legacy dict.  Mutated in place only (``cfg.clear()``/``cfg.update()``), never rebound.
cfg: dict[str, Any] = copy.deepcopy(DEFAULT_CFG)

_DATACLASS_KEY_DOCS: dict[str, str] = {
    "N": "patch / diffraction size in pixels (ModelConfig.N)",
    "gridsize": "group side; C = gridsize**2 channels (ModelConfig.gridsize)",
    "n_filters_scale": "CNN filter width multiplier (ModelConfig.n_filters_scale)",
    "model_type": "'pinn' or 'supervised' (ModelConfig.model_type)",
    "architecture": "generator network, 'cnn' (ModelConfig.architecture)",
    "fno_modes": "FNO Fourier modes; unused by 'cnn' (ModelConfig.fno_modes)",
    "fno_width": "FNO width; unused by 'cnn' (ModelConfig.fno_width)",
    "fno_blocks": "FNO blocks; unused by 'cnn' (ModelConfig.fno_blocks)",
    "fno_cnn_blocks": "FNO CNN blocks; unused by 'cnn' (ModelConfig.fno_cnn_blocks)",
    "learned_input_channels": "FNO input channels; unused by 'cnn' (ModelConfig.learned_input_channels)",
    "max_hidden_channels": "FNO channel cap; unused by 'cnn' (ModelConfig.max_hidden_channels)",
    "resnet_width": "ResNet width; unused by 'cnn' (ModelConfig.resnet_width)",
    "fno_input_transform": "FNO input transform; unused by 'cnn' (ModelConfig.fno_input_transform)",
    "generator_output_mode": "generator output mode; unused by 'cnn' (ModelConfig.generator_output_mode)",
    "amp_activation": "amplitude head activation (ModelConfig.amp_activation)",
    "object.big": "reassemble the C patches of a group on one canvas (ModelConfig.object_big)",
    "probe.big": "decoder border branch active (ModelConfig.probe_big)",
    "probe.mask": "apply the N//4 disk mask to the illuminated object (ModelConfig.probe_mask)",
    "probe_mask_sigma": "soft probe-mask sigma; unused by the core (ModelConfig.probe_mask_sigma)",
    "probe_mask_diameter": "probe-mask diameter; unused by the core (ModelConfig.probe_mask_diameter)",
    "pad_object": "decoder emits N/2 centre plus border (ModelConfig.pad_object)",
    "probe_scale": "probe normalisation, mean|disk*probe| = 1/probe_scale (ModelConfig.probe_scale)",
    "gaussian_smoothing_sigma": "3x3 Gaussian smoothing of the illuminated object, 0 = off",
    "train_data_file_path": "training NPZ path as str (TrainingConfig.train_data_file)",
    "test_data_file_path": "test NPZ path as str (Training/InferenceConfig.test_data_file)",
    "model_path": "directory holding wts.h5.zip, as str (InferenceConfig.model_path)",
    "batch_size": "training batch size (TrainingConfig.batch_size)",
    "nepochs": "training epochs (TrainingConfig.nepochs)",
    "mae_weight": "weight of the diffraction-amplitude MAE loss (TrainingConfig.mae_weight)",
    "nll_weight": "weight of the Poisson NLL loss (TrainingConfig.nll_weight)",
    "realspace_mae_weight": "weight of the real-space MAE loss (TrainingConfig.realspace_mae_weight)",
    "realspace_weight": "weight of the real-space loss (TrainingConfig.realspace_weight)",
    "nphotons": "mean photons per pattern; intensity_scale = sqrt(nphotons)/(N/2)",
    "n_groups": "number of groups to train on / reconstruct (Training/InferenceConfig.n_groups)",
    "n_images": "deprecated alias of n_groups",
    "n_subsample": "number of scan points subsampled before grouping, None = all",
    "subsample_seed": "seed of the subsampling, None = unseeded",
    "neighbor_count": "K, nearest neighbours considered per group",
    "enable_oversampling": "K-choose-C oversampling of groups",
    "neighbor_pool_size": "neighbour pool for oversampling, None = neighbor_count",
    "positions.provided": "scan positions are given (TrainingConfig.positions_provided)",
    "probe.trainable": "probe is a trainable parameter (TrainingConfig.probe_trainable)",
    "intensity_scale.trainable": "log intensity scale is trainable (TrainingConfig.intensity_scale_trainable)",
    "output_prefix": "output directory as str (Training/InferenceConfig.output_dir)",
    "sequential_sampling": "take groups in scan order instead of at random",
    "backend": "'tensorflow' or 'pytorch' (Training/InferenceConfig.backend)",
    "debug": "inference debug outputs (InferenceConfig.debug)",
    "torch_loss_mode": "PyTorch loss, 'poisson' or 'mae'",
    "torch_mae_pred_l2_match_target": "PyTorch MAE mode: rescale prediction to the target's L2 norm",
    "gradient_clip_val": "gradient clipping threshold, None = off (PyTorch)",
    "gradient_clip_algorithm": "'norm', 'value' or 'agc' (PyTorch)",
    "optimizer": "the optimiser: Keras-formula Adam in both backends",
    "momentum": "SGD momentum (upstream PyTorch; no SGD here)",
    "weight_decay": "weight decay (upstream PyTorch; not implemented)",
    "adam_beta1": "Adam beta1 (fixed in both backends)",
    "adam_beta2": "Adam beta2 (fixed in both backends)",
    "scheduler": "learning-rate schedule (PyTorch)",
    "lr_warmup_epochs": "WarmupCosine warm-up epochs (PyTorch)",
    "lr_min_ratio": "WarmupCosine final lr / initial lr (PyTorch)",
    "plateau_factor": "ReduceLROnPlateau factor (PyTorch)",
    "plateau_patience": "ReduceLROnPlateau patience in epochs (PyTorch)",
    "plateau_min_lr": "ReduceLROnPlateau minimum lr (PyTorch)",
    "plateau_threshold": "ReduceLROnPlateau threshold (PyTorch)",
}

_LEGACY_KEY_DOCS: dict[str, str] = {
    "offset": "nominal spacing in pixels between group members; sizes the canvas (bigN)",
    "max_position_jitter": "canvas margin in pixels; padded_size = bigN + max_position_jitter",
    "default_probe_scale": "width parameter of the built-in default probe (std = N/(scale*pi**2))",
    "sim_jitter_scale": "std in pixels of random jitter added to simulated grid positions",
    "tv_weight": "weight of a total-variation loss on the object (0 = off)",
    "data_source": "kind of data, one of DATA_SOURCES ('generic' for NPZ input)",
    "h5_path": "stem of the model bundle name in the output directory (wts.h5 -> wts.h5.zip)",
    "outer_offset_train": "legacy grid simulation: spacing between training groups, None = unset",
    "outer_offset_test": "legacy grid simulation: spacing between test groups, None = unset",
    "big_gridsize": "legacy grid simulation: groups per side",
    "nimgs_train": "legacy grid simulation: number of training objects",
    "nimgs_test": "legacy grid simulation: number of test objects",
    "size": "legacy simulation: side in pixels of a synthetic object",
    "set_phi": "legacy simulation: give synthetic objects a phase",
    "label": "free-form run label",
    "npseed": "legacy NumPy seed; unused by ptychopinn (kept for upstream snapshots)",
}

_RUNTIME_KEY_DOCS: dict[str, str] = {
    "intensity_scale": "runtime: s = sqrt(nphotons)/(N/2) (or the learned value), float > 0",
    "probe": "runtime: normalised probe, numpy complex array [N, N, 1]",
}

_DERIVED_KEY_DOCS: dict[str, str] = {
    "bigN": "derived: N + (gridsize - 1) * offset",
    "padding_size": "derived: (gridsize - 1) * offset + max_position_jitter",
    "padded_size": "derived: canvas side P = bigN + max_position_jitter",
}

#: One-line meaning of every key ``cfg`` can hold (DEFAULT_CFG, runtime and derived keys).
KEY_DOCS: dict[str, str] = {
    **_DATACLASS_KEY_DOCS, **_LEGACY_KEY_DOCS, **_RUNTIME_KEY_DOCS, **_DERIVED_KEY_DOCS,
}


# --------------------------------------------------------------------------- set() validation
def _label_rule(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(name, value, "a string")
    return value


def _h5_path_rule(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(name, value, "a non-empty file name")
    return value


def _probe_rule(name: str, value: Any) -> np.ndarray:
    allowed = "a numpy complex array of shape [N, N, 1]"
    if not isinstance(value, np.ndarray) or not np.iscomplexobj(value):
        raise ConfigError(name, type(value).__name__ if not isinstance(value, np.ndarray) else value.dtype,
                          allowed)
    if value.ndim != 3 or value.shape[0] != value.shape[1] or value.shape[2] != 1 or value.shape[0] == 0:
        raise ConfigError(name, f"array of shape {value.shape}", allowed)
    return value


_NONNEG_INT = _int_rule(0)
_POS_INT = _int_rule(1)
_OPT_POS_INT = _int_rule(1, optional=True)
_NONNEG_FLOAT = _float_rule(0.0)
_POS_FLOAT = _float_rule(0.0, low_open=True)

_OWN_RULES = {
    "offset": _NONNEG_INT,
    "max_position_jitter": _NONNEG_INT,
    "default_probe_scale": _POS_FLOAT,
    "sim_jitter_scale": _NONNEG_FLOAT,
    "tv_weight": _NONNEG_FLOAT,
    "data_source": _choice_rule(DATA_SOURCES),
    "h5_path": _h5_path_rule,
    "outer_offset_train": _OPT_POS_INT,
    "outer_offset_test": _OPT_POS_INT,
    "big_gridsize": _POS_INT,
    "nimgs_train": _POS_INT,
    "nimgs_test": _POS_INT,
    "size": _POS_INT,
    "set_phi": _bool_rule,
    "label": _label_rule,
    "npseed": _int_rule(0, optional=True),
    "intensity_scale": _POS_FLOAT,
    "probe": _probe_rule,
}


def _rule_for(key: str):
    return _OWN_RULES.get(key) or legacy_rule(key)


# --------------------------------------------------------------------------- accessors
_MISSING = object()


def get(key: str, default: Any = _MISSING) -> Any:
    """Value of ``key``: ``cfg``, else ``DEFAULT_CFG``, else ``default``, else KeyError.

    Derived keys (``bigN``, ``padding_size``, ``padded_size``) are computed from
    the current values on every call and never stored.  The KeyError names the
    key and lists close matches among the known keys.
    """
    if key in DERIVED_KEYS:
        return _DERIVED[key]()
    if key in cfg:
        return cfg[key]
    if key in DEFAULT_CFG:
        return copy.deepcopy(DEFAULT_CFG[key])
    if default is not _MISSING:
        return default
    known = sorted(cfg.keys() | DEFAULT_CFG.keys() | KEY_DOCS.keys())
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6) if isinstance(key, str) else []
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"params.cfg has no key {key!r}{hint} (keys are listed in specs/config.md)")


def set(key: str, value: Any) -> None:  # noqa: A001 - upstream name
    """Write ``cfg[key] = value`` after validating it.

    Known keys (dataclass-backed, legacy-only and runtime keys) are checked
    and normalised (Paths become ``str``, NumPy scalars Python scalars); an
    invalid value raises ConfigError and leaves ``cfg`` unchanged.  Derived keys
    cannot be set.  Unknown keys are written as given.
    """
    if key in DERIVED_KEYS:
        raise ConfigError(
            key, value, "nothing: it is derived from N, gridsize, offset and max_position_jitter",
            fix="set those keys instead",
        )
    rule = _rule_for(key)
    cfg[key] = rule(key, value) if rule is not None else value


def check_value(key: str, value: Any) -> Any:
    """``value`` checked and normalised by the rule of ``key`` (as :func:`set` would store it).

    Unknown keys and derived keys pass unchanged; ``cfg`` is never touched.  Raises ConfigError
    for a value the key's rule refuses (used to vet a bundle's params snapshot before it is
    restored).
    """
    if key in DERIVED_KEYS:
        return value
    rule = _rule_for(key)
    return rule(key, value) if rule is not None else value


def validate() -> None:
    """Check every known key present in ``cfg``; raise ConfigError for the first invalid value."""
    for key, value in cfg.items():
        if key in DERIVED_KEYS:
            continue
        rule = _rule_for(key)
        if rule is not None:
            rule(key, value)


def get_bigN() -> int:
    """``N + (gridsize - 1) * offset``: side of the region a group's patches cover."""
    return conventions.big_n(get("N"), get("gridsize"), get("offset"))


def get_padding_size() -> int:
    """``(gridsize - 1) * offset + max_position_jitter``: padded_size minus N."""
    return (int(get("gridsize")) - 1) * int(get("offset")) + int(get("max_position_jitter"))


def get_padded_size() -> int:
    """Canvas side ``P = N + (gridsize - 1) * offset + max_position_jitter`` in pixels."""
    return conventions.padded_size(get("N"), get("gridsize"), get("offset"), get("max_position_jitter"))


_DERIVED = {"bigN": get_bigN, "padding_size": get_padding_size, "padded_size": get_padded_size}


def params() -> dict[str, Any]:
    """Deep copy of ``cfg`` with the derived ``bigN`` and ``padded_size`` added (``cfg`` is untouched)."""
    d = copy.deepcopy(cfg)
    d["bigN"] = get_bigN()
    d["padded_size"] = get_padded_size()
    return d


def snapshot() -> dict[str, Any]:
    """Deep copy of ``cfg``, for :func:`restore`."""
    return copy.deepcopy(cfg)


def restore(snap: Mapping[str, Any]) -> None:
    """Make ``cfg`` equal to ``snap`` (in place; ``cfg`` is not rebound)."""
    if not isinstance(snap, Mapping):
        raise TypeError(f"restore() expects a mapping from snapshot(), got {type(snap).__name__}")
    new = copy.deepcopy(dict(snap))
    cfg.clear()
    cfg.update(new)


def reset() -> None:
    """Make ``cfg`` equal to ``DEFAULT_CFG`` again (in place)."""
    restore(DEFAULT_CFG)


@contextmanager
def isolated() -> Iterator[dict[str, Any]]:
    """Context manager: changes to ``cfg`` inside the block are undone on exit (even on error)."""
    snap = snapshot()
    try:
        yield cfg
    finally:
        restore(snap)

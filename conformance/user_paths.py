"""Framework-free parts of the user-path stages (``data``, ``config``, ``workflow``, ``inference``).

These stages run each backend's *user-facing* code instead of harness-built models
(``specs/conformance.md``, "User paths").  This module holds what every side shares and what
the NumPy reference computes; the backend-specific calls live in :mod:`conformance.backends`.

* :func:`config_case`: a config in which **every** field a config door can carry differs from its
  dataclass default (generated from the dataclass fields, not hand-written, so a field added later is
  covered automatically); :func:`bridged_fields` finds, by perturbing each torch-side field, which
  canonical fields the torch config bridge carries.
* :data:`DOORS`: the config doors and the canonical fields each can express
  (:func:`door_case`: the part of the case a door can carry; the other fields stay at their defaults);
  :func:`ptycho_train_argv` / :func:`torch_train_argv`: the same run as command-line flags.
* :func:`execution_case` / :func:`torch_execution_argv` / :func:`expected_execution`: the PyTorch execution
  config (Trainer, checkpoints, early stopping, loggers, devices) through the torch doors: every field a
  door can carry set to a generated non-default value, and the doors given none of them must resolve to
  the core's defaults (a CLI default that drifted from ``PyTorchExecutionConfig`` is a lost setting too).
* :func:`refusal_argv` / :data:`REFUSAL`: each training CLI given a file that is not a data file must
  refuse it the same way (exit status 2, the file named, no output directory left behind).
* :func:`reference_batches`: the batches the core's grouping (``ptycho.loader`` via
  ``create_ptycho_data_container``) and batch plan (``ptycho.training_plan``) define for a scenario:
  what each backend's own pipeline must yield bit for bit.

Nothing here imports tensorflow or torch.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptycho import conventions
from ptycho.config import config as cc
from ptycho.config.config import (
    DEFAULT_ONLY_FIELDS,
    InferenceConfig,
    ModelConfig,
    PyTorchExecutionConfig,
    TrainingConfig,
)

__all__ = [
    "DATA_EPOCHS",
    "DOORS",
    "INFERENCE_CASE_FIELDS",
    "EXECUTION_DOORS",
    "REFUSAL",
    "REFUSAL_DOORS",
    "REFUSAL_EXPECTED",
    "TORCH_EXECUTION_FLAGS",
    "TORCH_RENAMED",
    "bridged_fields",
    "config_case",
    "door_case",
    "door_config",
    "execution_case",
    "expected_execution",
    "expected_trainable",
    "inference_case",
    "ptycho_train_argv",
    "put_batches",
    "refusal_argv",
    "reference_batches",
    "torch_execution_argv",
    "torch_train_argv",
]

#: Training epochs whose batch order the data stage records (epoch 0 and a reshuffled epoch 1).
DATA_EPOCHS = 2
#: Config paths of the config stage, relative to the scenario directory.
CONFIG_OUT = "config_out"
#: Fields no door is asked to carry: ``n_images`` is the deprecated alias of ``n_groups`` (it must equal
#: it or be None); ``model`` is the nested ModelConfig (its fields are in the case themselves); and the
#: fields that accept only their default (``DEFAULT_ONLY_FIELDS``: no other valid value exists, and
#: ``tests/test_config.py`` checks that every other value is refused with a ConfigError naming the field).
_NOT_CASE = frozenset({"n_images", "model"}).union(*DEFAULT_ONLY_FIELDS.values())
#: Values the generator cannot derive from a default: ``nll_weight`` is carried by the torch ``nll`` bool,
#: which can only say 1.0 (the default) or 0.0; ``torch_loss_mode`` 'mae' is what nll 0 means there.
#: ``batch_size`` / ``n_groups``: a consistent pair (batch <= groups <= the config scenario's 80 positions),
#: so no door has a reason to clamp the batch to the data (the CLIs do, with a message; the dataclasses don't).
_PINNED: dict[str, Any] = {"nll_weight": 0.0, "torch_loss_mode": "mae", "batch_size": 8, "n_groups": 24}

#: Torch-side field -> canonical field where the names differ (the bridge's documented table,
#: ``ptycho_torch/config_bridge.py``; same-named fields map to themselves).  Values are converted by
#: :data:`_TORCH_VALUE`.  ``tests/conformance/test_user_paths.py`` checks that every torch config field
#: maps to a canonical field through this table or its own name.
TORCH_RENAMED: dict[str, str] = {
    "grid_size": "gridsize",
    "mode": "model_type",
    "epochs": "nepochs",
    "K": "neighbor_count",
    "nll": "nll_weight",
    "loss_function": "torch_loss_mode",
}
_TORCH_VALUE: dict[str, Callable[[Any], Any]] = {
    "grid_size": lambda g: (int(g), int(g)),
    "mode": lambda t: {"pinn": "Unsupervised", "supervised": "Supervised"}[t],
    "nll": lambda w: bool(w > 0),
    "loss_function": lambda m: {"poisson": "Poisson", "mae": "MAE"}[m],
}

#: ``ptycho_train`` flag -> canonical field (``ptycho/cli/train.py``; ``N`` comes from the data file).
PTYCHO_TRAIN_FLAGS: dict[str, str] = {
    "--gridsize": "gridsize", "--n_groups": "n_groups", "--seed": "subsample_seed", "--batch_size": "batch_size",
    "--nepochs": "nepochs", "--nphotons": "nphotons", "--n_filters_scale": "n_filters_scale",
}  # fmt: skip
#: ``python -m ptycho_torch.train`` flag -> canonical field (``ptycho_torch/train.py``).
TORCH_TRAIN_FLAGS: dict[str, str] = {
    "--n_groups": "n_groups", "--n_subsample": "n_subsample", "--gridsize": "gridsize", "--batch_size": "batch_size",
    "--nepochs": "nepochs", "--nphotons": "nphotons", "--neighbor_count": "neighbor_count",
    "--seed": "subsample_seed", "--torch_loss_mode": "torch_loss_mode", "--scheduler": "scheduler",
}  # fmt: skip
#: Fields every door sets from the scenario directory (identical relative paths on every door).
_PATHS = {"train_data_file": Path("train.npz"), "test_data_file": Path("test.npz"), "output_dir": Path(CONFIG_OUT)}

#: door -> (the sides that run it, the canonical fields it can express: None = every field of the case).
DOORS: dict[str, tuple[tuple[str, ...], frozenset[str] | None]] = {
    "dataclass": (("tensorflow", "pytorch"), None),
    "torch_factory": (("pytorch",), None),
    "torch_configs": (("pytorch",), None),
    "ptycho_train": (("tensorflow", "pytorch"), frozenset({"N", *PTYCHO_TRAIN_FLAGS.values(), *_PATHS})),
    "torch_train": (("pytorch",), frozenset({"N", *TORCH_TRAIN_FLAGS.values(), *_PATHS})),
}
#: InferenceConfig fields the inference payload door is given (everything but the paths and the model).
INFERENCE_CASE_FIELDS: tuple[str, ...] = (
    "n_groups", "n_subsample", "subsample_seed", "neighbor_count", "enable_oversampling", "neighbor_pool_size",
    "debug",
)  # fmt: skip


# --------------------------------------------------------------------------- generated cases
def _different(name: str, hint: Any, default: Any) -> Any:
    """A valid value of a config field that differs from ``default`` (by type: flip, next option, halve, +1)."""
    if name in _PINNED:
        return _PINNED[name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return args[(args.index(default) + 1) % len(args)]
    if hint is bool:
        return not default
    if hint is int or (int in args and default is None and float not in args):
        return 3 if default is None else int(default) + 1
    if hint is float or float in args:
        if default is None:
            return 0.5
        return 0.25 if default == 0 else float(default) / 2.0
    raise TypeError(f"no generated value for config field {name!r} of type {hint!r}")


def _field_values(cls: type, skip: Sequence[str]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls, vars(cc))
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.name in _NOT_CASE or f.default is dataclasses.MISSING and f.name != "model":
            continue
        out[f.name] = _different(f.name, hints[f.name], f.default)
    return out


def config_case(N: int, gridsize: int, backend: str = "pytorch") -> dict[str, Any]:
    """Canonical ModelConfig + TrainingConfig fields, each different from its default (flat dict).

    ``N`` and ``gridsize`` come from the scenario (its data file has ``N x N`` patterns); both
    must differ from the defaults (64 and 1), which :func:`check_case` enforces.  ``backend`` is the
    side's own name (each side must record itself).
    """
    case = _field_values(ModelConfig, ("N", "gridsize"))
    case.update(N=int(N), gridsize=int(gridsize))
    case.update(_field_values(TrainingConfig, tuple(_PATHS) + ("backend",)))
    case.update(_PATHS)
    case["backend"] = backend
    return case


def inference_case() -> dict[str, Any]:
    """InferenceConfig fields of :data:`INFERENCE_CASE_FIELDS`, each different from its default."""
    values = _field_values(InferenceConfig, ("model_path", "test_data_file", "output_dir", "backend"))
    return {k: values[k] for k in INFERENCE_CASE_FIELDS}


def defaults() -> dict[str, Any]:
    """The default of every case field (flat: ModelConfig then TrainingConfig)."""
    out = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    out.update({f.name: f.default for f in dataclasses.fields(TrainingConfig) if f.name != "model"})
    return out


def check_case(case: Mapping[str, Any]) -> list[str]:
    """The case fields equal to their default (a field whose value is its default proves nothing)."""
    d = defaults()
    return sorted(k for k, v in case.items() if k in d and type(v) is type(d[k]) and v == d[k])


def door_case(door: str, case: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``case`` that ``door`` can carry (:data:`DOORS`)."""
    fields = DOORS[door][1]
    return dict(case) if fields is None else {k: v for k, v in case.items() if k in fields}


def door_config(door: str, case: Mapping[str, Any], backend: str) -> TrainingConfig:
    """The TrainingConfig a door should produce: its part of the case, every other field at its default."""
    sub = door_case(door, case)
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    model = ModelConfig(**{k: v for k, v in sub.items() if k in model_names})
    rest = {k: v for k, v in sub.items() if k not in model_names and k != "backend"}
    return TrainingConfig(model=model, backend=backend, **rest)


def torch_side_values(case: Mapping[str, Any], torch_classes: Sequence[type]) -> list[dict[str, Any]]:
    """The case as keyword arguments of each torch config class (same names, or :data:`TORCH_RENAMED`)."""
    out = []
    for cls in torch_classes:
        kw = {}
        for f in dataclasses.fields(cls):
            canonical = TORCH_RENAMED.get(f.name, f.name)
            if canonical in case:
                value = case[canonical]
                kw[f.name] = _TORCH_VALUE[f.name](value) if f.name in _TORCH_VALUE else value
        out.append(kw)
    return out


def bridged_fields(to_model: Callable[..., Any], to_training: Callable[..., Any], torch_classes: Sequence[type],
                   ) -> dict[str, set[str]]:
    """Torch field -> the canonical fields that change when only it changes (found by perturbation).

    ``to_model(data, model)`` / ``to_training(model_tf, data, model, training)`` are the bridge's
    functions; ``torch_classes`` = ``(DataConfig, ModelConfig, TrainingConfig)``.  A torch field
    whose change reaches no canonical field is mapped to the empty set: the bridge drops it.
    """
    required = {"train_data_file": Path("train.npz"), "n_groups": 7, "test_data_file": Path("test.npz")}

    def bridge(which: type | None, field: str | None, value: Any) -> dict[str, Any]:
        objs = []
        for cls in torch_classes:
            kw = {k: v for k, v in required.items() if k in {f.name for f in dataclasses.fields(cls)}}
            if cls is which:
                kw[field] = value
            objs.append(cls(**kw))
        data, model, training = objs
        model_tf = to_model(data, model)
        cfg = to_training(model_tf, data, model, training)
        flat = dataclasses.asdict(cfg)
        flat.update(flat.pop("model"))
        return flat

    base = bridge(None, None, None)
    out: dict[str, set[str]] = {}
    for cls in torch_classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in required:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            value = _torch_different(f.name, hints[f.name], default)
            got = bridge(cls, f.name, value)
            out[f.name] = {k for k in base if got[k] != base[k]}
    return out


def _torch_different(name: str, hint: Any, default: Any) -> Any:
    """A valid torch-side value different from ``default`` (strings through the bridge's maps)."""
    alternatives = {"mode": "Supervised", "amp_activation": "relu", "loss_function": "MAE", "scheduler": "Exponential",
                    "grid_size": (2, 2), "N": 32, "output_dir": Path("elsewhere"), "learning_rate": 5e-4}
    if name in alternatives:
        return alternatives[name]
    return _different(name, hint, default)


# --------------------------------------------------------------------------- command-line doors
def _flag_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def ptycho_train_argv(case: Mapping[str, Any], backend: str) -> list[str]:
    """``ptycho_train`` arguments describing the case (the fields the CLI exposes)."""
    argv = ["--backend", backend, "--train_data_file", str(case["train_data_file"]), "--test_data_file",
            str(case["test_data_file"]), "--output_dir", str(case["output_dir"]), "--quiet"]
    for flag, name in PTYCHO_TRAIN_FLAGS.items():
        argv += [flag, _flag_value(case[name])]
    return argv


def torch_train_argv(case: Mapping[str, Any]) -> list[str]:
    """``python -m ptycho_torch.train`` arguments describing the case (the fields the CLI exposes)."""
    argv = ["--train_data_file", str(case["train_data_file"]), "--test_data_file", str(case["test_data_file"]),
            "--output_dir", str(case["output_dir"]), "--accelerator", "cpu", "--quiet", "--logger", "none"]
    for flag, name in TORCH_TRAIN_FLAGS.items():
        argv += [flag, _flag_value(case[name])]
    return argv


# --------------------------------------------------------------------------- execution config (PyTorch doors)
#: ``PyTorchExecutionConfig`` field -> its ``python -m ptycho_torch.train`` flag (a bool field: the flag that
#: sets the non-default value).  ``accelerator`` stays 'cpu' (the gate's machine has no GPU) and
#: ``enable_progress_bar`` is decided by the terminal (the gate has none: False), so neither is generated.
TORCH_EXECUTION_FLAGS: dict[str, str] = {
    "learning_rate": "--learning_rate", "deterministic": "--no-deterministic", "logger_backend": "--logger",
    "enable_checkpointing": "--disable_checkpointing", "checkpoint_save_top_k": "--checkpoint_save_top_k",
    "checkpoint_monitor_metric": "--checkpoint_monitor", "checkpoint_mode": "--checkpoint_mode",
    "early_stop_patience": "--early_stop_patience", "accum_steps": "--accumulate_grad_batches",
    "gradient_clip_val": "--gradient_clip_val", "devices": "--devices", "num_nodes": "--num_nodes",
    "strategy": "--strategy", "num_workers": "--num_workers", "precision": "--precision",
}  # fmt: skip
#: Non-default values the generator cannot derive from a type (str fields, unions); 2 devices x 2 nodes
#: divide the case's batch of 8 (the doors stop before any process starts).
_EXECUTION_PINNED: dict[str, Any] = {"deterministic": False, "logger_backend": "tensorboard", "devices": 2,
                                     "num_nodes": 2, "strategy": "ddp_spawn", "checkpoint_monitor_metric": "train_loss"}
#: The execution doors: door -> the sides that run it.  ``torch_train``: the params door's argv (no
#: execution flag but --scheduler, --accelerator cpu, --quiet, --logger none); ``torch_execution``: every
#: :data:`TORCH_EXECUTION_FLAGS` flag; ``torch_factory``: ``create_training_payload`` with the execution
#: case among its overrides (execution keys first); ``ptycho_train``: ``ptycho_train --backend pytorch``.
EXECUTION_DOORS: tuple[str, ...] = ("torch_train", "torch_execution", "torch_factory", "ptycho_train")


def execution_case() -> dict[str, Any]:
    """Every :data:`TORCH_EXECUTION_FLAGS` field of ``PyTorchExecutionConfig`` at a value different from its default."""
    hints = typing.get_type_hints(PyTorchExecutionConfig, vars(cc))
    defaults = {f.name: f.default for f in dataclasses.fields(PyTorchExecutionConfig)}
    return {name: _EXECUTION_PINNED[name] if name in _EXECUTION_PINNED
            else _different(name, hints[name], defaults[name]) for name in TORCH_EXECUTION_FLAGS}


def torch_execution_argv(case: Mapping[str, Any]) -> list[str]:
    """``python -m ptycho_torch.train`` arguments of the ``torch_execution`` door: the config case's paths and a
    consistent n_groups / batch, then every execution field of :func:`execution_case` as its flag."""
    argv = ["--train_data_file", str(case["train_data_file"]), "--output_dir", str(case["output_dir"]),
            "--n_groups", str(case["n_groups"]), "--batch_size", str(case["batch_size"]), "--accelerator", "cpu"]
    for name, value in execution_case().items():
        flag = TORCH_EXECUTION_FLAGS[name]
        argv += [flag] if isinstance(value, bool) else [flag, _flag_value(value)]
    return argv


def expected_execution(door: str, case: Mapping[str, Any]) -> dict[str, Any]:
    """The execution config ``door`` must hand to the training workflow (every field; JSON values): the core's
    ``PyTorchExecutionConfig`` defaults plus exactly what the door was told."""
    told: dict[str, Any] = {"accelerator": "cpu", "enable_progress_bar": False}
    if door == "torch_train":
        told.update(logger_backend=None, scheduler=case["scheduler"])
    elif door == "torch_execution":
        told.update(execution_case())
    elif door == "torch_factory":  # the case's own execution fields (scheduler, clipping) win over the generated ones
        names = {f.name for f in dataclasses.fields(PyTorchExecutionConfig)}
        told.update(execution_case(), **{k: v for k, v in case.items() if k in names})
    elif door != "ptycho_train":  # ptycho_train: no execution flag given (its CSV logger is the default)
        raise ValueError(f"unknown execution door {door!r}; expected one of {EXECUTION_DOORS}")
    return execution_record(PyTorchExecutionConfig(**told))


def execution_record(config: PyTorchExecutionConfig) -> dict[str, Any]:
    """``config`` as the JSON-ready dict a record stores (every field)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


# --------------------------------------------------------------------------- refused inputs
#: What every CLI must do with inputs it cannot use: exit status 2 (a refused input,
#: ``ptycho.cli._common.exit_status``), no output directory created.
REFUSAL: dict[str, Any] = {"exit": 2, "output_dir_created": False}
#: Door -> the sides that run it: the training CLIs (given a training file that is not data), the inference
#: CLIs (given a model directory with no bundle and a test file that is not data), and ``train_api_world``:
#: the PyTorch training API asked for more data-parallel replicas than the global batch has groups
#: (``ptycho.distributed.check_world_size``), which must refuse before any process starts.
REFUSAL_DOORS: dict[str, tuple[str, ...]] = {
    "ptycho_train": ("tensorflow", "pytorch"), "torch_train": ("pytorch",),
    "ptycho_inference": ("tensorflow", "pytorch"), "torch_inference": ("pytorch",),
    "train_api_world": ("pytorch",),
}
#: The expected record of each refusal door (``conformance.contracts.outcome`` for the API door).
REFUSAL_EXPECTED: dict[str, dict[str, Any]] = {
    **{door: REFUSAL for door in REFUSAL_DOORS if door != "train_api_world"},
    "train_api_world": {"outcome": "refuses"},
}


def refusal_argv(door: str, side: str, bad_file: Path, output_dir: Path) -> list[str]:
    """Arguments of ``door`` reading ``bad_file`` (not an NPZ; the inference doors also name a model directory
    that does not exist) and writing into ``output_dir``."""
    if door == "ptycho_train":
        return ["--backend", side, "--train_data_file", str(bad_file), "--output_dir", str(output_dir), "--quiet"]
    if door == "torch_train":
        return ["--train_data_file", str(bad_file), "--output_dir", str(output_dir), "--n_groups", "8",
                "--accelerator", "cpu", "--quiet", "--logger", "none"]
    no_model = ["--model_path", str(bad_file.with_name("no_model")), "--test_data", str(bad_file), "--output_dir",
                str(output_dir), "--quiet"]
    if door == "ptycho_inference":
        return [*no_model, "--backend", side]
    if door == "torch_inference":
        return [*no_model, "--accelerator", "cpu"]
    raise ValueError(f"unknown refusal door {door!r}; expected one of {sorted(REFUSAL_DOORS)}")


# --------------------------------------------------------------------------- expected batches
def put_batches(put: Callable[[str, np.ndarray], None], prefix: str,
                batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """Record batches as ``<prefix>/x_scaled`` ``[n, N, N, C]`` and ``<prefix>/positions`` ``[n, 1, 2, C]`` (the
    batches concatenated in the order they came, channels-last float32) and ``<prefix>/sizes`` (int64, one
    entry per batch): order, content and the last partial batch in three arrays."""
    if not batches:  # recorded as empty, so the judge names the arrays that differ from the expected batches
        put(f"{prefix}/x_scaled", np.zeros((0,), np.float32))
        put(f"{prefix}/positions", np.zeros((0,), np.float32))
        put(f"{prefix}/sizes", np.zeros((0,), np.int64))
        return
    put(f"{prefix}/x_scaled", np.concatenate([np.asarray(x, np.float32) for x, _ in batches]))
    put(f"{prefix}/positions", np.concatenate([np.asarray(p, np.float32) for _, p in batches]))
    put(f"{prefix}/sizes", np.asarray([len(x) for x, _ in batches], np.int64))


def reference_batches(config: TrainingConfig, train_file: Path, test_file: Path) -> dict[str, list]:
    """What the core defines: ``{'train/e<i>', 'val', 'infer': [(x_scaled, positions), ...]}``.

    Groups: ``create_ptycho_data_container`` (``RawData.generate_grouped_data`` + ``ptycho.loader.load``)
    with the workflow seed; model inputs ``(X * s, coords_nominal)``, ``s = sqrt(nphotons) / (N/2)``;
    training batches ``batches(epoch_order(n_train, seed, e), batch_size)`` over the first groups,
    validation the last ``VALIDATION_FRACTION`` in order; inference every test group in order,
    ``batch_size`` at a time.
    """
    from ptycho.raw_data import RawData
    from ptycho.training_plan import batches, epoch_order, split_train_val
    from ptycho.workflows.common import create_ptycho_data_container, model_inputs, workflow_seed

    seed = workflow_seed(config)
    scale = conventions.intensity_scale(config.nphotons, config.model.N)
    bs = int(config.batch_size)
    train = create_ptycho_data_container(RawData.from_file(train_file, diffraction_is="amplitude"), config, seed=seed)
    x, pos = model_inputs(train, scale)
    train_idx, val_idx = split_train_val(len(x))
    out: dict[str, list] = {}
    for e in range(min(DATA_EPOCHS, int(config.nepochs))):
        order = train_idx[epoch_order(len(train_idx), seed=seed, epoch=e, shuffle=not config.sequential_sampling)]
        out[f"train/e{e}"] = [(x[b], pos[b]) for b in batches(order, bs)]
    if len(val_idx):
        out["val"] = [(x[b], pos[b]) for b in batches(val_idx, bs)]
    test = create_ptycho_data_container(RawData.from_file(test_file, diffraction_is="amplitude"), config, seed=seed)
    xt, post = model_inputs(test, scale)
    out["infer"] = [(xt[b], post[b]) for b in batches(np.arange(len(xt)), bs)]
    return out


# --------------------------------------------------------------------------- workflow expectations
def expected_trainable(spec_names: Sequence[str], *, intensity_scale_trainable: bool, probe_trainable: bool
                       ) -> list[str]:
    """The canonical parameters a training run must update, from the network spec and the two flags."""
    frozen = set()
    if not intensity_scale_trainable:
        frozen.add("intensity_scale.log_scale")
    if not probe_trainable:
        frozen |= {"probe.real", "probe.imag"}
    return sorted(n for n in spec_names if n not in frozen)


def finite_or_none(values: Sequence[float]) -> list[float | None]:
    """JSON-safe list (NaN/inf as None)."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]

"""The TensorFlow side of the parity API the conformance harness drives (``BACKENDS.md``).

All arrays in and out are NumPy in the data-contract layout (channels-last images
``[B, N, N, C]``, positions ``[B, 1, 2, C]``); weights are canonical dicts
(:mod:`ptycho.canonical_weights`).  ``ptycho_torch.parity_api`` has the same functions.

* :func:`build` -> an opaque :class:`Handle`; :func:`get_weights` / :func:`set_weights`;
* :func:`forward` -> every named intermediate of ``ptycho.reference.model.forward``;
* :func:`loss_and_grads`, :func:`train_steps` (Adam, Keras formula; the optimizer state
  lives in the handle, so successive calls continue one optimisation);
* :func:`optimizer_steps`: the training optimizer (:func:`ptycho_tf.optim.make_optimizer`) alone,
  stepped on given gradients;
* :func:`physics_op` -> the ``ptycho_tf.physics`` op of the same name as the reference op;
* :func:`save_bundle` / :func:`load_bundle` through :mod:`ptycho_tf.model_manager`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ptycho.config.config import TrainingConfig
from ptycho.loss_weights import LossWeights
from ptycho.network_spec import network_spec_from_config
from ptycho_tf import BACKEND, model_manager, physics
from ptycho_tf import model as tf_model
from ptycho_tf.canonical import canonical_name, initial_weights
from ptycho_tf.model import PtychoPINNModels, build_models
from ptycho_tf.optim import make_optimizer
from ptycho_tf.training import Trainer

#: The training options' defaults come from the core's TrainingConfig (dataclass field defaults).
_TRAINING_DEFAULTS = TrainingConfig

__all__ = [
    "run_workflow",
    "BACKEND",
    "PHYSICS_OPS",
    "Handle",
    "build",
    "forward",
    "get_weights",
    "load_bundle",
    "loss_and_grads",
    "optimizer_steps",
    "physics_op",
    "save_bundle",
    "set_weights",
    "train_steps",
]


#: Reference op name -> TensorFlow implementation (same arguments as ``ptycho.reference.physics``).
PHYSICS_OPS = {
    "translate": physics.translate,
    "reassemble_patches": physics.reassemble_patches,
    "extract_patches": physics.extract_patches,
    "trim": physics.trim,
    "pad_object": physics.pad_object,
    "pad_to": physics.pad_to,
    "center_crop": physics.center_crop,
    "illuminate": physics.illuminate,
    "diffract": physics.diffract,
    "diffract_channels": physics.diffract_channels,
    "gaussian_smooth3x3": physics.gaussian_smooth3x3,
    "combine_complex": physics.combine_complex,
    "reassemble_position": physics.reassemble_position,
    "poisson_nll": physics.poisson_nll,
    "mean_absolute_error": physics.mean_absolute_error,
    "normalize_x_full": physics.normalize_x_full,
}


@dataclass
class Handle:
    """The native models of one network plus the optimizer state of :func:`train_steps`."""

    models: PtychoPINNModels
    _trainers: dict[tuple[LossWeights, bytes | None], Trainer] = field(default_factory=dict, repr=False)
    _optimizer: Any = field(default=None, repr=False)

    @property
    def spec(self):
        return self.models.spec

    def trainer(self, weights: LossWeights, bad_pixels: np.ndarray | None = None) -> Trainer:
        """A compiled :class:`Trainer` for these loss weights and detector mask, sharing one Adam optimizer."""
        if self._optimizer is None:
            self._optimizer = make_optimizer()
        mask = None if bad_pixels is None else np.asarray(bad_pixels, dtype=bool)
        key = (weights, None if mask is None else mask.tobytes() + str(mask.shape).encode())
        if key not in self._trainers:
            self._trainers[key] = Trainer(self.models.autoencoder, weights, self._optimizer, mask)
        return self._trainers[key]


def build(
    model_config: Any,
    *,
    weights: Mapping[str, np.ndarray] | None,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
    intensity_scale_trainable: bool = _TRAINING_DEFAULTS.intensity_scale_trainable,
    probe_trainable: bool = _TRAINING_DEFAULTS.probe_trainable,
    seed: int = 0,
) -> Handle:
    """Build the Keras models for ``model_config`` (a ``ModelConfig``).

    ``weights`` is a canonical dict; None uses ``init_canonical_weights(spec, seed=seed,
    log_scale=log(params.cfg['intensity_scale']), probe=params.cfg['probe'])``.
    """
    spec = network_spec_from_config(model_config)
    models = build_models(
        spec,
        weights=initial_weights(spec, seed=seed) if weights is None else weights,
        probe_mask=probe_mask,
        gaussian_smoothing_sigma=gaussian_smoothing_sigma,
        intensity_scale_trainable=intensity_scale_trainable,
        probe_trainable=probe_trainable,
    )
    return Handle(models)


def get_weights(handle: Handle) -> dict[str, np.ndarray]:
    """Every parameter as ``{canonical name: float32 ndarray}`` (HWIO kernels)."""
    return handle.models.canonical_weights()


def set_weights(handle: Handle, weights: Mapping[str, np.ndarray]) -> None:
    """Load a canonical weight dict (validated strictly) into the handle's models."""
    handle.models.set_canonical_weights(weights)


def _inputs(x_scaled: np.ndarray, positions: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.constant(np.asarray(x_scaled, np.float32)), tf.constant(np.asarray(positions, np.float32))


def _check_inputs(spec: Any, x_scaled: np.ndarray, positions: np.ndarray) -> None:
    """ValueError unless ``x_scaled`` is ``[B, N, N, C]`` and ``positions`` ``[B, 1, 2, C]`` for the network: a Keras
    functional model only warns on an incompatible input shape and then fails deep inside a layer."""
    x, p = np.shape(x_scaled), np.shape(positions)
    if len(x) != 4 or x[1:] != (spec.N, spec.N, spec.C):
        raise ValueError(f"network input must have shape [B, {spec.N}, {spec.N}, C={spec.C}], got {list(x)}")
    if p != (x[0], 1, 2, spec.C):
        raise ValueError(f"positions must have shape [B, 1, 2, C] = {[x[0], 1, 2, spec.C]}, got {list(p)}")


def forward(handle: Handle, x_scaled: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Every named intermediate (``ptycho.reference.model.OUTPUT_KEYS``) as NumPy arrays."""
    _check_inputs(handle.models.spec, x_scaled, positions)
    out = handle.models.intermediates(list(_inputs(x_scaled, positions)), training=False)
    return {k: np.asarray(out[k]) for k in tf_model.INTERMEDIATE_KEYS}


def loss_and_grads(
    handle: Handle,
    x_scaled: np.ndarray,
    positions: np.ndarray,
    *,
    nll_weight: float = 1.0,
    mae_weight: float = 0.0,
    bad_pixels: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Losses ``{'poisson_nll', 'mae', 'total'}`` and ``d total / d param`` for every trainable parameter.

    Gradients are keyed by canonical name (frozen parameters, e.g. the probe unless
    ``probe_trainable``, are absent).  ``bad_pixels``: bool ``[N, N]`` detector mask.
    """
    trainer = handle.trainer(LossWeights(nll_weight=nll_weight, mae_weight=mae_weight), bad_pixels)
    x, pos = _inputs(x_scaled, positions)
    target = tf.zeros((x.shape[0], x.shape[1], x.shape[2], 1), tf.float32)
    losses, grads = trainer.loss_and_grads(x, pos, target)
    names = [canonical_name(v.path) for v in trainer.variables]
    return (
        {k: float(losses[k]) for k in ("poisson_nll", "mae", "total")},
        {name: np.asarray(g) for name, g in zip(names, grads, strict=True)},
    )


def train_steps(
    handle: Handle,
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    lr: float,
    nll_weight: float = 1.0,
    mae_weight: float = 0.0,
    bad_pixels: np.ndarray | None = None,
) -> list[float]:
    """One Adam step per ``(x_scaled, positions)`` batch at learning rate ``lr``; returns each step's total loss.

    The loss of a step is evaluated before its update.  The weights in the handle are updated.
    ``bad_pixels``: bool ``[N, N]`` detector mask.
    """
    trainer = handle.trainer(LossWeights(nll_weight=nll_weight, mae_weight=mae_weight), bad_pixels)
    trainer.set_learning_rate(lr)
    out = []
    for x_scaled, positions in batches:
        x, pos = _inputs(x_scaled, positions)
        target = tf.zeros((x.shape[0], x.shape[1], x.shape[2], 1), tf.float32)
        out.append(float(trainer.step(x, pos, target)["total"]))
    return out


def optimizer_steps(
    weights: Mapping[str, np.ndarray], grads: Sequence[Mapping[str, np.ndarray]], lrs: Sequence[float]
) -> dict[str, np.ndarray]:
    """Step the training optimizer alone: one update per entry of ``grads`` at the rate ``lrs[i]``.

    ``weights``: float32 arrays (any shapes); ``grads[i]``: the gradient of every weight at step ``i``.
    The optimizer is :func:`ptycho_tf.optim.make_optimizer` (what :class:`ptycho_tf.training.Trainer`
    steps with), its rate changed between steps as :meth:`Trainer.set_learning_rate` does.
    Returns ``{name: float32 [len(grads), *shape]}``, the weights after each step.
    """
    if len(grads) != len(lrs):
        raise ValueError(f"{len(grads)} gradient steps but {len(lrs)} learning rates")
    names = sorted(weights)
    variables = [tf.Variable(np.asarray(weights[n], np.float32), name=n) for n in names]
    optimizer = make_optimizer(float(lrs[0]) if lrs else 1e-3)
    optimizer.build(variables)
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for g, lr in zip(grads, lrs, strict=True):
        optimizer.learning_rate.assign(float(lr))
        optimizer.apply_gradients([(tf.constant(np.asarray(g[n], np.float32)), v)
                                   for n, v in zip(names, variables, strict=True)])
        for n, v in zip(names, variables, strict=True):
            out[n].append(v.numpy().copy())
    return {n: np.stack(out[n]).astype(np.float32) for n in names}


def physics_op(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run the TensorFlow implementation of the reference op ``name`` with NumPy in and out.

    Tensors in the result (also inside a tuple, e.g. ``normalize_x_full``) become NumPy arrays;
    scalar losses become Python floats.
    """
    try:
        op = PHYSICS_OPS[name]
    except KeyError:
        raise ValueError(f"unknown physics op {name!r}; expected one of {sorted(PHYSICS_OPS)}") from None
    result = op(*args, **kwargs)

    def to_numpy(v: Any) -> Any:
        if isinstance(v, tf.Tensor):
            a = v.numpy()
            return float(a) if a.shape == () else a
        return v

    return tuple(to_numpy(v) for v in result) if isinstance(result, tuple) else to_numpy(result)


def save_bundle(handle: Handle, output_dir: str | PathLike, params_snapshot: Mapping[str, Any]) -> Path:
    """Write ``{output_dir}/wts.h5.zip`` with :func:`ptycho_tf.model_manager.save_models`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return model_manager.save_models(handle.models, out, params_snapshot=params_snapshot)


def load_bundle(path: str | PathLike) -> Handle:
    """Load a TensorFlow bundle (restores ``params.cfg``) with :func:`ptycho_tf.model_manager.load_models`."""
    models, _params = model_manager.load_models(path)
    return Handle(models)


def run_workflow(train_data: Any, test_data: Any, config: Any, *, M: int, device: str) -> tuple[Any, Any, dict]:
    """Train with the backend's own workflow (``run_cdi_example``, compiled ``tf.function``s exactly as users
    run it, whatever the parity stages' eager setting) and stitch ``test_data``: ``(amplitude, phase, results)``.

    ``device`` is not used: TensorFlow places ops itself (the harness hides GPUs for ``PTYCHO_DEVICE=cpu``).
    """
    from ptycho_tf.workflows.components import run_cdi_example

    eager = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(False)
    try:
        return run_cdi_example(train_data, test_data, config, M=M, do_stitching=True, quiet=True)
    finally:
        tf.config.run_functions_eagerly(eager)

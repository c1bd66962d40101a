"""The parity API of the PyTorch backend (``plan: BACKENDS.md``; the TensorFlow twin is ``ptycho_tf.parity_api``).

The conformance harness imports one backend's module per process and calls the same functions on
both.  Every array in or out is NumPy in the DATA-CONTRACT layout: images channels-last
``[B, N, N, C]``, positions ``[B, 1, 2, C]``, the physics ops in the layouts of
``ptycho.reference.physics``.  Conversions to the torch layout happen here only.

Functions: :func:`build`, :func:`get_weights`, :func:`set_weights`, :func:`forward`,
:func:`loss_and_grads`, :func:`train_steps`, :func:`physics_op`, :func:`save_bundle`,
:func:`load_bundle`.  Everything runs on CPU in float32 (the mode the parity gate uses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptycho import conventions, params
from ptycho.canonical_weights import init_canonical_weights
from ptycho.config.config import KEY_MAPPINGS, ModelConfig, TrainingConfig
from ptycho.network_spec import network_spec_from_config
from ptycho_torch import physics
from ptycho_torch.canonical import (
    export_canonical,
    grads_to_canonical,
    initial_intensity_scale,
    initial_probe,
    load_canonical,
)
from ptycho_torch.losses import LossWeights, compute_losses
from ptycho_torch.model import PtychoPINN
from ptycho_torch.model_manager import configs_from_params, load_torch_bundle, save_torch_bundle
from ptycho_torch.optim import KerasAdam

#: The training options' defaults come from the core's TrainingConfig (dataclass field defaults).
_TRAINING_DEFAULTS = TrainingConfig

__all__ = [
    "run_workflow",
    "PHYSICS_OPS",
    "TorchHandle",
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


@dataclass
class TorchHandle:
    """What :func:`build` returns: the native model and its optimizer (created by :func:`train_steps`).

    The Adam state persists across :func:`train_steps` calls (like a Keras model's optimizer) and
    is reset by :func:`set_weights`.
    """

    model: PtychoPINN
    model_config: ModelConfig
    optimizer: KerasAdam | None = None


# --------------------------------------------------------------------------- layout helpers
def _t(a: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    arr = np.array(a, copy=True)  # never alias caller memory
    t = torch.from_numpy(arr)
    return t if dtype is None else t.to(dtype)


def _images_in(x: np.ndarray) -> torch.Tensor:
    """``[B, N, N, C]`` NumPy -> ``[B, C, N, N]`` tensor (dtype kept; float64 -> float32)."""
    t = _t(conventions.tf_to_torch_images(np.asarray(x)))
    return t.float() if t.dtype == torch.float64 else (t.to(torch.complex64) if t.dtype == torch.complex128 else t)


def _positions_in(p: np.ndarray) -> torch.Tensor:
    """``[B, 1, 2, C]`` -> ``[B, C, 1, 2]`` float64 (shifts are computed in float64 anyway)."""
    return _t(conventions.tf_to_torch_positions(np.asarray(p, dtype=np.float64)))


def _images_out(t: torch.Tensor) -> np.ndarray:
    """``[B, C, H, W]`` tensor -> ``[B, H, W, C]`` NumPy."""
    return conventions.torch_to_tf_images(t.detach().cpu().numpy())


# --------------------------------------------------------------------------- model functions
def build(
    model_config: ModelConfig,
    *,
    weights: Mapping[str, np.ndarray] | None,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
    intensity_scale_trainable: bool = _TRAINING_DEFAULTS.intensity_scale_trainable,
    probe_trainable: bool = _TRAINING_DEFAULTS.probe_trainable,
) -> TorchHandle:
    """Build the torch model for ``model_config`` with canonical ``weights``.

    ``weights=None`` draws ``init_canonical_weights(spec, seed=s, log_scale=log(intensity_scale),
    probe=probe)`` with ``s = params.cfg['subsample_seed']`` (0 when unset), the intensity scale
    from ``params.cfg['intensity_scale']`` (else ``sqrt(nphotons)/(N/2)``) and the probe from
    ``params.cfg['probe']`` (else the normalised default probe).  ``probe_mask`` and
    ``gaussian_smoothing_sigma`` override the config's values.
    """
    spec = network_spec_from_config(model_config)
    model = PtychoPINN(
        spec,
        probe_mask=probe_mask,
        gaussian_smoothing_sigma=gaussian_smoothing_sigma,
        intensity_scale_trainable=intensity_scale_trainable,
        probe_trainable=probe_trainable,
    )
    if weights is None:
        training = TrainingConfig(model=model_config, nphotons=float(params.cfg.get("nphotons", 1e9)))
        seed = params.cfg.get("subsample_seed")
        weights = init_canonical_weights(
            spec,
            seed=0 if seed is None else int(seed),
            log_scale=math.log(initial_intensity_scale(training, params.cfg.get("intensity_scale"))),
            probe=initial_probe(model_config, params.cfg.get("probe")),
        )
    load_canonical(model, weights)
    return TorchHandle(model=model.eval(), model_config=model_config)


def get_weights(handle: TorchHandle) -> dict[str, np.ndarray]:
    """Every parameter by canonical name (HWIO kernels), float32."""
    return export_canonical(handle.model)


def set_weights(handle: TorchHandle, weights: Mapping[str, np.ndarray]) -> None:
    """Load canonical ``weights`` (strict) and reset the optimizer state."""
    load_canonical(handle.model, weights)
    handle.optimizer = None


@torch.no_grad()
def forward(handle: TorchHandle, x_scaled: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Every named intermediate (``ptycho.reference.model.OUTPUT_KEYS``), channels-last NumPy."""
    out = handle.model.forward_intermediates(_images_in(x_scaled), _positions_in(positions))
    return {k: _images_out(v) for k, v in out.items()}


def _batch_losses(
    handle: TorchHandle, x: np.ndarray, p: np.ndarray, nll: float, mae: float, bad_pixels: np.ndarray | None = None
):
    xt = _images_in(x)
    outputs = handle.model.forward_intermediates(xt, _positions_in(p))
    mask = None if bad_pixels is None else torch.as_tensor(np.asarray(bad_pixels, dtype=bool))
    return compute_losses(outputs, xt, LossWeights(nll_weight=nll, mae_weight=mae), bad_pixels=mask)


def loss_and_grads(
    handle: TorchHandle, x_scaled: np.ndarray, positions: np.ndarray, *, nll_weight: float = 1.0,
    mae_weight: float = 0.0, bad_pixels: np.ndarray | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``({'poisson_nll', 'mae', 'total'}, grads of 'total' by canonical name for trainable params)``.

    ``bad_pixels``: bool ``[N, N]`` detector mask left out of the losses.
    """
    handle.model.zero_grad(set_to_none=True)
    losses = _batch_losses(handle, x_scaled, positions, nll_weight, mae_weight, bad_pixels)
    losses["total"].backward()
    grads = grads_to_canonical(handle.model)
    handle.model.zero_grad(set_to_none=True)
    return {k: float(losses[k].detach()) for k in ("poisson_nll", "mae", "total")}, grads


def train_steps(
    handle: TorchHandle,
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    lr: float,
    nll_weight: float = 1.0,
    mae_weight: float = 0.0,
    bad_pixels: np.ndarray | None = None,
) -> list[float]:
    """One Keras-formula Adam step per ``(x_scaled, positions)`` batch; returns the total loss of each step.

    The loss reported for a step is computed before that step's update (as Keras reports it).
    ``bad_pixels``: bool ``[N, N]`` detector mask left out of the losses.
    """
    model = handle.model
    if handle.optimizer is None:
        handle.optimizer = KerasAdam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for group in handle.optimizer.param_groups:
        group["lr"] = float(lr)
    out = []
    for x, p in batches:
        handle.optimizer.zero_grad(set_to_none=True)
        total = _batch_losses(handle, x, p, nll_weight, mae_weight, bad_pixels)["total"]
        total.backward()
        handle.optimizer.step()
        out.append(float(total.detach()))
    return out


def optimizer_steps(
    weights: Mapping[str, np.ndarray], grads: Sequence[Mapping[str, np.ndarray]], lrs: Sequence[float]
) -> dict[str, np.ndarray]:
    """Step the training optimizer alone: one update per entry of ``grads`` at the rate ``lrs[i]``.

    ``weights``: float32 arrays (any shapes); ``grads[i]``: the gradient of every weight at step ``i``.
    The optimizer is :class:`ptycho_torch.optim.KerasAdam` with its defaults, as the Lightning module
    and :func:`train_steps` create it, its rate changed between steps through the parameter group
    (as the Lightning module's schedule does).  Returns ``{name: float32 [len(grads), *shape]}``,
    the weights after each step.
    """
    if len(grads) != len(lrs):
        raise ValueError(f"{len(grads)} gradient steps but {len(lrs)} learning rates")
    names = sorted(weights)
    params_ = [torch.nn.Parameter(torch.from_numpy(np.array(weights[n], np.float32))) for n in names]
    optimizer = KerasAdam(params_, lr=float(lrs[0]) if lrs else conventions.LEARNING_RATE)
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for g, lr in zip(grads, lrs, strict=True):
        for group in optimizer.param_groups:
            group["lr"] = float(lr)
        for n, p in zip(names, params_, strict=True):
            p.grad = torch.from_numpy(np.array(g[n], np.float32))
        optimizer.step()
        for n, p in zip(names, params_, strict=True):
            out[n].append(p.detach().numpy().copy())
    return {n: np.stack(out[n]).astype(np.float32) for n in names}


# --------------------------------------------------------------------------- physics ops
def _op_translate(images, offsets):
    return physics.translate(_t(images), _t(offsets, torch.float64)).numpy()


def _op_reassemble_patches(patches, positions, P):
    return _images_out(physics.reassemble_patches(_images_in(patches), _positions_in(positions), int(P)))


def _op_extract_patches(canvas, positions, N):
    return _images_out(physics.extract_patches(_images_in(canvas), _positions_in(positions), int(N)))


def _op_trim(canvas, N):
    return _images_out(physics.trim(_images_in(canvas), int(N)))


def _op_pad_object(patch, P):
    return _images_out(physics.pad_object(_images_in(patch), int(P)))


def _op_illuminate(patches, probe, *, probe_mask, gaussian_smoothing_sigma):
    probe_t = _t(probe).to(torch.complex64)
    return _images_out(physics.illuminate(_images_in(patches), probe_t, probe_mask=probe_mask,
                                         gaussian_smoothing_sigma=gaussian_smoothing_sigma))


def _op_diffract_channels(psi):
    return _images_out(physics.diffract(_images_in(psi)))


def _op_diffract(psi):
    return physics.diffract(_t(psi).to(torch.complex64)).numpy()


def _op_gaussian_smooth3x3(images, sigma):
    return _images_out(physics.gaussian_smooth3x3(_images_in(images), sigma))


def _op_reassemble_position(obj, global_offsets, M=20):
    out = physics.reassemble_position(_images_in(obj), _t(global_offsets, torch.float64), M)
    return out.permute(1, 2, 0).numpy()


def _op_poisson_nll(y_true, y_pred):
    return float(physics.poisson_nll(_t(y_true, torch.float32), _t(y_pred, torch.float32)))


def _op_mean_absolute_error(a, b):
    ta, tb = _t(a), _t(b)
    if not (ta.is_complex() or tb.is_complex()):
        ta, tb = ta.float(), tb.float()
    return float(physics.mean_absolute_error(ta, tb))


def _op_normalize_x_full(diffraction):
    x, norm = physics.normalize_x_full(_images_in(diffraction))
    return _images_out(x), norm


def _op_pad_to(images, P):
    return physics.pad_to(_t(images), int(P)).numpy()


def _op_center_crop(images, n):
    return physics.center_crop(_t(images), int(n)).contiguous().numpy()


def _op_combine_complex(amp, phase):
    return physics.combine_complex(_t(amp, torch.float32), _t(phase, torch.float32)).numpy()


def _op_forward_physics(obj_patches, positions, probe, log_scale, **kwargs):
    out = physics.forward_physics(_images_in(obj_patches), _positions_in(positions), _t(probe).to(torch.complex64),
                                 torch.tensor(float(log_scale)), **kwargs)
    return {k: _images_out(v) for k, v in out.items()}


#: Reference op name -> adapter (NumPy in/out in the reference layouts).
PHYSICS_OPS: dict[str, Callable[..., Any]] = {
    "translate": _op_translate,
    "reassemble_patches": _op_reassemble_patches,
    "extract_patches": _op_extract_patches,
    "trim": _op_trim,
    "pad_object": _op_pad_object,
    "illuminate": _op_illuminate,
    "diffract_channels": _op_diffract_channels,
    "diffract": _op_diffract,
    "gaussian_smooth3x3": _op_gaussian_smooth3x3,
    "reassemble_position": _op_reassemble_position,
    "poisson_nll": _op_poisson_nll,
    "mean_absolute_error": _op_mean_absolute_error,
    "normalize_x_full": _op_normalize_x_full,
    "pad_to": _op_pad_to,
    "center_crop": _op_center_crop,
    "combine_complex": _op_combine_complex,
    "forward_physics": _op_forward_physics,
}


@torch.no_grad()
def physics_op(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run the torch implementation of the reference op ``name`` with NumPy in/out in the reference's layout.

    Returns what the reference returns (an array; a float for the losses; ``(X, norm)`` for
    ``normalize_x_full``; a dict for ``forward_physics``).  ``ValueError`` for an unknown name.
    """
    try:
        op = PHYSICS_OPS[name]
    except KeyError:
        raise ValueError(f"unknown physics op {name!r}; available: {sorted(PHYSICS_OPS)}") from None
    return op(*args, **kwargs)


# --------------------------------------------------------------------------- bundles
def save_bundle(handle: TorchHandle, output_dir: str | PathLike, params_snapshot: Mapping[str, Any]) -> Path:
    """Write ``{output_dir}/wts.h5.zip`` with ``ptycho_torch.model_manager.save_torch_bundle``."""
    return save_torch_bundle({"autoencoder": handle.model}, output_dir, params_snapshot=params_snapshot)


def load_bundle(path: str | PathLike) -> TorchHandle:
    """Load a bundle with ``ptycho_torch.model_manager.load_torch_bundle`` (restores ``params.cfg``)."""
    models, snapshot = load_torch_bundle(path)
    model = models["autoencoder"]
    network = {KEY_MAPPINGS.get(k, k): v for k, v in model.spec.config().items()}
    model_config, _training = configs_from_params({**snapshot, **network})
    return TorchHandle(model=model, model_config=model_config)


def run_workflow(train_data: Any, test_data: Any, config: Any, *, M: int, device: str) -> tuple[Any, Any, dict]:
    """Train with the backend's own workflow (``run_cdi_example_torch``: Lightning ``Trainer.fit``,
    deterministic, no checkpoint, logger or bundle) on ``device`` (``'cpu'`` or ``'cuda'``) and stitch
    ``test_data``: ``(amplitude, phase, results)``."""
    from ptycho.config.config import PyTorchExecutionConfig
    from ptycho_torch.workflows.components import run_cdi_example_torch

    execution = PyTorchExecutionConfig(accelerator=device, deterministic=True, enable_checkpointing=False,
                                       logger_backend=None)
    return run_cdi_example_torch(train_data, test_data, config, M=M, do_stitching=True,
                                 execution_config=execution, quiet=True, save_bundle=False)

"""PyTorch training and inference workflows (the functions the backend dispatcher calls).

``run_cdi_example_torch`` mirrors ``ptycho_tf.workflows.components.run_cdi_example`` and returns the
same ``(amplitude | None, phase | None, results)`` structure.  Order of operations:

1. ``update_legacy_dict(params.cfg, config)`` (CONFIG-001), before any data is read;
2. group the raw data (``ptycho.workflows.common.create_ptycho_data_container``, seed =
   ``subsample_seed`` or 0); ``params.cfg['intensity_scale'] = sqrt(nphotons)/(N/2)``;
   ``ptycho.probe.set_probe_guess(None, probeGuess)``: exactly what the TensorFlow workflow writes,
   so ``params.cfg`` is identical whichever backend runs;
3. ``PtychoPINN_Lightning`` (initial weights from ``init_canonical_weights`` with the seed), data
   loaders in the ``ptycho.training_plan`` batch order, ``L.Trainer`` with every execution flag
   (:mod:`ptycho_torch.workflows.trainer`); ``fit``;
4. when ``do_stitching``: predict the test groups and stitch them (``common.stitch``);
5. when ``config.output_dir`` is set: save ``{output_dir}/wts.h5.zip`` (as upstream).

Data parallel (``execution_config.strategy`` 'ddp' / 'ddp_spawn', ``devices * num_nodes > 1``):
``config.batch_size`` is the global batch, split over the ranks (:mod:`ptycho.distributed`); the
learning rate is unchanged.  Under 'ddp' every rank runs this whole function; only global rank 0
predicts, stitches and writes the bundle (``results['global_rank']`` tells a caller which rank it
is, so CLIs write their files on rank 0 only).  Under 'ddp_spawn' the calling process receives
rank 0's weights and history after ``fit`` and continues as rank 0.

Results: ``history`` (``train_loss`` / ``val_loss`` lists per epoch plus the native
``poisson_train_loss`` / ``poisson_val_loss`` and ``learning_rate``), ``train_container``,
``test_container``, ``models`` (``{'autoencoder': PtychoPINN, 'diffraction_to_obj':
DiffractionToObj}``, sharing weights), ``lightning_module`` (the trained ``PtychoPINN_Lightning``),
``trainer``, ``backend`` ('pytorch'), ``global_rank`` (0 unless a 'ddp' worker), ``bundle_path`` when saved, and when
stitched ``obj_tensor_full`` ``[n, N, N, 1]`` (as the network gave them), the ``common_tilt`` multiplied in
before stitching (``common.with_fitted_tilt``), ``global_offsets``, ``recon_amp``, ``recon_phase``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptycho import params
from ptycho.config.config import (
    PyTorchExecutionConfig,
    TrainingConfig,
    update_legacy_dict,
    validate_execution_config,
    validate_training_config,
)
from ptycho.loader import PtychoDataContainer
from ptycho.probe import set_probe_guess
from ptycho.raw_data import RawData
from ptycho.streaming import StreamingContainer
from ptycho.workflows import common
from ptycho_torch.data import build_inference_loader, build_training_loaders
from ptycho_torch.model import DiffractionToObj, PtychoPINN
from ptycho_torch.model_manager import load_torch_bundle, save_torch_bundle
from ptycho_torch.runtime import RuntimeOptions, autocast_for, device_for, resolve_accelerator

# Lightning (and the torch._dynamo it imports, ~3 s) is imported only by the training functions,
# so inference starts fast.

__all__ = [
    "DEFAULT_INFERENCE_BATCH_SIZE",
    "_train_with_lightning",
    "load_inference_bundle_torch",
    "predict_objects",
    "run_cdi_example_torch",
    "train_cdi_model_torch",
]

#: Groups per inference batch when neither the caller nor the execution config says.
DEFAULT_INFERENCE_BATCH_SIZE = 64
#: The Trainer's last checkpoint (``ModelCheckpoint(save_last=True)``), relative to the output directory;
#: ``resume=True`` continues from it (the TensorFlow twin is ``ptycho_tf.training.CHECKPOINT_FILE``).
RESUME_CHECKPOINT = Path("checkpoints") / "last.ckpt"

#: Lightning warnings that say nothing about this workflow (it batches in the sampler, on purpose).
_NOISE = (
    r".*does not have many workers.*",
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*You defined a `validation_step` but have no `val_dataloader`.*",
    r".*when logging on epoch level in distributed setting.*",  # the logged epoch means are already global
)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def _ensure_container(data: RawData | PtychoDataContainer | StreamingContainer | None,
                      config: Any) -> PtychoDataContainer | StreamingContainer | None:
    if data is None:
        return None
    return common.create_ptycho_data_container(data, config, seed=common.workflow_seed(config))


def _execution(execution_config: PyTorchExecutionConfig | None) -> PyTorchExecutionConfig:
    config = execution_config if execution_config is not None else PyTorchExecutionConfig()
    validate_execution_config(config)
    return config


def _resolve_scheduler(config: TrainingConfig, execution: PyTorchExecutionConfig) -> str:
    """The execution config's scheduler when it is not the default, else the training config's."""
    return execution.scheduler if execution.scheduler != "Default" else config.scheduler


def _train_with_lightning(
    train_container: PtychoDataContainer,
    test_container: PtychoDataContainer | None,
    config: TrainingConfig,
    execution_config: PyTorchExecutionConfig | None = None,
    *,
    runtime: RuntimeOptions | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Build the Lightning module, the loaders and the Trainer from the configs, and fit.

    ``params.cfg`` must already hold ``intensity_scale`` and ``probe`` (done by
    :func:`train_cdi_model_torch`).  With ``resume``, ``Trainer.fit`` continues from
    ``<output_dir>/checkpoints/last.ckpt`` (weights, optimizer, epoch counter, callbacks, and the
    module's history and schedule state); ``config.nepochs`` is the total.  Returns ``history``,
    ``models``, ``trainer``, ``lightning_module``.
    """
    from ptycho.distributed import check_world_size
    from ptycho_torch.training import PtychoPINN_Lightning
    from ptycho_torch.workflows.trainer import build_trainer, world_size

    execution = _execution(execution_config)
    world = world_size(execution)
    if world is not None and world > 1:
        check_world_size(config.batch_size, world)
    seed = common.workflow_seed(config)
    torch.manual_seed(seed)
    device_type = resolve_accelerator(execution.accelerator)
    channels_last, compile_cnn = (runtime or RuntimeOptions()).resolved(device_type)
    module = PtychoPINN_Lightning(
        config.model,
        config,
        learning_rate=execution.learning_rate,
        scheduler=_resolve_scheduler(config, execution),
        seed=seed,
        channels_last=channels_last,
        compile_cnn=compile_cnn,
    )
    module.set_bad_pixels(train_container.bad_pixels)
    if execution.gradient_clip_val is None and config.gradient_clip_val is not None:
        execution = dataclasses.replace(execution, gradient_clip_val=config.gradient_clip_val,
                                        gradient_clip_algorithm=config.gradient_clip_algorithm)
    train_loader, val_loader = build_training_loaders(
        train_container,
        gridsize=config.model.gridsize,
        batch_size=config.batch_size,
        intensity_scale=float(params.cfg["intensity_scale"]),
        seed=seed,
        shuffle=not config.sequential_sampling,
        with_target=module.loss_weights.uses_realspace,
        execution_config=execution,
        device=device_type,
    )
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer = build_trainer(
        execution, max_epochs=config.nepochs, output_dir=output_dir, has_validation=val_loader is not None,
        quiet=quiet,
    )
    ckpt_path = None
    if resume:
        last = output_dir / RESUME_CHECKPOINT
        if not last.is_file():
            raise FileNotFoundError(f"{last}: no checkpoint to resume from. Fix: train without --resume first (with "
                                    "checkpointing on), or point --output_dir at the run to continue")
        ckpt_path = str(last)
    with _quiet_lightning():
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader, ckpt_path=ckpt_path)
    module.eval()
    history = {k: list(v) for k, v in module.history.items()}
    history.setdefault("val_loss", None)
    return {
        "history": history,
        "models": {"autoencoder": module.model, "diffraction_to_obj": DiffractionToObj(module.model)},
        "trainer": trainer,
        "lightning_module": module,
        "global_rank": int(trainer.global_rank),
    }


def train_cdi_model_torch(
    train_data: RawData | PtychoDataContainer,
    test_data: RawData | PtychoDataContainer | None,
    config: TrainingConfig,
    execution_config: PyTorchExecutionConfig | None = None,
    *,
    runtime: RuntimeOptions | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Group the data, set the runtime params (intensity scale, probe) and train (``resume``: see
    :func:`_train_with_lightning`).

    Returns ``history``, ``train_container``, ``test_container``, ``models``, ``trainer``.
    """
    validate_training_config(config)
    update_legacy_dict(params.cfg, config)
    train_container = _ensure_container(train_data, config)
    test_container = _ensure_container(test_data, config)
    common.set_intensity_scale(config)
    set_probe_guess(None, train_container.probe)
    results = _train_with_lightning(
        train_container, test_container, config, execution_config, runtime=runtime, quiet=quiet, resume=resume
    )
    results["train_container"] = train_container
    results["test_container"] = test_container
    return results


def _as_pinn(model: Any) -> PtychoPINN:
    if isinstance(model, PtychoPINN):
        return model
    if isinstance(model, DiffractionToObj):
        return model.autoencoder
    if isinstance(getattr(model, "model", None), PtychoPINN):  # a PtychoPINN_Lightning
        return model.model
    raise TypeError(f"expected a PtychoPINN, DiffractionToObj or PtychoPINN_Lightning, got {type(model).__name__}")


@torch.no_grad()
def predict_objects(
    model: Any,
    container: PtychoDataContainer,
    batch_size: int | None = None,
    *,
    intensity_scale: float | None = None,
    execution_config: PyTorchExecutionConfig | None = None,
    device: torch.device | str | None = None,
    runtime: RuntimeOptions | None = None,
) -> np.ndarray:
    """The trimmed object of every group of ``container``, complex64 ``[n, N, N, 1]`` (channels-last).

    Inputs are ``X * intensity_scale`` (default ``params.cfg['intensity_scale']``) and
    ``coords_nominal``, as in training.  The device is resolved explicitly (``device``, else the
    execution config's accelerator, else CPU); the model is moved there and put in eval mode.
    ``execution_config.precision`` selects autocast (bf16/fp16) for the CNN.
    """
    execution = _execution(execution_config)
    pinn = _as_pinn(model)
    dev = torch.device(device) if device is not None else device_for(execution.accelerator)
    channels_last, compile_cnn = (runtime or RuntimeOptions()).resolved(dev.type)
    pinn.to(dev).eval()
    pinn.use_channels_last(channels_last)
    if compile_cnn and pinn._cnn_fn is None:
        pinn.compile_cnn(True)
    scale = float(params.cfg["intensity_scale"] if intensity_scale is None else intensity_scale)
    bs = batch_size or execution.inference_batch_size or DEFAULT_INFERENCE_BATCH_SIZE
    loader = build_inference_loader(container, gridsize=pinn.spec.gridsize, batch_size=bs, intensity_scale=scale,
                                    execution_config=execution, device=dev)
    N = pinn.spec.N
    out = torch.empty((len(container), N, N, 1), dtype=torch.complex64, pin_memory=dev.type == "cuda")
    start = 0
    with autocast_for(dev.type, execution.precision):
        for x, pos in loader:
            obj = pinn.diffraction_to_obj(x.to(dev, non_blocking=True), pos.to(dev, non_blocking=True))
            out[start : start + obj.shape[0]].copy_(obj.permute(0, 2, 3, 1), non_blocking=True)
            start += obj.shape[0]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return out.numpy()


def run_cdi_example_torch(
    train_data: RawData | PtychoDataContainer,
    test_data: RawData | PtychoDataContainer | None,
    config: TrainingConfig,
    flip_x: bool = False,
    flip_y: bool = False,
    transpose: bool = False,
    M: int = 20,
    do_stitching: bool = False,
    execution_config: PyTorchExecutionConfig | None = None,
    *,
    runtime: RuntimeOptions | None = None,
    quiet: bool = False,
    save_bundle: bool = True,
    resume: bool = False,
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Train (and optionally reconstruct) with PyTorch; the dispatcher's ``--backend pytorch`` entry point.

    Returns ``(recon_amp | None, recon_phase | None, results)`` (module docstring).  The bundle is
    written to ``config.output_dir`` unless ``save_bundle`` is False.  ``resume`` continues from the
    run's ``checkpoints/last.ckpt``.
    """
    update_legacy_dict(params.cfg, config)
    execution = _execution(execution_config)
    results = train_cdi_model_torch(train_data, test_data, config, execution, runtime=runtime, quiet=quiet,
                                    resume=resume)
    results["backend"] = "pytorch"
    amp = phase = None
    if results.get("global_rank", 0) != 0:
        return amp, phase, results  # a 'ddp' worker: rank 0 writes every output
    test_container = results.get("test_container")
    if do_stitching and test_container is not None:
        obj = predict_objects(results["models"]["diffraction_to_obj"], test_container, execution_config=execution,
                              runtime=runtime)
        tilted, tau = common.with_fitted_tilt(obj, test_container)
        amp, phase, stitched = common.stitch(tilted, test_container.global_offsets, M, flip_x=flip_x,
                                             flip_y=flip_y, transpose=transpose)
        results.update(obj_tensor_full=obj, common_tilt=tau, global_offsets=test_container.global_offsets,
                       recon_amp=amp, recon_phase=phase, stitched=stitched)
    if save_bundle and config.output_dir is not None:
        results["bundle_path"] = save_torch_bundle(results["models"], config.output_dir, config,
                                                   trainer=results.get("trainer"),
                                                   lightning_module=results.get("lightning_module"))
    return amp, phase, results


def load_inference_bundle_torch(
    bundle_dir: str | Path, model_name: str = "diffraction_to_obj"
) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """Load ``{bundle_dir}/wts.h5.zip`` (restoring ``params.cfg``); returns ``(models_dict, params_dict)``.

    ``models_dict`` holds ``'diffraction_to_obj'`` and ``'autoencoder'`` (see
    :func:`ptycho_torch.model_manager.load_torch_bundle`); ``model_name`` must name one of them.
    """
    return load_torch_bundle(bundle_dir, model_name)

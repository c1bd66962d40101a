"""The Lightning ``Trainer`` of a training run, with every execution flag wired through.

:func:`trainer_kwargs` is the single place that maps ``PyTorchExecutionConfig`` to ``L.Trainer``
arguments (tested flag by flag in ``tests/torch/test_cli_train_torch.py``):

============================== ===================================================================
execution config               Trainer
============================== ===================================================================
accelerator ('auto' resolved)  ``accelerator``
devices, num_nodes, strategy   ``devices``, ``num_nodes``, ``strategy`` ('ddp' / 'ddp_spawn' -> :func:`build_strategy`)
deterministic                  ``deterministic`` (True -> ``torch.use_deterministic_algorithms``)
precision                      ``precision`` ('32-true', '16-mixed', 'bf16-mixed')
gradient_clip_val/_algorithm   ``gradient_clip_val``, ``gradient_clip_algorithm`` ('agc' rejected)
accum_steps                    ``accumulate_grad_batches``
enable_progress_bar            ``enable_progress_bar`` (and the model summary)
enable_checkpointing, checkpoint_save_top_k, checkpoint_monitor_metric, checkpoint_mode
                               ``ModelCheckpoint(dirpath=<output_dir>/checkpoints, save_last=True)``
early_stop_patience            ``EarlyStopping`` on the validation loss (only with validation data)
logger_backend                 ``CSVLogger`` / ``TensorBoardLogger`` / ``MLFlowLogger`` / none
============================== ===================================================================

Also: ``max_epochs = TrainingConfig.nepochs``, ``default_root_dir = output_dir``,
``num_sanity_val_steps = 0`` (the validation accumulators see real epochs only),
``use_distributed_sampler = False`` (batches come from :class:`ptycho_torch.data.PlanBatchSampler`,
which shards each global batch over the ranks itself: :mod:`ptycho.distributed`).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from ptycho.config.config import PyTorchExecutionConfig
from ptycho.errors import ConfigError
from ptycho_torch.runtime import resolve_accelerator

__all__ = [
    "DDP_STRATEGIES",
    "build_callbacks",
    "build_logger",
    "build_strategy",
    "build_trainer",
    "monitor_metric",
    "trainer_kwargs",
    "world_size",
]

#: Strategy names mapped to a ``DDPStrategy`` (launcher: a fresh ``python`` per rank for 'ddp', spawn for 'ddp_spawn').
DDP_STRATEGIES: dict[str, str] = {"ddp": "popen", "ddp_spawn": "spawn"}


def world_size(execution: PyTorchExecutionConfig) -> int | None:
    """``devices * num_nodes`` when ``devices`` is an int (the data-parallel world), else None ('auto')."""
    if isinstance(execution.devices, int):
        return int(execution.devices) * int(execution.num_nodes)
    return None


def build_strategy(name: str, accelerator: str) -> Any:
    """The Trainer's ``strategy``: a ``DDPStrategy`` for 'ddp' / 'ddp_spawn', else the name unchanged.

    ``forward_sync_buffers=False``: the model's buffers are constant masks (identical on every rank
    from the start), so no forward needs a buffer broadcast.
    The process group is gloo on CPU, NCCL on CUDA.
    """
    if name not in DDP_STRATEGIES:
        return name
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(start_method=DDP_STRATEGIES[name], forward_sync_buffers=False,
                       process_group_backend="nccl" if accelerator in ("cuda", "gpu") else "gloo")


def monitor_metric(requested: str, has_validation: bool) -> str:
    """The metric a checkpoint / early-stopping callback monitors: ``val_*`` becomes ``train_*`` without validation."""
    if not has_validation and requested.startswith("val_"):
        return "train_" + requested[len("val_") :]
    return requested


def build_logger(backend: str | None, output_dir: Path) -> Any:
    """The Lightning logger for ``logger_backend`` (False for None); optional packages are checked first."""
    if backend is None:
        return False
    if backend == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(output_dir), name="lightning_logs")
    if backend == "tensorboard":
        if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
            raise ConfigError("logger", backend, "an installed logger backend",
                              fix="pip install tensorboard, or use --logger csv / none")
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(output_dir), name="lightning_logs")
    if backend == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        from ptycho.workflows.common import mlflow_tracking_uri

        return MLFlowLogger(experiment_name="ptychopinn", tracking_uri=mlflow_tracking_uri(output_dir))
    raise ConfigError("logger", backend, "one of 'csv', 'tensorboard', 'mlflow', None")


def build_callbacks(execution: PyTorchExecutionConfig, output_dir: Path, has_validation: bool) -> list[Callback]:
    """Checkpointing (when enabled) and early stopping (when there is validation data)."""
    callbacks: list[Callback] = []
    if execution.enable_checkpointing:
        monitor = monitor_metric(execution.checkpoint_monitor_metric, has_validation)
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(output_dir / "checkpoints"),
                filename="epoch={epoch:02d}-" + monitor + "={" + monitor + ":.4f}",
                auto_insert_metric_name=False,
                monitor=monitor,
                mode=execution.checkpoint_mode,
                save_top_k=execution.checkpoint_save_top_k,
                save_last=True,
            )
        )
    if has_validation:
        callbacks.append(
            EarlyStopping(monitor=monitor_metric(execution.checkpoint_monitor_metric, True),
                          patience=execution.early_stop_patience, mode=execution.checkpoint_mode)
        )
    return callbacks


def trainer_kwargs(
    execution: PyTorchExecutionConfig,
    *,
    max_epochs: int,
    output_dir: Path,
    has_validation: bool,
    quiet: bool = False,
) -> dict[str, Any]:
    """Keyword arguments of ``L.Trainer`` for one run (see the module docstring table)."""
    if execution.gradient_clip_algorithm == "agc":
        raise ConfigError("gradient_clip_algorithm", "agc", "'norm' or 'value' (Lightning has no AGC)")
    progress = bool(execution.enable_progress_bar) and not quiet
    accelerator = resolve_accelerator(execution.accelerator)
    return {
        "max_epochs": int(max_epochs),
        "accelerator": accelerator,
        "devices": execution.devices,
        "num_nodes": int(execution.num_nodes),
        "strategy": build_strategy(execution.strategy, accelerator),
        "deterministic": execution.deterministic,
        "precision": execution.precision,
        "gradient_clip_val": execution.gradient_clip_val,
        "gradient_clip_algorithm": execution.gradient_clip_algorithm if execution.gradient_clip_val else None,
        "accumulate_grad_batches": int(execution.accum_steps),
        "enable_progress_bar": progress,
        "enable_model_summary": progress,
        "enable_checkpointing": bool(execution.enable_checkpointing),
        "callbacks": build_callbacks(execution, output_dir, has_validation),
        "logger": build_logger(execution.logger_backend, output_dir),
        "default_root_dir": str(output_dir),
        "log_every_n_steps": 1,
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,
    }


def build_trainer(execution: PyTorchExecutionConfig, **kwargs: Any) -> L.Trainer:
    """``L.Trainer(**trainer_kwargs(execution, **kwargs))``; Lightning's info messages are silenced when quiet."""
    kw = trainer_kwargs(execution, **kwargs)
    if kwargs.get("quiet"):
        for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return L.Trainer(**kw)

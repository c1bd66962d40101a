"""``PtychoPINN_Lightning``: the PtychoPINN autoencoder as a Lightning module.

Configuration comes from the canonical dataclasses (``ptycho.config.config.ModelConfig`` /
``TrainingConfig``; plain dicts of their fields are accepted too, which is how the hyperparameters
are stored in a checkpoint and reloaded without arguments).  ``C = gridsize**2`` therefore comes
from the one ``gridsize`` of the config: the network spec, the model's input check and the data
loaders all read it from there.

Initial weights: ``ptycho.canonical_weights.init_canonical_weights(spec, seed=seed,
log_scale=log(s), probe=probe)`` with ``s = params.cfg['intensity_scale']`` (else
``conventions.intensity_scale(nphotons, N)``) and ``probe = params.cfg['probe']`` (else the
normalised default probe), exactly what the TensorFlow backend does, so for the same seed both
start from identical weights.

Training (automatic optimisation):

* loss: :func:`ptycho_torch.losses.compute_losses` with :class:`~ptycho_torch.losses.LossWeights`
  from the training config; logged per epoch as ``poisson_train_loss`` / ``poisson_val_loss``
  (``mae_*`` in MAE mode) and the generic ``train_loss`` / ``val_loss``;
* optimiser: :class:`ptycho_torch.optim.KerasAdam` over the trainable parameters;
* learning rate: ``ptycho.training_plan.LearningRateSchedule`` set at the start of every epoch
  and fed the monitored loss (validation loss if any, else training loss) at its end;
* :attr:`history`: per-epoch ``train_loss``, ``val_loss`` (when validating), the native names,
  ``learning_rate`` and ``epoch_time_s`` (this rank's wall time of the epoch, validation
  included; the TensorFlow history's name), as plain Python lists.

Data parallel (``devices * num_nodes = W > 1``; rule in :mod:`ptycho.distributed`): each rank gets
a shard of ``b_r`` groups of the global batch of ``b`` (``b`` = the sum over ranks, all-reduced per
step) and returns ``W * b_r / b`` times its mean loss, so the DDP average of the gradients is the
gradient of the global batch's mean loss; the per-epoch training sums and counts are all-reduced,
so every rank records the global mean (the single-process value).  Every rank evaluates the whole
validation split, so the validation loss needs no reduction.
The history travels in the module's ``state_dict`` extra state, so under ``ddp_spawn`` the main
process receives rank 0's history together with the weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ptycho import conventions, params
from ptycho.config.config import ModelConfig, TrainingConfig
from ptycho.distributed import loss_weight
from ptycho.network_spec import network_spec_from_config
from ptycho.training_plan import LearningRateSchedule
from ptycho_torch.canonical import init_weights, initial_intensity_scale, initial_probe
from ptycho_torch.losses import LossWeights, compute_losses, realspace_target
from ptycho_torch.model import DiffractionToObj, PtychoPINN
from ptycho_torch.optim import KerasAdam

__all__ = ["LOOP_STATE_KEY", "PtychoPINN_Lightning", "plain_config"]

#: Key of the Lightning checkpoint entry holding the history and the learning-rate schedule state.
LOOP_STATE_KEY = "ptychopinn_loop_state"


# --------------------------------------------------------------------------- config helpers
def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def plain_config(config: ModelConfig | TrainingConfig) -> dict[str, Any]:
    """A config as a plain dict (Paths as str; the nested model and the deprecated ``n_images`` dropped)."""
    d = asdict(config)
    d.pop("model", None)
    d.pop("n_images", None)
    return {k: _plain(v) for k, v in d.items()}


def _as_model_config(value: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    if isinstance(value, ModelConfig):
        return value
    names = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in dict(value).items() if k in names})


def _as_training_config(value: TrainingConfig | Mapping[str, Any], model: ModelConfig) -> TrainingConfig:
    if isinstance(value, TrainingConfig):
        return value
    names = {f.name for f in fields(TrainingConfig)} - {"model", "n_images"}
    return TrainingConfig(model=model, **{k: v for k, v in dict(value).items() if k in names})


# --------------------------------------------------------------------------- the module
class PtychoPINN_Lightning(L.LightningModule):
    """Lightning wrapper of :class:`~ptycho_torch.model.PtychoPINN`.

    Args:
        model_config: ``ModelConfig`` (or a dict of its fields).
        training_config: ``TrainingConfig`` (or a dict of its fields without ``model``).
        learning_rate: initial learning rate (default ``conventions.LEARNING_RATE``); the resolved
            value of the execution config / CLI.
        scheduler: one of ``ptycho.training_plan.SCHEDULERS`` (default: the training config's).
        seed: seed of the initial weights (the workflow seed).
        channels_last: run the CNN in channels-last memory format.
        compile_cnn: run the CNN through ``torch.compile``.

    Batches are ``(x_scaled [B, C, N, N], positions [B, C, 1, 2])`` plus ``y_amp [B, 1, N, N]`` when
    the real-space loss is on (:class:`ptycho_torch.data.GroupedTensors`).
    """

    def __init__(
        self,
        model_config: ModelConfig | Mapping[str, Any],
        training_config: TrainingConfig | Mapping[str, Any],
        *,
        learning_rate: float | None = None,
        scheduler: str | None = None,
        seed: int = 0,
        channels_last: bool = False,
        compile_cnn: bool = False,
    ) -> None:
        super().__init__()
        mc = _as_model_config(model_config)
        tc = _as_training_config(training_config, mc)  # the network is built from model_config
        self.model_config = mc
        self.training_config = tc
        lr = conventions.LEARNING_RATE if learning_rate is None else float(learning_rate)
        sched = scheduler or tc.scheduler
        self.save_hyperparameters(
            {
                "model_config": plain_config(mc),
                "training_config": plain_config(tc),
                "learning_rate": lr,
                "scheduler": sched,
                "seed": int(seed),
                "channels_last": bool(channels_last),
                "compile_cnn": bool(compile_cnn),
            }
        )
        self.model = PtychoPINN(
            network_spec_from_config(mc),
            probe_mask=mc.probe_mask,
            gaussian_smoothing_sigma=mc.gaussian_smoothing_sigma,
            intensity_scale_trainable=tc.intensity_scale_trainable,
            probe_trainable=tc.probe_trainable,
        )
        init_weights(
            self.model,
            seed=int(seed),
            log_scale=math.log(initial_intensity_scale(tc, params.cfg.get("intensity_scale"))),
            probe=initial_probe(mc, params.cfg.get("probe")),
        )
        if channels_last:
            self.model.use_channels_last(True)
        if compile_cnn:
            self.model.compile_cnn(True)
        self.loss_weights = LossWeights.from_config(tc, torch_loss_mode=True)
        self.lr_schedule = LearningRateSchedule.from_config(tc, lr=lr, scheduler=sched)
        self.history: dict[str, list[float]] = {}
        self.register_buffer("bad_pixels", None, persistent=False)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def set_bad_pixels(self, bad_pixels: Any) -> None:
        """Detector mask of the training data (bool ``[N, N]``, True = not measured; None = none).

        Not saved with the model: it belongs to the data.  The losses leave those pixels out.
        """
        self.bad_pixels = None if bad_pixels is None else torch.as_tensor(bad_pixels, dtype=torch.bool)

    # ------------------------------------------------------------------ naming
    @property
    def loss_name(self) -> str:
        """Native name of the per-epoch training loss: ``poisson_train_loss`` or ``mae_train_loss``."""
        return f"{self.loss_weights.mode}_train_loss"

    @property
    def val_loss_name(self) -> str:
        """Native name of the per-epoch validation loss: ``poisson_val_loss`` or ``mae_val_loss``."""
        return f"{self.loss_weights.mode}_val_loss"

    @property
    def diffraction_to_obj(self) -> DiffractionToObj:
        """A ``diffraction_to_obj`` module sharing this module's weights."""
        return DiffractionToObj(self.model)

    # ------------------------------------------------------------------ forward
    def forward(self, x_scaled: torch.Tensor, positions: torch.Tensor):  # noqa: D401
        """The autoencoder outputs ``(trimmed_object, pred_amplitude, pred_intensity)``."""
        return self.model(x_scaled, positions)

    def batch_losses(self, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Forward one batch and return its loss terms (:func:`compute_losses`)."""
        x, pos = batch[0], batch[1]
        target = realspace_target(batch[2], pos) if self.loss_weights.uses_realspace else None
        outputs = self.model.forward_intermediates(x, pos)
        return compute_losses(outputs, x, self.loss_weights, target=target, bad_pixels=self.bad_pixels)

    def _accumulate(self, stage: str, value: torch.Tensor, n: int) -> None:
        v = value.detach().float() * n
        self._sums[stage] = self._sums[stage] + v if stage in self._sums else v
        self._counts[stage] = self._counts.get(stage, 0) + n

    def _world_size(self) -> int:
        trainer = self._trainer
        return int(trainer.world_size) if trainer is not None else 1

    def _mean(self, stage: str) -> float | None:
        """Sample-weighted mean of the stage's batch losses over this epoch (training: over every rank)."""
        if stage == "train" and self._world_size() > 1:
            local = torch.stack([
                self._sums[stage].reshape(()) if stage in self._sums else torch.zeros((), device=self.device),
                torch.tensor(float(self._counts.get(stage, 0)), device=self.device),
            ]).to(torch.float64)
            total = self.trainer.strategy.reduce(local, reduce_op="sum")
            return float(total[0] / total[1]) if float(total[1]) > 0 else None
        n = self._counts.get(stage, 0)
        return float(self._sums[stage]) / n if n else None

    # ------------------------------------------------------------------ training loop hooks
    def on_train_epoch_start(self) -> None:
        lr = self.lr_schedule.lr_for_epoch(self.current_epoch)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        self._sums.pop("train", None)
        self._counts.pop("train", None)
        self._current_lr = lr
        self._val_mean = None
        self._epoch_start = time.perf_counter()

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        losses = self.batch_losses(batch)
        n = int(batch[0].shape[0])
        self._accumulate("train", losses["total"], n)
        world_size = self._world_size()
        if world_size == 1:
            return losses["total"]
        global_n = self.trainer.strategy.reduce(torch.tensor(float(n), device=self.device), reduce_op="sum")
        return losses["total"] * loss_weight(n, int(round(float(global_n))), world_size)

    def on_validation_epoch_start(self) -> None:
        self._sums.pop("val", None)
        self._counts.pop("val", None)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        losses = self.batch_losses(batch)
        self._accumulate("val", losses["total"], int(batch[0].shape[0]))
        return losses["total"]

    def on_validation_epoch_end(self) -> None:
        val = self._mean("val")
        self._val_mean = val
        if val is not None:
            self.log(self.val_loss_name, val, on_step=False, on_epoch=True, prog_bar=True)
            self.log("val_loss", val, on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        train = self._mean("train")
        if train is None:
            return
        val = getattr(self, "_val_mean", None)
        self._record("train_loss", train)
        self._record(self.loss_name, train)
        self._record("learning_rate", float(getattr(self, "_current_lr", self.lr_schedule.lr)))
        self._record("epoch_time_s", time.perf_counter() - getattr(self, "_epoch_start", time.perf_counter()))
        if val is not None:
            self._record("val_loss", val)
            self._record(self.val_loss_name, val)
        self.lr_schedule.record(val if val is not None else train)
        self.log(self.loss_name, train, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train_loss", train, on_step=False, on_epoch=True)
        self.log("learning_rate", self.history["learning_rate"][-1], on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ resumable checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add the loop state Lightning does not know about: the history and the schedule's running state."""
        checkpoint[LOOP_STATE_KEY] = {"lr_schedule": self.lr_schedule.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what :meth:`on_save_checkpoint` added (``Trainer.fit(ckpt_path=...)`` resumes); the
        history comes back with the state dict (:meth:`set_extra_state`). Checkpoints written before
        the history was extra state load too (with an empty history)."""
        if isinstance(checkpoint.get("state_dict"), dict):
            checkpoint["state_dict"].setdefault("_extra_state", {"history": {}})
        state = checkpoint.get(LOOP_STATE_KEY)
        if state is not None:
            self.lr_schedule.load_state_dict(state["lr_schedule"])

    def get_extra_state(self) -> dict[str, Any]:
        """The per-epoch history (plain lists) in ``state_dict``: ``ddp_spawn`` sends it to the main process,
        and a resumed run continues it."""
        return {"history": {k: list(v) for k, v in self.history.items()}}

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`'s history."""
        if isinstance(state, Mapping) and isinstance(state.get("history"), Mapping):
            self.history = {str(k): [float(x) for x in v] for k, v in state["history"].items()}

    def _record(self, key: str, value: float) -> None:
        self.history.setdefault(key, []).append(float(value))

    def predict_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """The trimmed object of each group, complex64 ``[B, 1, N, N]``."""
        return self.model.diffraction_to_obj(batch[0], batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return KerasAdam(trainable, lr=self.lr_schedule.lr_for_epoch(0))

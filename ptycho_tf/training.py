"""Training of the TensorFlow PtychoPINN model: one Adam step and the epoch loop.

A custom loop (not ``keras.Model.fit``) so that both backends see the same batches in
the same order and step with the same learning rate (``ptycho.training_plan``):

* validation = the last ``VALIDATION_FRACTION`` of the groups (``split_train_val``);
* epoch ``e`` visits the training groups in ``epoch_order(n, seed=seed, epoch=e)``, cut
  into ``batches(order, batch_size)`` (the last batch may be smaller);
* the learning rate of epoch ``e`` is ``LearningRateSchedule.lr_for_epoch(e)``; the
  monitored loss (validation if there is a validation set, else training) is
  ``record()``-ed after every epoch;
* Adam with ``conventions.LEARNING_RATE`` / ``ADAM_BETA1`` / ``ADAM_BETA2`` /
  ``ADAM_EPSILON`` (Keras' update formula = ``ptycho.reference.optim.adam_step``).

Losses: :mod:`ptycho_tf.losses`; optimizer: :mod:`ptycho_tf.optim`.

Data parallel (:func:`make_strategy`: ``tf.distribute.MirroredStrategy`` over ``devices`` GPUs, or
over as many logical CPU devices; ``MultiWorkerMirroredStrategy`` for ``num_nodes > 1``): the
batch plan is unchanged (``batch_size`` is the global batch), each global batch is cut into one
contiguous shard per replica by :mod:`ptycho.distributed` (the rule the PyTorch backend uses too),
replica ``r`` back-propagates ``(b_r / b) * mean_r`` (``tf.distribute`` *sums* the replicas'
gradients, so the sum is the gradient of the global mean), the learning rate is unchanged, and a
global batch with fewer groups than replicas is dropped.  Validation runs undistributed on the whole
validation split.

Determinism on CPU: :func:`seed_everything` calls ``tf.random.set_seed(seed)`` and
``tf.config.experimental.enable_op_determinism()`` (NumPy's global RNG is never touched); nothing
in the loop draws random numbers from TensorFlow.

Callbacks and resume: :func:`train` drives standard Keras callbacks (``CSVLogger``,
``TensorBoard``, ``EarlyStopping``, ...) through ``keras.callbacks.CallbackList``;
:class:`TrainingCheckpoint` writes ``checkpoints/last_tf.npz`` after every epoch (weights, Adam
state, schedule state, epoch, history) and ``train(resume_from=...)`` continues from it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ptycho.atomic import atomic_path
from ptycho.distributed import check_world_size, kept_batches, shard_slices
from ptycho.errors import ConfigError
from ptycho.loss_weights import LossWeights
from ptycho.training_plan import LearningRateSchedule, batches, epoch_order, split_train_val
from ptycho_tf.losses import LOSS_KEYS, compute_losses, realspace_target
from ptycho_tf.optim import make_optimizer

__all__ = [
    "CHECKPOINT_FILE",
    "LoopState",
    "Trainer",
    "MlflowMetrics",
    "TrainingCheckpoint",
    "build_callbacks",
    "load_checkpoint",
    "make_strategy",
    "replicas",
    "save_checkpoint",
    "seed_everything",
    "train",
]

logger = logging.getLogger(__name__)

#: The resumable checkpoint the TF loop writes after every epoch, relative to the output directory
#: (the PyTorch backend's counterpart is Lightning's ``checkpoints/last.ckpt``).
CHECKPOINT_FILE = Path("checkpoints") / "last_tf.npz"
_CHECKPOINT_FORMAT = "ptychopinn-tf-checkpoint-1"


def make_strategy(devices: int = 1, num_nodes: int = 1) -> tf.distribute.Strategy | None:
    """The distribution strategy for ``devices`` per node and ``num_nodes`` nodes; None for one device.

    One node: ``MirroredStrategy`` over the first ``devices`` GPUs when there are that many, else
    over ``devices`` logical CPU devices (``tf.config.set_logical_device_configuration``, which must
    run before TensorFlow initialises its devices: call this first).  Several nodes:
    ``MultiWorkerMirroredStrategy``, which reads the cluster from the ``TF_CONFIG`` environment
    variable (one process per node, ``devices`` is then per worker and must be 1 on CPU).
    """
    devices, num_nodes = int(devices), int(num_nodes)
    if devices < 1 or num_nodes < 1:
        raise ValueError(f"devices={devices}, num_nodes={num_nodes} are invalid: expected positive integers")
    if num_nodes > 1:
        import os

        if "TF_CONFIG" not in os.environ:
            raise ValueError("num_nodes > 1 with TensorFlow needs the cluster in TF_CONFIG "
                             "(MultiWorkerMirroredStrategy). Fix: set TF_CONFIG on every node")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices == 1:
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= devices:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(devices)])
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:
        pass  # already initialised: usable if it already has enough logical CPUs (checked below)
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < devices:
        raise RuntimeError(
            f"TensorFlow was initialised with {len(logical)} CPU device(s) before {devices} logical CPU devices "
            "could be configured. Fix: call ptycho_tf.training.make_strategy before any TensorFlow op runs"
        )
    return tf.distribute.MirroredStrategy([d.name for d in logical[:devices]])


def replicas(strategy: tf.distribute.Strategy | None) -> int:
    """Replicas in sync of ``strategy`` (1 for None)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)


def seed_everything(seed: int) -> None:
    """Seed TensorFlow's global generator and enable op determinism; NumPy's global RNG is left alone.

    ``keras.utils.set_random_seed`` would also reseed ``random`` and ``np.random`` process-wide (a
    library must not); nothing here draws from those: the initial weights come from seeded
    initializers (``ptycho_tf.model``), the batch order from ``ptycho.training_plan.epoch_order``.
    """
    tf.random.set_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


class Trainer:
    """Compiled loss/step functions for one autoencoder.

    ``step`` runs one Adam step on a batch and returns the batch's loss terms (computed
    before the update); ``evaluate`` returns the loss terms without updating;
    ``loss_and_grads`` returns the loss terms and the gradients of ``total`` with respect
    to the trainable variables.  All are ``tf.function``s with a dynamic batch dimension,
    so a smaller last batch does not retrace.  ``bad_pixels`` (bool ``[N, N]`` or None) is
    the detector mask of the data the trainer sees (:func:`~ptycho_tf.losses.compute_losses`).
    """

    def __init__(
        self,
        autoencoder: keras.Model,
        weights: LossWeights,
        optimizer: keras.optimizers.Optimizer,
        bad_pixels: np.ndarray | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ):
        self.strategy = strategy
        self.model = autoencoder
        self.weights = weights
        self.bad_pixels = None if bad_pixels is None else tf.constant(np.asarray(bad_pixels, dtype=bool))
        self.optimizer = optimizer
        self.variables = list(autoencoder.trainable_variables)
        if not optimizer.built:
            optimizer.build(self.variables)
        N, C = int(autoencoder.inputs[0].shape[1]), int(autoencoder.inputs[0].shape[3])
        sig = [
            tf.TensorSpec((None, N, N, C), tf.float32),
            tf.TensorSpec((None, 1, 2, C), tf.float32),
            tf.TensorSpec((None, N, N, 1), tf.float32),
        ]
        self.step = tf.function(self._step, input_signature=sig)
        self.evaluate = tf.function(self._evaluate, input_signature=sig)
        self.loss_and_grads = tf.function(self._loss_and_grads, input_signature=sig)
        self._distributed_step = tf.function(self._run_replicas, reduce_retracing=True)

    def _losses(self, x, pos, target, training: bool) -> dict[str, tf.Tensor]:
        outputs = self.model([x, pos], training=training)
        return compute_losses(outputs, x, self.weights, target, self.bad_pixels)

    def _loss_and_grads(self, x, pos, target):
        with tf.GradientTape() as tape:
            losses = self._losses(x, pos, target, True)
        grads = tape.gradient(losses["total"], self.variables)
        return losses, grads

    def _step(self, x, pos, target):
        losses, grads = self._loss_and_grads(x, pos, target)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        return losses

    def _replica_step(self, x, pos, target, weight):
        with tf.GradientTape() as tape:
            losses = self._losses(x, pos, target, True)
            scaled = losses["total"] * weight
        grads = tape.gradient(scaled, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))  # Keras sums over replicas
        return {k: v * weight for k, v in losses.items()}

    def _run_replicas(self, x, pos, target, weight):
        per_replica = self.strategy.run(self._replica_step, args=(x, pos, target, weight))
        return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per_replica.items()}

    def distributed_step(self, x: np.ndarray, pos: np.ndarray, target: np.ndarray) -> dict[str, tf.Tensor]:
        """One Adam step of a *global* batch over the strategy's replicas; returns the global-mean loss terms.

        Replica ``r`` takes shard ``r`` of :func:`ptycho.distributed.shard_slices` and weights its
        mean loss by ``b_r / b``; the batch needs at least one group per replica.
        """
        n, world = len(x), replicas(self.strategy)
        shards = shard_slices(n, world)
        if any(sl.stop <= sl.start for sl in shards):
            raise ValueError(f"a global batch of {n} groups cannot feed {world} replicas")

        def value(ctx: tf.distribute.experimental.ValueContext):
            sl = shards[ctx.replica_id_in_sync_group]
            return (tf.constant(x[sl]), tf.constant(pos[sl]), tf.constant(target[sl]),
                    tf.constant((sl.stop - sl.start) / n, tf.float32))

        inputs = self.strategy.experimental_distribute_values_from_function(value)
        return self._distributed_step(*inputs)

    def _evaluate(self, x, pos, target):
        return self._losses(x, pos, target, False)

    def set_learning_rate(self, lr: float) -> None:
        self.optimizer.learning_rate.assign(float(lr))


@dataclass
class LoopState:
    """What the epoch loop carries between epochs and what a checkpoint stores.

    ``epoch`` is the number of completed epochs; ``history`` the per-epoch lists returned by
    :func:`train`; ``schedule`` the learning-rate schedule with its running state.
    """

    schedule: LearningRateSchedule
    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: int = 0


def save_checkpoint(path: str | PathLike, autoencoder: keras.Model, optimizer: keras.optimizers.Optimizer,
                    state: LoopState) -> Path:
    """Write a resumable checkpoint atomically: model weights, Adam state, schedule, epoch, history.

    An ``.npz`` of plain arrays (``weights/NNN``, ``optimizer/NNN``) and one JSON string (``state``);
    no pickles, so :func:`load_checkpoint` reads it with ``allow_pickle=False``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": _CHECKPOINT_FORMAT, "epoch": state.epoch, "history": state.history,
            "schedule": state.schedule.state_dict()}
    arrays = {f"weights/{i:03d}": np.asarray(w) for i, w in enumerate(autoencoder.get_weights())}
    arrays.update({f"optimizer/{i:03d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
    arrays["state"] = np.array(json.dumps(meta))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_checkpoint(path: str | PathLike, autoencoder: keras.Model, optimizer: keras.optimizers.Optimizer,
                    schedule: LearningRateSchedule) -> LoopState:
    """Restore what :func:`save_checkpoint` wrote into a freshly built model and built optimizer.

    Raises ValueError when the checkpoint does not match the model (another architecture or
    config) or is malformed; FileNotFoundError when it is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from. Fix: train without --resume first, "
                                "or point --output_dir at the run to continue")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    try:
        meta = json.loads(str(arrays.pop("state")))
        if meta.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"unknown format {meta.get('format')!r}")
        epoch = int(meta["epoch"])
        history = {str(k): [float(x) for x in v] for k, v in dict(meta["history"]).items()}
        schedule.load_state_dict(meta["schedule"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed checkpoint ({exc})") from None
    weights = [arrays[k] for k in sorted(k for k in arrays if k.startswith("weights/"))]
    opt = [arrays[k] for k in sorted(k for k in arrays if k.startswith("optimizer/"))]
    expected_w = [tuple(w.shape) for w in autoencoder.get_weights()]
    expected_o = [tuple(v.shape) for v in optimizer.variables]
    if [tuple(w.shape) for w in weights] != expected_w or [tuple(v.shape) for v in opt] != expected_o:
        raise ValueError(f"{path}: the checkpoint's weights do not match this model (another N, gridsize or "
                         "n_filters_scale?). Fix: resume with the configuration of the run that wrote it")
    autoencoder.set_weights(weights)
    for var, value in zip(optimizer.variables, opt, strict=True):
        var.assign(value)
    return LoopState(schedule=schedule, history=history, epoch=epoch)


class TrainingCheckpoint(keras.callbacks.Callback):
    """Keras callback (the ``ModelCheckpoint`` of this loop): after every epoch, :func:`save_checkpoint`.

    Unlike ``keras.callbacks.ModelCheckpoint`` it also stores what a resume needs and a Keras
    model file lacks here: the learning-rate schedule state and the history.  :func:`train`
    binds it to its optimizer and loop state before the first epoch.
    """

    def __init__(self, path: str | PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self._optimizer: keras.optimizers.Optimizer | None = None
        self._state: LoopState | None = None

    def bind(self, optimizer: keras.optimizers.Optimizer, state: LoopState) -> None:
        """Attach the loop's optimizer and state (done by :func:`train`)."""
        self._optimizer, self._state = optimizer, state

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self._optimizer is None or self._state is None:
            raise RuntimeError("TrainingCheckpoint is used outside ptycho_tf.training.train (not bound)")
        save_checkpoint(self.path, self.model, self._optimizer, self._state)


class MlflowMetrics(keras.callbacks.Callback):
    """Keras callback: every epoch's logs as MLflow metrics of one run in ``tracking_uri``.

    Uses an ``mlflow.MlflowClient`` (no process-global MLflow state is changed).
    """

    def __init__(self, tracking_uri: str, experiment: str = "ptychopinn") -> None:
        super().__init__()
        import mlflow

        self._client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = self._client.get_experiment_by_name(experiment)
        self._experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        self.run_id: str | None = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.run_id = self._client.create_run(self._experiment_id, tags={"backend": "tensorflow"}).info.run_id

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        for key, value in (logs or {}).items():
            self._client.log_metric(self.run_id, key, float(value), step=int(epoch))

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.run_id is not None:
            self._client.set_terminated(self.run_id)


class _TensorBoard(keras.callbacks.TensorBoard):
    """``keras.callbacks.TensorBoard`` for this loop: the model is not ``compile``d (the loop owns the
    optimizer), so the learning rate comes from the epoch logs' ``lr`` instead of ``model.optimizer``."""

    def _collect_learning_rate(self, logs: dict[str, float] | None) -> dict[str, float] | None:
        return logs


def build_callbacks(
    output_dir: str | PathLike,
    *,
    logger: str | None = "csv",
    checkpoint: bool = True,
    resume: bool = False,
    early_stop_patience: int | None = None,
) -> list[keras.callbacks.Callback]:
    """The standard callbacks of a TF training run writing into ``output_dir``.

    ``logger``: ``'csv'`` (``keras.callbacks.CSVLogger`` -> ``logs/metrics.csv``, appended to when
    resuming), ``'tensorboard'`` (``keras.callbacks.TensorBoard`` -> ``logs/tensorboard/``),
    ``'mlflow'`` (:class:`MlflowMetrics` -> ``mlflow.db``) or None.  ``checkpoint``:
    :class:`TrainingCheckpoint` -> :data:`CHECKPOINT_FILE`.  ``early_stop_patience``:
    ``keras.callbacks.EarlyStopping`` on ``val_loss``.  The PyTorch twin is
    ``ptycho_torch.workflows.trainer`` (Lightning's loggers and callbacks).
    """
    out = Path(output_dir)
    callbacks: list[keras.callbacks.Callback] = []
    if logger == "csv":
        (out / "logs").mkdir(parents=True, exist_ok=True)
        callbacks.append(keras.callbacks.CSVLogger(str(out / "logs" / "metrics.csv"), append=resume))
    elif logger == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("logger", logger, "an installed logger backend",
                              fix="pip install tensorboard, or use --logger csv / none")
        callbacks.append(_TensorBoard(log_dir=str(out / "logs" / "tensorboard"), write_graph=False))
    elif logger == "mlflow":
        from ptycho.workflows.common import mlflow_tracking_uri

        callbacks.append(MlflowMetrics(mlflow_tracking_uri(out)))
    elif logger is not None:
        raise ConfigError("logger", logger, "one of 'csv', 'tensorboard', 'mlflow', None")
    if checkpoint:
        callbacks.append(TrainingCheckpoint(out / CHECKPOINT_FILE))
    if early_stop_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(early_stop_patience)))
    return callbacks


class _Zeros:
    """A stand-in target of zeros: ``_Zeros(shape)[indices]`` is float32 ``[len(indices), *shape]``."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return np.zeros((len(indices), *self.shape), np.float32)


def _mean_losses(trainer: Trainer, x: Any, pos: np.ndarray, target: Any, rows: np.ndarray, batch_size: int):
    """Loss terms over the groups ``rows``, batch by batch (sample-weighted mean of the batch means)."""
    sums = dict.fromkeys(LOSS_KEYS, 0.0)
    n = len(rows)
    for b in batches(np.arange(n), batch_size):
        idx = rows[b]
        out = trainer.evaluate(x[idx], pos[idx], target[idx])
        for k in LOSS_KEYS:
            sums[k] += float(out[k]) * len(idx)
    return {k: v / n for k, v in sums.items()}


def train(
    autoencoder: keras.Model,
    x_scaled: np.ndarray,
    positions: np.ndarray,
    *,
    config: Any,
    seed: int,
    Y_I: np.ndarray | None = None,
    quiet: bool = False,
    bad_pixels: np.ndarray | None = None,
    strategy: tf.distribute.Strategy | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    resume_from: str | PathLike | None = None,
) -> dict[str, list[float]]:
    """Train ``autoencoder`` in place on ``(x_scaled, positions)``; return the per-epoch history.

    Args:
        autoencoder: the model from :func:`ptycho_tf.model.build_models` (its trainable variables
            are updated).
        x_scaled: float32 ``[n, N, N, C]`` = ``X * intensity_scale``, or anything indexed the same
            way per batch (``ptycho.streaming.ScaledPatterns`` reads each batch from disk).
        positions: float32 ``[n, 1, 2, C]`` relative offsets ``coords_nominal``.
        config: a ``TrainingConfig`` (``batch_size``, ``nepochs``, loss weights, scheduler fields).
        seed: the workflow seed (batch order).
        Y_I: float32 ``[n, N, N, C]`` ground-truth amplitude (only for the real-space loss).
        bad_pixels: bool ``[N, N]`` detector mask (True = not measured) left out of the losses.
        strategy: a :func:`make_strategy` strategy (the model must have been built in its
            ``scope()``); None trains in one replica.
        quiet: no progress output (otherwise: one log line per epoch, and a Keras progress bar when
            stdout is a terminal).
        callbacks: Keras callbacks, driven through ``keras.callbacks.CallbackList`` with the
            standard hooks (``on_train_begin``, ``on_epoch_begin``, ``on_train_batch_begin/end``
            with ``{'loss'}``, ``on_epoch_end`` with ``{'loss', 'val_loss', <terms>, 'lr'}``,
            ``on_train_end``); ``EarlyStopping`` etc. stop the loop through ``model.stop_training``.
            A :class:`TrainingCheckpoint` among them is bound to this loop's optimizer and state.
        resume_from: a checkpoint written by :class:`TrainingCheckpoint`: weights, Adam state,
            schedule state, epoch counter and history are restored and training continues at the
            next epoch up to ``config.nepochs`` (the total).

    Returns:
        ``history`` with lists over epochs: ``train_loss`` and ``loss`` (total training loss),
        ``val_loss`` (empty when there is no validation set), ``<term>`` and ``val_<term>``
        for ``poisson_nll``/``mae``/``realspace``, ``lr`` and ``epoch_time_s``.
    """
    if getattr(config, "gradient_clip_val", None) is not None:
        raise ConfigError("gradient_clip_val", config.gradient_clip_val, "None with the TensorFlow backend",
                          fix="gradient clipping is implemented by the PyTorch backend only; unset it or "
                              "use backend='pytorch'")
    weights = LossWeights.from_config(config)
    n = len(x_scaled)
    N = int(x_scaled.shape[1])
    if weights.realspace_factor > 0:
        if Y_I is None:
            raise ValueError("realspace_weight and realspace_mae_weight are > 0 but no ground truth Y_I was given")
        target = realspace_target(Y_I, positions)
    else:
        target = _Zeros((N, N, 1))  # per batch: never an [n, N, N, 1] array
    train_idx, val_idx = split_train_val(n)
    schedule = LearningRateSchedule.from_config(config)
    batch_size = int(config.batch_size)
    world = replicas(strategy)
    if world > 1:
        check_world_size(min(batch_size, len(train_idx)), world)
        with strategy.scope():
            trainer = Trainer(autoencoder, weights, make_optimizer(schedule.lr_for_epoch(0)), bad_pixels, strategy)
    else:
        trainer = Trainer(autoencoder, weights, make_optimizer(schedule.lr_for_epoch(0)), bad_pixels)
    nepochs = int(config.nepochs)
    if resume_from is not None:
        state = load_checkpoint(resume_from, autoencoder, trainer.optimizer, schedule)
        logger.info("resumed from %s after epoch %d", resume_from, state.epoch)
    else:
        history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "loss": [], "lr": [], "epoch_time_s": []}
        for k in LOSS_KEYS[:-1]:
            history[k] = []
            history[f"val_{k}"] = []
        state = LoopState(schedule=schedule, history=history)
    history = state.history
    for cb in callbacks:
        if isinstance(cb, TrainingCheckpoint):
            cb.bind(trainer.optimizer, state)
    steps = len(kept_batches(batches(np.arange(len(train_idx)), batch_size), world))
    cbs = keras.callbacks.CallbackList(list(callbacks), add_history=False, add_progbar=False, model=autoencoder,
                                       epochs=nepochs, steps=steps, verbose=0)
    autoencoder.stop_training = False
    show_bar = not quiet and sys.stdout.isatty()
    cbs.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(state.epoch, nepochs):
        t0 = time.perf_counter()
        lr = schedule.lr_for_epoch(epoch)
        trainer.set_learning_rate(lr)
        cbs.on_epoch_begin(epoch)
        plan = kept_batches(batches(epoch_order(len(train_idx), seed=seed, epoch=epoch), batch_size), world)
        bar = keras.utils.Progbar(len(plan), stateful_metrics=["loss"], unit_name="batch") if show_bar else None
        sums = dict.fromkeys(LOSS_KEYS, 0.0)
        seen = 0
        for i, idx in enumerate(plan):
            cbs.on_train_batch_begin(i)
            rows = train_idx[idx]  # each batch is gathered here: x_scaled may stream from disk
            if world > 1:
                out = trainer.distributed_step(x_scaled[rows], positions[rows], target[rows])
            else:
                out = trainer.step(x_scaled[rows], positions[rows], target[rows])
            for k in LOSS_KEYS:
                sums[k] += float(out[k]) * len(idx)
            seen += len(idx)
            cbs.on_train_batch_end(i, {"loss": sums["total"] / seen})
            if bar is not None:
                bar.update(i + 1, values=[("loss", sums["total"] / seen)])
        epoch_losses = {k: v / seen for k, v in sums.items()}
        history["train_loss"].append(epoch_losses["total"])
        history["loss"].append(epoch_losses["total"])
        for k in LOSS_KEYS[:-1]:
            history[k].append(epoch_losses[k])
        monitored = epoch_losses["total"]
        logs = {"loss": epoch_losses["total"], **{k: epoch_losses[k] for k in LOSS_KEYS[:-1]}}
        if len(val_idx):
            val = _mean_losses(trainer, x_scaled, positions, target, val_idx, batch_size)
            history["val_loss"].append(val["total"])
            for k in LOSS_KEYS[:-1]:
                history[f"val_{k}"].append(val[k])
            monitored = val["total"]
            logs.update({"val_loss": val["total"], **{f"val_{k}": val[k] for k in LOSS_KEYS[:-1]}})
        if not math.isfinite(epoch_losses["total"]):
            raise FloatingPointError(
                f"training diverged in epoch {epoch + 1}: loss is {epoch_losses['total']}. Fix: check the "
                "data normalisation and nphotons, or lower the learning rate"
            )
        schedule.record(monitored)
        history["lr"].append(float(lr))
        history["epoch_time_s"].append(time.perf_counter() - t0)
        state.epoch = epoch + 1
        logs["lr"] = float(lr)
        cbs.on_epoch_end(epoch, logs)
        if not quiet:
            val_text = f", val_loss {history['val_loss'][-1]:.6g}" if len(val_idx) else ""
            logger.info("epoch %d/%d: loss %.6g%s, lr %.3g, %.1f s", epoch + 1, nepochs, epoch_losses["total"],
                        val_text, lr, history["epoch_time_s"][-1])
        if autoencoder.stop_training:
            logger.info("stopped after epoch %d by a callback (e.g. EarlyStopping)", epoch + 1)
            break
    cbs.on_train_end(logs)
    return history


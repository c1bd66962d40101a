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

Determinism on CPU: :func:`seed_everything` calls ``keras.utils.set_random_seed(seed)``
and ``tf.config.experimental.enable_op_determinism()``; nothing in the loop draws random
numbers from TensorFlow.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ptycho.distributed import check_world_size, kept_batches, shard_slices
from ptycho.loss_weights import LossWeights
from ptycho.training_plan import LearningRateSchedule, batches, epoch_order, split_train_val
from ptycho_tf.losses import LOSS_KEYS, compute_losses, realspace_target
from ptycho_tf.optim import make_optimizer

__all__ = ["Trainer", "make_strategy", "replicas", "seed_everything", "train"]


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
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``) and enable op determinism."""
    keras.utils.set_random_seed(int(seed))
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
        quiet: no progress output.
        bad_pixels: bool ``[N, N]`` detector mask (True = not measured) left out of the losses.
        strategy: a :func:`make_strategy` strategy (the model must have been built in its
            ``scope()``); None trains in one replica.

    Returns:
        ``history`` with lists over epochs: ``train_loss`` and ``loss`` (total training loss),
        ``val_loss`` (empty when there is no validation set), ``<term>`` and ``val_<term>``
        for ``poisson_nll``/``mae``/``realspace``, ``lr`` and ``epoch_time_s``.
    """
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
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "loss": [], "lr": [], "epoch_time_s": []}
    for k in LOSS_KEYS[:-1]:
        history[k] = []
        history[f"val_{k}"] = []
    for epoch in range(int(config.nepochs)):
        t0 = time.perf_counter()
        lr = schedule.lr_for_epoch(epoch)
        trainer.set_learning_rate(lr)
        plan = kept_batches(batches(epoch_order(len(train_idx), seed=seed, epoch=epoch), batch_size), world)
        n_seen = sum(len(b) for b in plan)
        bar = None if quiet else keras.utils.Progbar(len(plan), stateful_metrics=["loss"], unit_name="batch")
        sums = dict.fromkeys(LOSS_KEYS, 0.0)
        for i, idx in enumerate(plan):
            rows = train_idx[idx]  # each batch is gathered here: x_scaled may stream from disk
            if world > 1:
                out = trainer.distributed_step(x_scaled[rows], positions[rows], target[rows])
            else:
                out = trainer.step(x_scaled[rows], positions[rows], target[rows])
            for k in LOSS_KEYS:
                sums[k] += float(out[k]) * len(idx)
            if bar is not None:
                bar.update(i + 1, values=[("loss", sums["total"] / sum(len(b) for b in plan[: i + 1]))])
        epoch_losses = {k: v / n_seen for k, v in sums.items()}
        history["train_loss"].append(epoch_losses["total"])
        history["loss"].append(epoch_losses["total"])
        for k in LOSS_KEYS[:-1]:
            history[k].append(epoch_losses[k])
        monitored = epoch_losses["total"]
        if len(val_idx):
            val = _mean_losses(trainer, x_scaled, positions, target, val_idx, batch_size)
            history["val_loss"].append(val["total"])
            for k in LOSS_KEYS[:-1]:
                history[f"val_{k}"].append(val[k])
            monitored = val["total"]
        if not math.isfinite(epoch_losses["total"]):
            raise FloatingPointError(
                f"training diverged in epoch {epoch + 1}: loss is {epoch_losses['total']}. Fix: check the "
                "data normalisation and nphotons, or lower the learning rate"
            )
        schedule.record(monitored)
        history["lr"].append(float(lr))
        history["epoch_time_s"].append(time.perf_counter() - t0)
        if not quiet:
            val_text = f", val_loss {history['val_loss'][-1]:.6g}" if len(val_idx) else ""
            print(
                f"epoch {epoch + 1}/{config.nepochs}: loss {epoch_losses['total']:.6g}{val_text}, lr {lr:.3g}, "
                f"{history['epoch_time_s'][-1]:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return history


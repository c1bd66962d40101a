"""Backend-neutral rule for data-parallel training: how a global batch is split over replicas.

Both backends train data-parallel with the same rule, so a run on ``W`` replicas (torch: Lightning
DDP ranks; TensorFlow: ``tf.distribute.MirroredStrategy`` replicas) computes, step for step, what
one process computes on the same global batches (to float32 rounding):

* **Global batch.** ``TrainingConfig.batch_size`` is the *global* batch ``B``: the batch order is
  ``ptycho.training_plan.batches(epoch_order(...), B)`` whatever ``W`` is.  The learning rate is
  unchanged (no linear scaling: each optimiser step sees the gradient of the same ``B`` groups).
* **Shards.** A global batch of ``b`` groups is cut into ``W`` contiguous shards with
  :func:`shard_slices` (``numpy.array_split`` sizes: ``ceil(b/W)`` for the first ``b mod W``
  replicas, ``floor(b/W)`` for the rest); replica ``r`` takes shard ``r``.  ``B`` need not be a
  multiple of ``W``.
* **Loss weight.** The training loss is a mean over elements, and every group has the same number
  of elements, so the mean over the global batch is ``sum_r (b_r / b) * mean_r``.  Replica ``r``
  therefore back-propagates ``loss_weight(b_r, b, W) * mean_r`` = ``W * b_r / b * mean_r``: DDP
  *averages* the replicas' gradients (divides by ``W``), which gives exactly the gradient of the
  global mean even for unequal shards (``tf.distribute`` *sums* them, so the TensorFlow loop uses
  ``b_r / b``, the same quantity divided by ``W``).
* **Equal step counts.** Every replica must take the same number of optimiser steps, or the
  gradient all-reduce waits forever.  A global batch with fewer than ``W`` groups (only the last
  batch of an epoch can be one) would leave a replica without data, so :func:`replica_batches`
  *drops* it on every replica alike (:func:`kept_batches`): with ``W > 1`` such an epoch trains on
  up to ``W - 1`` fewer groups than the single-process run; nothing else differs.
* **Validation is not sharded.** Every replica evaluates the whole validation split (the last
  ``VALIDATION_FRACTION`` of the groups, forward only), so the validation loss is exactly the
  single-process one on every replica, no replica waits for another, and a callback that monitors
  it (early stopping, checkpoints) decides the same everywhere.  The price is redundant work of
  about ``VALIDATION_FRACTION / 3`` of an epoch per replica.
* ``B < W`` is refused (:func:`check_world_size`): every step would leave replicas idle.

Nothing here imports a framework; rank and world size come from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "check_world_size",
    "kept_batches",
    "loss_weight",
    "replica_batches",
    "shard_slices",
]


def check_world_size(batch_size: int, world_size: int) -> None:
    """Raise ``ValueError`` unless ``1 <= world_size <= batch_size`` (the global batch is split over replicas)."""
    if int(world_size) < 1:
        raise ValueError(f"world_size={world_size!r} is invalid: expected a positive integer")
    if int(batch_size) < int(world_size):
        raise ValueError(
            f"batch_size={batch_size} is smaller than the {world_size} replicas: batch_size is the GLOBAL batch, "
            f"split over the replicas. Fix: use batch_size >= {world_size} (e.g. {world_size} x the per-replica batch)"
        )


def shard_slices(n: int, world_size: int) -> list[slice]:
    """The ``world_size`` contiguous slices of a batch of ``n`` groups (``numpy.array_split`` sizes)."""
    if world_size < 1:
        raise ValueError(f"world_size={world_size!r} is invalid: expected a positive integer")
    base, extra = divmod(int(n), int(world_size))
    out, start = [], 0
    for r in range(world_size):
        stop = start + base + (1 if r < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out


def loss_weight(shard_size: int, batch_size: int, world_size: int) -> float:
    """Factor on replica ``r``'s mean loss so that DDP's gradient *average* is the global-mean gradient.

    ``world_size * shard_size / batch_size``; 1.0 for one replica or equal shards.  (Under a
    gradient *sum*, as in ``tf.distribute``, divide it by ``world_size``.)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: expected a positive integer")
    return float(world_size) * float(shard_size) / float(batch_size)


def kept_batches(plan: Sequence[np.ndarray], world_size: int) -> list[np.ndarray]:
    """The global training batches every replica steps on: those with at least ``world_size`` groups."""
    return [np.asarray(b) for b in plan if len(b) >= world_size]


def replica_batches(plan: Sequence[np.ndarray], world_size: int, rank: int) -> list[np.ndarray]:
    """Replica ``rank``'s shard of every kept global training batch (same count on every replica)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank!r} is invalid for world_size={world_size}")
    return [b[shard_slices(len(b), world_size)[rank]] for b in kept_batches(plan, world_size)]

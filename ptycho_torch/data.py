"""Torch datasets and loaders over the core's grouped data, in the core's batch order.

The container (``ptycho.loader.PtychoDataContainer``, channels-last NumPy) is converted once to
channels-first tensors:

* ``x_scaled``  float32 ``[n, C, N, N]`` = ``intensity_scale * X`` (``ptycho.workflows.common.model_inputs``);
* ``positions`` float32 ``[n, C, 1, 2]`` = ``coords_nominal`` (x, y);
* ``y_amp``     float32 ``[n, 1, N, N]`` = ``Y_I`` of channel 0 (only when the real-space loss is on).

Batches (``ptycho.training_plan``): the last ``VALIDATION_FRACTION`` of the groups is the
validation set; each epoch visits the training groups in ``epoch_order(n_train, seed=seed,
epoch=e)`` split by ``batches(order, batch_size)`` (:class:`PlanBatchSampler`; Lightning calls its
``set_epoch``).  Validation and inference go in index order.  The dataset is indexed by a whole
batch of indices at once (``DataLoader(batch_size=None, sampler=<batch sampler>)``), so a batch is
one tensor gather, not ``batch_size`` item lookups and a collate.

Data-parallel training (Lightning DDP, ``use_distributed_sampler=False``): the training sampler
shards every global batch over the ranks by the core rule of :mod:`ptycho.distributed` (contiguous
``array_split`` shards of the same global order; training batches smaller than the world size are
dropped on every rank so all ranks take the same number of steps).  Rank and world size are read
from ``torch.distributed`` when the sampler is iterated (the process group exists by then, under
``ddp`` and ``ddp_spawn`` alike), unless given.  Validation and inference samplers are built with
``world_size=1``: every rank evaluates the whole validation split.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ptycho.conventions import channels, tf_to_torch_images, tf_to_torch_positions
from ptycho.distributed import kept_batches, replica_batches
from ptycho.errors import DataContractError
from ptycho.loader import PtychoDataContainer
from ptycho.streaming import StreamingContainer
from ptycho.training_plan import batches, epoch_order, split_train_val
from ptycho.workflows.common import model_inputs

__all__ = [
    "GroupedTensors",
    "PlanBatchSampler",
    "StreamingGroupedTensors",
    "build_inference_loader",
    "build_training_loaders",
    "check_channels",
    "data_device",
    "world",
]


def world() -> tuple[int, int]:
    """``(world_size, rank)`` of the initialised ``torch.distributed`` process group, else ``(1, 0)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def check_channels(container: PtychoDataContainer | StreamingContainer, gridsize: int, *, name: str = "data") -> None:
    """Raise ``DataContractError`` unless the container has ``C = gridsize**2`` channels."""
    C = channels(gridsize)
    have = container.channels if isinstance(container, StreamingContainer) else container.X.shape[-1]
    if have != C:
        raise DataContractError(
            f"the grouped {name} has {have} channels but gridsize={gridsize} needs "
            f"C = gridsize**2 = {C}",
            field="gridsize",
            fix="group the data with the model's gridsize (create_ptycho_data_container with the same config)",
        )


class GroupedTensors(Dataset):
    """The model inputs of a container as channels-first tensors, indexed by batches of indices.

    ``ds[indices]`` -> ``(x_scaled [b, C, N, N], positions [b, C, 1, 2])`` plus ``y_amp [b, 1, N, N]``
    when built with ``with_target=True``.
    """

    def __init__(
        self,
        container: PtychoDataContainer,
        intensity_scale: float,
        *,
        with_target: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        x, pos = model_inputs(container, intensity_scale)
        self.x_scaled = torch.from_numpy(tf_to_torch_images(x)).to(device or "cpu")
        self.positions = torch.from_numpy(tf_to_torch_positions(pos)).to(device or "cpu")
        self.y_amp = (
            torch.from_numpy(np.ascontiguousarray(tf_to_torch_images(container.Y_I[..., :1]), dtype=np.float32)).to(
                device or "cpu"
            )
            if with_target
            else None
        )

    def __len__(self) -> int:
        return self.x_scaled.shape[0]

    def __getitem__(self, indices: Sequence[int] | np.ndarray | int) -> tuple[torch.Tensor, ...]:
        idx = torch.from_numpy(np.atleast_1d(np.asarray(indices, dtype=np.int64)))
        if self.x_scaled.is_cuda:
            # pinned + non_blocking: a pageable copy would wait for the GPU to drain every step
            idx = idx.pin_memory().to(self.x_scaled.device, non_blocking=True)
        items = (self.x_scaled[idx], self.positions[idx])
        return items if self.y_amp is None else (*items, self.y_amp[idx])


class StreamingGroupedTensors(Dataset):
    """:class:`GroupedTensors` for a :class:`ptycho.streaming.StreamingContainer`: each batch read from disk.

    ``ds[indices]`` -> ``(x_scaled [b, C, N, N], positions [b, C, 1, 2])`` with the patterns of only
    those groups gathered from the memory-mapped file (:meth:`StreamingContainer.gather_X`); the
    positions ``[n, C, 1, 2]`` are the only per-group arrays held in memory.  With DataLoader
    workers (``num_workers > 0``) the reads overlap the training step.
    """

    def __init__(self, container: StreamingContainer, intensity_scale: float) -> None:
        self.container = container
        self.scale = float(intensity_scale)
        self.positions = torch.from_numpy(tf_to_torch_positions(container.coords_nominal.astype(np.float32)))

    def __len__(self) -> int:
        return len(self.container)

    def __getitem__(self, indices: Sequence[int] | np.ndarray | int) -> tuple[torch.Tensor, ...]:
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        x = torch.from_numpy(tf_to_torch_images(self.container.gather_X(idx, self.scale)))
        return x, self.positions[torch.from_numpy(idx)]


def _dataset(container: PtychoDataContainer | StreamingContainer, intensity_scale: float, *, with_target: bool,
             device: torch.device) -> Dataset:
    """:class:`StreamingGroupedTensors` for a streaming container, else :class:`GroupedTensors`."""
    if isinstance(container, StreamingContainer):
        if with_target:
            raise DataContractError("streamed data has no ground-truth object patches", field="realspace_weight",
                                    fix="train with realspace_weight = 0 or load the data in memory")
        return StreamingGroupedTensors(container, intensity_scale)
    return GroupedTensors(container, intensity_scale, with_target=with_target, device=device)


class PlanBatchSampler(Sampler[list[int]]):
    """Yields this rank's shard of each batch of ``ptycho.training_plan`` over a subset of dataset indices.

    Args:
        indices: dataset indices of the subset (e.g. the training split), int ``[n]``.
        batch_size: groups per *global* batch (the last batch may be smaller).
        seed: workflow seed; epoch ``e`` visits ``indices[epoch_order(n, seed=seed, epoch=e)]``.
        shuffle: False keeps ``indices`` in order (validation, inference, sequential sampling).
        world_size, rank: the data-parallel group (every rank gets the same number of shards,
            :func:`ptycho.distributed.replica_batches`); default :func:`world` at iteration time;
            ``world_size=1`` for evaluation (every rank sees every batch).
    """

    def __init__(
        self,
        indices: np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        world_size: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self._world = None if world_size is None else (int(world_size), int(rank or 0))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields (Lightning calls this every epoch)."""
        self.epoch = int(epoch)

    def world(self) -> tuple[int, int]:
        """``(world_size, rank)`` this sampler shards for."""
        return self._world if self._world is not None else world()

    def global_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """The global batches of ``epoch`` (default: the current one) as arrays of dataset indices."""
        e = self.epoch if epoch is None else int(epoch)
        order = epoch_order(len(self.indices), seed=self.seed, epoch=e, shuffle=self.shuffle)
        return [self.indices[b] for b in batches(order, self.batch_size)]

    def batch_indices(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` (all of :meth:`global_batches` for one process)."""
        plan = self.global_batches(epoch)
        size, rank = self.world()
        return plan if size == 1 else replica_batches(plan, size, rank)

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.batch_indices():
            yield b.tolist()

    def __len__(self) -> int:
        size, _rank = self.world()
        if size == 1:
            return -(-len(self.indices) // self.batch_size)
        return len(kept_batches(self.global_batches(), size))


def data_device(container: PtychoDataContainer, device: torch.device | str | None, num_workers: int) -> torch.device:
    """Where the dataset tensors live: the GPU when training there with in-process loading and it fits.

    On CUDA with ``num_workers == 0`` the whole dataset is copied to the GPU once when it takes less
    than a quarter of the free device memory (no host-to-device copy per batch); otherwise the CPU.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cuda" or num_workers > 0 or isinstance(container, StreamingContainer):
        return torch.device("cpu")
    free, _total = torch.cuda.mem_get_info(dev)
    return dev if 2 * container.X.nbytes < free // 4 else torch.device("cpu")


def _loader(dataset: Dataset, sampler: Sampler, execution_config: Any | None) -> DataLoader:
    """A DataLoader with the execution config's worker settings (batching is done by ``sampler``)."""
    kw: dict[str, Any] = {"num_workers": 0, "pin_memory": False}
    on_device = getattr(dataset, "x_scaled", torch.empty(0)).device.type != "cpu"
    if execution_config is not None and not on_device:
        kw["num_workers"] = int(execution_config.num_workers)
        kw["pin_memory"] = bool(execution_config.pin_memory)
        if kw["num_workers"] > 0:
            kw["persistent_workers"] = bool(execution_config.persistent_workers)
            if execution_config.prefetch_factor is not None:
                kw["prefetch_factor"] = int(execution_config.prefetch_factor)
    return DataLoader(dataset, sampler=sampler, batch_size=None, **kw)


def build_training_loaders(
    container: PtychoDataContainer,
    *,
    gridsize: int,
    batch_size: int,
    intensity_scale: float,
    seed: int,
    shuffle: bool = True,
    with_target: bool = False,
    execution_config: Any | None = None,
    device: torch.device | str | None = None,
) -> tuple[DataLoader, DataLoader | None]:
    """Training and validation loaders of one container (validation None when the split is empty).

    ``device``: the training device; see :func:`data_device` for where the tensors are kept.
    """
    check_channels(container, gridsize, name="training data")
    workers = int(getattr(execution_config, "num_workers", 0) or 0)
    dataset = _dataset(container, intensity_scale, with_target=with_target,
                       device=data_device(container, device, workers))
    train_idx, val_idx = split_train_val(len(dataset))
    train = _loader(dataset, PlanBatchSampler(train_idx, batch_size, seed=seed, shuffle=shuffle), execution_config)
    val = None
    if len(val_idx):
        val = _loader(dataset, PlanBatchSampler(val_idx, batch_size, seed=seed, shuffle=False, world_size=1),
                      execution_config)
    return train, val


def build_inference_loader(
    container: PtychoDataContainer,
    *,
    gridsize: int,
    batch_size: int,
    intensity_scale: float,
    execution_config: Any | None = None,
    device: torch.device | str | None = None,
) -> DataLoader:
    """Every group of ``container`` in index order, ``batch_size`` at a time: ``(x_scaled, positions)``."""
    check_channels(container, gridsize)
    workers = int(getattr(execution_config, "num_workers", 0) or 0)
    dataset = _dataset(container, intensity_scale, with_target=False, device=data_device(container, device, workers))
    sampler = PlanBatchSampler(np.arange(len(dataset)), batch_size, shuffle=False, world_size=1)
    return _loader(dataset, sampler, execution_config)

"""The data-parallel sharding rule of ``ptycho.distributed`` (shared by both backends)."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.distributed import check_world_size, kept_batches, loss_weight, replica_batches, shard_slices
from ptycho.training_plan import batches, epoch_order


@pytest.mark.parametrize(("n", "world"), [(8, 2), (5, 2), (7, 3), (3, 3), (16, 4)])
def test_shards_partition_the_batch_in_order_with_sizes_differing_by_at_most_one(n, world):
    slices = shard_slices(n, world)
    sizes = [s.stop - s.start for s in slices]
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    assert sizes == [len(a) for a in np.array_split(np.arange(n), world)]
    assert np.array_equal(np.concatenate([np.arange(n)[s] for s in slices]), np.arange(n))


def test_replicas_take_distinct_shards_of_the_same_global_batches_and_equal_step_counts():
    plan = batches(epoch_order(13, seed=3, epoch=1), 4)  # 4, 4, 4, 1
    per_rank = [replica_batches(plan, 2, r) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3  # the 1-group batch is dropped on both ranks
    for step, global_batch in enumerate(kept_batches(plan, 2)):
        assert np.array_equal(np.concatenate([per_rank[0][step], per_rank[1][step]]), global_batch)


def test_weighted_shard_means_average_to_the_global_mean():
    rng = np.random.default_rng(0)
    values = rng.normal(size=7)  # per-group losses of a global batch of 7
    world = 3
    shards = [values[s] for s in shard_slices(len(values), world)]
    ddp_average = np.mean([loss_weight(len(s), len(values), world) * s.mean() for s in shards])
    assert ddp_average == pytest.approx(values.mean(), rel=1e-12)
    assert loss_weight(4, 8, 2) == 1.0


def test_world_size_checks():
    check_world_size(8, 2)
    with pytest.raises(ValueError, match="GLOBAL batch"):
        check_world_size(2, 4)
    with pytest.raises(ValueError):
        check_world_size(8, 0)
    with pytest.raises(ValueError):
        replica_batches([np.arange(4)], 2, 2)

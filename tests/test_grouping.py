"""Tests of ptycho.grouping: the neighbour-grouping index logic (specs/data.md "Grouping rule")."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho.errors import DataContractError
from ptycho.grouping import group_neighbors, k_nearest_others, unrank_combinations


def _positions(rng: np.random.Generator, M: int, span: float = 100.0) -> np.ndarray:
    return rng.uniform(0.0, span, size=(M, 2))


def _kth_other_distance(xy: np.ndarray, K: int) -> np.ndarray:
    """Distance from each point to its K-th nearest other point (brute force)."""
    d = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, K - 1]


def _assert_valid_groups(xy: np.ndarray, nn: np.ndarray, gridsize: int, K: int) -> None:
    C = gridsize**2
    M = xy.shape[0]
    assert nn.dtype == np.int64
    assert nn.ndim == 2 and nn.shape[1] == C
    assert nn.min() >= 0 and nn.max() < M
    # members of a group are distinct
    assert (np.sort(nn, axis=1)[:, 1:] != np.sort(nn, axis=1)[:, :-1]).all()
    if C > 1:
        K_eff = min(K, M - 1)
        kth = _kth_other_distance(xy, K_eff)
        seeds = nn[:, 0]
        dist = np.linalg.norm(xy[nn[:, 1:]] - xy[seeds][:, None, :], axis=-1)
        # every non-seed member is among the K nearest others of the seed (ties allowed)
        assert (dist <= kth[seeds][:, None] + 1e-9).all()


# --------------------------------------------------------------------------- shapes and rule


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_shapes_dtype_and_rule(gridsize, rng):
    xy = _positions(rng, 60)
    nn = group_neighbors(xy, gridsize, K=max(8, gridsize**2 - 1), nsamples=25, seed=3)
    assert nn.shape == (25, gridsize**2)
    _assert_valid_groups(xy, nn, gridsize, max(8, gridsize**2 - 1))
    # seeds are distinct when nsamples < M
    assert len(np.unique(nn[:, 0])) == 25


@given(
    M=st.integers(min_value=9, max_value=80),
    gridsize=st.integers(min_value=1, max_value=3),
    extra_k=st.integers(min_value=0, max_value=6),
    nsamples=st.integers(min_value=1, max_value=120),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    data_seed=st.integers(min_value=0, max_value=1000),
)
def test_generated_groups_obey_the_rule(M, gridsize, extra_k, nsamples, seed, data_seed):
    xy = _positions(np.random.default_rng(data_seed), M)
    C = gridsize**2
    K = C - 1 + extra_k
    if nsamples > M and C > 1:
        with pytest.raises(DataContractError, match="enable_oversampling"):
            group_neighbors(xy, gridsize, K, nsamples, seed)
        return
    nn = group_neighbors(xy, gridsize, K, nsamples, seed)
    assert nn.shape == (min(nsamples, M), C)
    _assert_valid_groups(xy, nn, gridsize, K)


def test_gridsize1_fast_path_natural_order_when_all_points_used(rng):
    xy = _positions(rng, 17)
    nn = group_neighbors(xy, 1, K=4, nsamples=100, seed=0)
    np.testing.assert_array_equal(nn[:, 0], np.arange(17))
    sub = group_neighbors(xy, 1, K=4, nsamples=5, seed=0)
    assert sub.shape == (5, 1) and len(np.unique(sub)) == 5


def test_all_points_used_gives_every_seed_in_natural_order(rng):
    xy = _positions(rng, 30)
    nn = group_neighbors(xy, 2, K=6, nsamples=30, seed=1)
    np.testing.assert_array_equal(nn[:, 0], np.arange(30))


def test_sequential_sampling_uses_first_points_in_order(rng):
    xy = _positions(rng, 40)
    nn = group_neighbors(xy, 2, K=6, nsamples=12, seed=5, sequential_sampling=True)
    np.testing.assert_array_equal(nn[:, 0], np.arange(12))
    _assert_valid_groups(xy, nn, 2, 6)


def test_K_is_clipped_to_the_dataset(rng):
    xy = _positions(rng, 5)
    nn = group_neighbors(xy, 2, K=50, nsamples=5, seed=0)
    assert nn.shape == (5, 4)
    _assert_valid_groups(xy, nn, 2, 4)


def test_minimal_dataset_gridsize3():
    # exactly C points and K = C - 1: every group is the whole dataset
    xy = np.stack(np.meshgrid(np.arange(3.0), np.arange(3.0)), -1).reshape(-1, 2)
    nn = group_neighbors(xy, 3, K=8, nsamples=9, seed=0)
    assert (np.sort(nn, axis=1) == np.arange(9)).all()


def test_duplicate_positions_never_put_the_seed_twice():
    xy = np.zeros((6, 2))  # every point at the same place
    nn = group_neighbors(xy, 2, K=3, nsamples=6, seed=0)
    for row in nn:
        assert len(set(row.tolist())) == 4


def test_members_cover_the_neighbourhood_uniformly():
    # on a lattice every interior seed has 4 neighbours at distance 1; K = 4, C - 1 = 3
    g = np.arange(12.0)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    nn = group_neighbors(xy, 2, K=4, nsamples=len(xy), seed=11)
    interior = [i for i, (x, y) in enumerate(xy) if 0 < x < 11 and 0 < y < 11]
    counts = np.zeros(4)
    for i in interior:
        neigh = {j for j in range(len(xy)) if np.isclose(np.abs(xy[j] - xy[i]).sum(), 1.0)}
        members = nn[i, 1:].tolist()
        assert set(members) <= neigh
        # which of the four directions was left out
        left_out = (neigh - set(members)).pop()
        d = tuple(xy[left_out] - xy[i])
        counts[[(1, 0), (-1, 0), (0, 1), (0, -1)].index(d)] += 1
    # 100 interior seeds: each direction is left out ~25 times
    assert counts.min() >= 10, counts


def test_channel_order_of_members_is_random():
    g = np.arange(10.0)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    nn = group_neighbors(xy, 2, K=3, nsamples=len(xy), seed=2)
    # not always sorted by index or by distance rank
    assert not (np.diff(nn[:, 1:], axis=1) > 0).all()


# --------------------------------------------------------------------------- determinism


def test_deterministic_for_a_seed_and_different_seeds_differ(rng):
    xy = _positions(rng, 200)
    a = group_neighbors(xy, 2, K=7, nsamples=50, seed=42)
    b = group_neighbors(xy, 2, K=7, nsamples=50, seed=42)
    c = group_neighbors(xy, 2, K=7, nsamples=50, seed=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_global_numpy_rng_untouched_and_ignored(rng):
    xy = _positions(rng, 100)
    np.random.seed(123)
    state = np.random.get_state()
    a = group_neighbors(xy, 2, K=7, nsamples=40, seed=9)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    np.random.seed(999)  # a different global state must not change the result
    b = group_neighbors(xy, 2, K=7, nsamples=40, seed=9)
    np.testing.assert_array_equal(a, b)


def test_result_does_not_depend_on_workers(rng):
    xy = _positions(rng, 300)
    a = group_neighbors(xy, 2, K=7, nsamples=100, seed=1, workers=1)
    b = group_neighbors(xy, 2, K=7, nsamples=100, seed=1, workers=2)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- oversampling


def test_oversampling_gives_distinct_groups_deterministically(rng):
    xy = _positions(rng, 20)
    kw = dict(gridsize=2, K=6, nsamples=150, seed=4, enable_oversampling=True)
    a = group_neighbors(xy, **kw)
    b = group_neighbors(xy, **kw)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (150, 4)
    _assert_valid_groups(xy, a, 2, 6)
    key = np.concatenate([a[:, :1], np.sort(a[:, 1:], axis=1)], axis=1)
    assert len(np.unique(key, axis=0)) == 150  # 20 * comb(6, 3) = 400 candidates: no repeats


def test_oversampling_neighbor_pool_size_widens_the_pool(rng):
    xy = _positions(rng, 30)
    nn = group_neighbors(xy, 2, K=3, nsamples=200, seed=0, enable_oversampling=True, neighbor_pool_size=8)
    _assert_valid_groups(xy, nn, 2, 8)
    key = np.concatenate([nn[:, :1], np.sort(nn[:, 1:], axis=1)], axis=1)
    assert len(np.unique(key, axis=0)) == 200


def test_oversampling_repeats_only_when_candidates_run_out(rng):
    xy = _positions(rng, 10)
    nn = group_neighbors(xy, 2, K=3, nsamples=50, seed=0, enable_oversampling=True)
    # comb(3, 3) = 1 candidate per seed, 10 in all
    key = np.concatenate([nn[:, :1], np.sort(nn[:, 1:], axis=1)], axis=1)
    assert nn.shape == (50, 4) and len(np.unique(key, axis=0)) == 10


def test_oversampling_not_needed_uses_standard_path(rng):
    xy = _positions(rng, 50)
    a = group_neighbors(xy, 2, K=7, nsamples=20, seed=3, enable_oversampling=True)
    b = group_neighbors(xy, 2, K=7, nsamples=20, seed=3)
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- helpers


@given(n=st.integers(min_value=0, max_value=9), data=st.data())
def test_unrank_combinations_matches_itertools(n, data):
    r = data.draw(st.integers(min_value=0, max_value=n))
    expected = np.array(list(itertools.combinations(range(n), r)), dtype=np.int64).reshape(math.comb(n, r), r)
    got = unrank_combinations(np.arange(math.comb(n, r)), n, r)
    np.testing.assert_array_equal(got, expected)


def test_unrank_combinations_rejects_out_of_range():
    with pytest.raises(ValueError, match="ranks"):
        unrank_combinations(np.array([math.comb(5, 2)]), 5, 2)


@given(M=st.integers(min_value=2, max_value=40), data=st.data())
def test_k_nearest_others_matches_brute_force(M, data):
    K = data.draw(st.integers(min_value=1, max_value=M - 1))
    seed = data.draw(st.integers(min_value=0, max_value=1000))
    xy = np.random.default_rng(seed).uniform(0, 50, size=(M, 2))
    seeds = np.arange(M)
    got = k_nearest_others(xy, seeds, K)
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, :K]
    np.testing.assert_allclose(np.take_along_axis(d, got, axis=1), expected)
    assert not (got == seeds[:, None]).any()

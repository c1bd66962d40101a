"""Neighbour grouping of scan positions: pure index logic, NumPy + SciPy only.

A *group* is ``C = gridsize**2`` scan positions that the network sees together
as the ``C`` channels of one sample.  This module only decides *which* scan
indices form each group; :mod:`ptycho.raw_data` turns the indices into
diffraction stacks and coordinates.

Group rule (``specs/data.md`` "Grouping rule")
    * A group is built around a *seed* scan position ``s``.  Channel 0 of the
      group is the seed itself.
    * Channels ``1 .. C-1`` are ``C - 1`` distinct points drawn uniformly without
      replacement from the ``K`` nearest *other* points of ``s`` (Euclidean
      distance in the ``(x, y)`` plane, ``scipy.spatial.cKDTree``), in random
      order.  ``K`` is clipped to ``M - 1`` when the dataset has fewer points.
    * ``gridsize == 1`` is the fast path: each group is just ``[s]`` (no tree).
    * Requirements: ``M >= C`` points and ``K >= C - 1``.

    Deviation from upstream PtychoPINN: upstream drew all ``C`` members from the
    ``K`` nearest neighbours *excluding* the seed, so the seed was never part of
    its own group and it needed ``K >= C``.  Here the seed is always channel 0
    (the group is genuinely "the seed and its neighbours", and channel 0 is a
    well-defined centre channel).  Upstream also used numpy's *global* RNG;
    here every random draw comes from ``np.random.default_rng(seed)``.

Seed selection
    * ``sequential_sampling=True``: seeds ``0, 1, ..., min(nsamples, M) - 1``.
    * otherwise, ``n = min(nsamples, M)``: when ``n < M`` the seeds are ``n``
      distinct points in random order; when ``n == M`` every point is a seed,
      in natural order ``0 .. M-1`` (as upstream).

Oversampling (``nsamples > M`` and ``C > 1``)
    Requires ``enable_oversampling=True`` (else :class:`DataContractError`),
    whether or not ``sequential_sampling`` is set (the oversampling draw is
    always random).
    Each seed has ``ncomb = comb(pool, C - 1)`` distinct groups, where
    ``pool = neighbor_pool_size or K`` nearest other points (clipped to
    ``M - 1``; ``pool >= C - 1`` required).  As upstream,
    ``n_seeds = min(2 * ceil(nsamples / ncomb), M)`` seeds are drawn without
    replacement, and ``nsamples`` groups are drawn *without replacement* from the
    ``n_seeds * ncomb`` candidate groups (with replacement only when there are
    fewer candidates than ``nsamples``).  Candidates are never enumerated:
    a drawn rank is decoded with the combinatorial number system.

Determinism
    Same inputs and same integer ``seed`` give the same groups, on every
    platform numpy's ``PCG64`` is available.  ``seed=None`` draws fresh OS
    entropy (non-reproducible, like upstream's unseeded workflows).  numpy's
    global RNG state is never read or written.
"""

from __future__ import annotations

import math
from numbers import Integral
from os import PathLike

import numpy as np

from ptycho import conventions
from ptycho.errors import DataContractError

__all__ = ["group_neighbors", "k_nearest_others", "unrank_combinations"]

#: Largest number of candidate groups per seed the oversampling path can rank (int64-safe).
_MAX_COMBINATIONS = 2**62


def _check_positive_int(value: object, name: str, *, minimum: int, file: str | PathLike | None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < minimum:
        raise DataContractError(
            f"{name}={value!r} is invalid: expected an integer >= {minimum}",
            file=file,
            field=name,
            fix=f"pass {name} as an int >= {minimum}",
        )
    return int(value)


def k_nearest_others(xy: np.ndarray, seeds: np.ndarray, K: int, *, workers: int = 1) -> np.ndarray:
    """Indices of the ``K`` nearest *other* points of each seed, nearest first.

    Parameters
    ----------
    xy:
        float ``[M, 2]`` positions in pixels, ``(x, y)`` per row.
    seeds:
        int ``[S]`` indices into ``xy``.
    K:
        number of neighbours, ``1 <= K <= M - 1``.
    workers:
        threads for the tree query (result does not depend on it).

    Returns
    -------
    int64 ``[S, K]``.  The seed is removed from its own neighbour list even when
    other points share its coordinates (duplicates count as neighbours at
    distance 0).  Ties at equal distance are broken by ``cKDTree``
    (deterministically for fixed input).
    """
    M = xy.shape[0]
    if not 1 <= K <= M - 1:
        raise ValueError(f"K={K} must satisfy 1 <= K <= M - 1 = {M - 1}")
    from scipy.spatial import cKDTree  # lazy: keeps `import ptycho.raw_data` light

    tree = cKDTree(xy)
    _, idx = tree.query(xy[seeds], k=K + 1, workers=workers)
    idx = np.asarray(idx, dtype=np.int64).reshape(len(seeds), K + 1)
    drop = idx == seeds[:, None]
    # The seed is normally the first hit; with duplicated coordinates it may be
    # later or (beyond K+1 duplicates) absent, in which case drop the farthest hit.
    first = np.argmax(drop, axis=1)
    first[~drop.any(axis=1)] = K
    keep = np.ones_like(drop)
    keep[np.arange(len(seeds)), first] = False
    return idx[keep].reshape(len(seeds), K)


def _random_subset_columns(rng: np.random.Generator, n_rows: int, n_cols: int, k: int) -> np.ndarray:
    """For each row, ``k`` distinct column indices of ``range(n_cols)`` in uniformly random order.

    Returns int64 ``[n_rows, k]``.  Vectorised: the first ``k`` entries of an
    argsort of i.i.d. uniform keys are a uniform random ordered ``k``-subset.
    """
    if k == 0:
        return np.empty((n_rows, 0), dtype=np.int64)
    keys = rng.random((n_rows, n_cols))
    if k < n_cols:
        part = np.argpartition(keys, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1).astype(np.int64)
    return np.argsort(keys, axis=1).astype(np.int64)


def unrank_combinations(ranks: np.ndarray, n: int, r: int) -> np.ndarray:
    """Decode lexicographic ranks into ``r``-subsets of ``range(n)`` (combinatorial number system).

    ``unrank_combinations(np.arange(comb(n, r)), n, r)`` equals
    ``list(itertools.combinations(range(n), r))`` row by row.

    Parameters
    ----------
    ranks: int ``[S]``, each in ``[0, comb(n, r))``.
    n, r: ``0 <= r <= n``.

    Returns
    -------
    int64 ``[S, r]``, each row strictly increasing.
    """
    ranks = np.asarray(ranks, dtype=np.int64).copy()
    total = math.comb(n, r)
    if ranks.size and (ranks.min() < 0 or ranks.max() >= total):
        raise ValueError(f"ranks must lie in [0, comb({n}, {r}) = {total})")
    # table[a, b] = comb(a, b) for a in [0, n], b in [0, r]
    table = np.array([[math.comb(a, b) for b in range(r + 1)] for a in range(n + 1)], dtype=np.int64)
    out = np.empty((ranks.size, r), dtype=np.int64)
    x = np.zeros(ranks.size, dtype=np.int64)
    for i in range(r):
        remaining = r - i - 1
        for _ in range(n):
            # number of subsets whose element i is x: choose the rest from (x, n)
            cnt = table[np.clip(n - x - 1, 0, n), remaining]
            move = ranks >= cnt
            if not move.any():
                break
            ranks -= np.where(move, cnt, 0)
            x += move
        out[:, i] = x
        x = x + 1
    return out


def _select_seeds(
    rng: np.random.Generator, n_points: int, nsamples: int, sequential_sampling: bool
) -> np.ndarray:
    n = min(nsamples, n_points)
    if sequential_sampling or n == n_points:
        return np.arange(n, dtype=np.int64)
    return rng.choice(n_points, size=n, replace=False).astype(np.int64)


def group_neighbors(
    xy: np.ndarray,
    gridsize: int,
    K: int,
    nsamples: int,
    seed: int | None = None,
    *,
    sequential_sampling: bool = False,
    enable_oversampling: bool = False,
    neighbor_pool_size: int | None = None,
    file: str | PathLike | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Group scan positions into sets of ``C = gridsize**2`` neighbouring indices.

    Parameters
    ----------
    xy:
        float ``[M, 2]`` scan positions in pixels, ``(x, y)`` per row
        (``conventions.X_INDEX`` / ``Y_INDEX``).
    gridsize:
        positive int; ``C = gridsize**2`` members per group.
    K:
        neighbourhood size: members other than the seed come from the seed's
        ``K`` nearest other points.  Needs ``K >= C - 1`` (ignored when ``C == 1``).
    nsamples:
        requested number of groups (int >= 1).  Without oversampling the result
        has ``min(nsamples, M)`` groups.
    seed:
        integer seed of ``np.random.default_rng``; ``None`` = fresh entropy.
    sequential_sampling:
        seeds are the first ``min(nsamples, M)`` points in order.
    enable_oversampling, neighbor_pool_size:
        allow ``nsamples > M`` for ``C > 1`` (see module docstring).
    file:
        dataset path, only used in error messages.
    workers:
        threads for the KD-tree query; the result does not depend on it.

    Returns
    -------
    nn_indices: int64 ``[B, C]``; ``nn_indices[:, 0]`` are the seeds.

    Raises
    ------
    DataContractError
        ``M < C``, ``K < C - 1``, invalid ``gridsize``/``K``/``nsamples``/``neighbor_pool_size``,
        non-finite positions, or ``nsamples > M`` with ``C > 1`` and oversampling disabled.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise DataContractError(
            f"positions have shape {xy.shape}, expected [M, 2] (x, y)",
            file=file,
            field="xy",
            fix="stack the coordinates with np.column_stack([xcoords, ycoords])",
        )
    if not np.isfinite(xy).all():
        raise DataContractError(
            "positions contain NaN or inf",
            file=file,
            field="xcoords/ycoords",
            fix="remove or repair the non-finite scan positions",
        )
    gridsize = _check_positive_int(gridsize, "gridsize", minimum=1, file=file)
    C = conventions.channels(gridsize)
    nsamples = _check_positive_int(nsamples, "nsamples", minimum=1, file=file)
    K = _check_positive_int(K, "K", minimum=0, file=file)
    n_points = xy.shape[0]
    if n_points < C:
        raise DataContractError(
            f"the dataset has {n_points} scan positions, fewer than C = gridsize**2 = {C} per group",
            file=file,
            field="xcoords",
            fix=f"use a dataset with at least {C} positions or a smaller gridsize",
        )
    if K < C - 1:
        raise DataContractError(
            f"K={K} nearest neighbours cannot supply the C - 1 = {C - 1} non-seed members of a "
            f"gridsize={gridsize} group",
            file=file,
            field="K",
            fix=f"pass K >= {C - 1} (K = {max(C - 1, 2 * C - 1)} or more gives varied groups)",
        )
    rng = np.random.default_rng(seed)

    if C == 1:
        return _select_seeds(rng, n_points, nsamples, sequential_sampling)[:, None]

    if nsamples > n_points:
        if not enable_oversampling:
            raise DataContractError(
                f"nsamples={nsamples} groups requested from only {n_points} scan positions with "
                f"gridsize={gridsize}",
                file=file,
                field="nsamples",
                fix=f"pass nsamples <= {n_points}, or enable_oversampling=True to draw several "
                "distinct groups per seed",
            )
        pool = K if neighbor_pool_size is None else neighbor_pool_size
        pool = _check_positive_int(pool, "neighbor_pool_size", minimum=0, file=file)
        if pool < C - 1:
            raise DataContractError(
                f"neighbor_pool_size={pool} cannot supply the C - 1 = {C - 1} non-seed members",
                file=file,
                field="neighbor_pool_size",
                fix=f"pass neighbor_pool_size >= {C - 1}",
            )
        return _oversampled_groups(rng, xy, C, min(pool, n_points - 1), nsamples, workers)

    K_eff = min(K, n_points - 1)
    seeds = _select_seeds(rng, n_points, nsamples, sequential_sampling)
    neighbours = k_nearest_others(xy, seeds, K_eff, workers=workers)
    cols = _random_subset_columns(rng, len(seeds), K_eff, C - 1)
    members = np.take_along_axis(neighbours, cols, axis=1)
    return np.concatenate([seeds[:, None], members], axis=1)


def _oversampled_groups(
    rng: np.random.Generator, xy: np.ndarray, C: int, pool: int, nsamples: int, workers: int
) -> np.ndarray:
    """``nsamples`` groups, distinct where possible, from ``comb(pool, C-1)`` candidates per seed."""
    n_points = xy.shape[0]
    ncomb = math.comb(pool, C - 1)
    if ncomb > _MAX_COMBINATIONS:
        raise DataContractError(
            f"comb({pool}, {C - 1}) candidate groups per seed overflow int64",
            field="neighbor_pool_size",
            fix="use a smaller neighbor_pool_size",
        )
    n_seeds = min(2 * math.ceil(nsamples / ncomb), n_points)
    seeds = rng.choice(n_points, size=n_seeds, replace=False).astype(np.int64)
    total = n_seeds * ncomb
    flat = rng.choice(total, size=nsamples, replace=total < nsamples).astype(np.int64)
    slot, rank = np.divmod(flat, ncomb)
    neighbours = k_nearest_others(xy, seeds, pool, workers=workers)[slot]
    chosen = np.take_along_axis(neighbours, unrank_combinations(rank, pool, C - 1), axis=1)
    # random channel order of the non-seed members, as in the standard path
    order = _random_subset_columns(rng, nsamples, C - 1, C - 1)
    members = np.take_along_axis(chosen, order, axis=1)
    return np.concatenate([seeds[slot][:, None], members], axis=1)

"""Phase synchronisation of per-group objects before stitching.

Why: a diffraction pattern records ``|F(P * O)|``, which is the same for ``O`` and ``O * exp(i c)``
for any constant ``c``.  A network that reconstructs each group from its own patterns (PtychoPINN)
therefore gets every group's constant phase from nowhere but its own biases: on the README demo the
per-group offsets against the truth spread over 0.43 rad (range -0.4 to +1.4 rad).  Averaging such
groups on the stitching canvas (``reassemble_position``) mixes unrelated offsets, and the stitched
phase came out anti-correlated with the truth (Pearson -0.39) although every group's own phase
correlates positively with it (median +0.49); with the offsets removed the same predictions
stitch to phase Pearson +0.89 (``specs/physics.md`` §21).  Iterative solvers never see this
because they solve for one object.

What: the relative offset of two overlapping groups is observable where their crops overlap,
``h_ij = mean_r O_i(r) conj(O_j(r))`` over the common object pixels (the mean, not the sum: on the
demo the sum, which lets large overlaps dominate, left the offsets 0.19 rad from the truth's and
the stitched phase at Pearson +0.68; the mean 0.16 rad and +0.75; bilinear sub-pixel overlaps
did no better, 0.17 rad).  The offsets ``theta`` maximising
``sum_ij Re(h_ij exp(-i (theta_i - theta_j)))`` are, after the standard spectral relaxation
(angular synchronisation, Singer 2011), the phases of the leading eigenvector of the Hermitian
matrix ``H = [h_ij]``.  Each connected component of the overlap graph is solved on its own and
rotated so that its weighted mean correction is zero (the global phase stays what the network
gave; it is unobservable).  A group that overlaps no other is left as it is.

Conventions (``ptycho.conventions``): ``global_offsets`` are ``(x, y)`` group centroids in object
pixels, ``[n, 1, 2, 1]`` or ``[n, 2]``; crop pixel ``(u, v)`` (row, column) of group ``k`` shows the object
at ``(y, x) = (g_k.y + u - M/2, g_k.x + v - M/2)``, as in ``reassemble_position``.  Overlaps are
taken at whole-pixel shifts (``round(g_j - g_i)``): a constant phase is estimated from sums over
hundreds of pixels, where a sub-pixel misregistration of a smooth object averages out.
Deterministic: dense ``eigh`` for small components, ARPACK with a fixed start vector otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
from scipy.spatial import cKDTree

__all__ = ["DENSE_LIMIT", "align_group_phases", "central_crop", "group_phase_offsets", "overlap_products"]

#: Components up to this many groups are solved with dense ``numpy.linalg.eigh``.
DENSE_LIMIT = 2000
#: Pixel pairs per vectorised chunk of :func:`overlap_products` (bounds memory).
_CHUNK = 1 << 22


def _offsets_xy(global_offsets: np.ndarray, n: int) -> np.ndarray:
    g = np.asarray(global_offsets, dtype=np.float64)
    if g.ndim not in (2, 4) or g.shape[0] != n or g.size != 2 * n:
        raise ValueError(f"global_offsets must have shape [n, 1, 2, 1] or [n, 2] with n={n}, got {g.shape}")
    return g.reshape(n, 2)


def central_crop(obj: np.ndarray, M: int) -> np.ndarray:
    """The central ``M x M`` (the part stitching uses) of objects ``[n, N, N, 1]``: a view ``[n, M, M, 1]``."""
    o = np.asarray(obj)
    if o.ndim != 4 or o.shape[-1] != 1 or o.shape[1] != o.shape[2]:
        raise ValueError(f"expected objects of shape [n, N, N, 1] (channels-last), got {o.shape}")
    N = o.shape[1]
    if int(M) != M or M < 2 or M % 2 or M > N:
        raise ValueError(f"M must be an even integer with 2 <= M <= N={N}, got {M}")
    lo = N // 2 - M // 2
    return o[:, lo:lo + M, lo:lo + M, :]


def _crops(obj: np.ndarray, M: int) -> np.ndarray:
    return central_crop(obj, M)[..., 0].astype(np.complex128)


def overlap_products(crops: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, h)``: every pair ``i < j`` of ``M x M`` crops that share object pixels and
    ``h_ij = mean O_i conj(O_j)`` over those pixels (whole-pixel shifts; see the module docstring)."""
    n, M, _ = crops.shape
    shift = np.rint(xy).astype(np.int64)
    pairs = cKDTree(shift).query_pairs(r=M - 1, p=np.inf, output_type="ndarray")  # |dx|, |dy| <= M - 1
    if len(pairs) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.complex128)
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    d = shift[j] - shift[i]  # (dx, dy): crop_j pixel (u, v) is crop_i pixel (u + dy, v + dx)
    h = np.zeros(len(i), np.complex128)
    keys = (d[:, 0] + M) * (2 * M + 1) + (d[:, 1] + M)
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    for idx in np.split(order, bounds):  # all pairs with the same shift at once
        dx, dy = int(d[idx[0], 0]), int(d[idx[0], 1])
        ri = slice(max(dy, 0), M + min(dy, 0))  # rows of crop_i inside crop_j
        ci = slice(max(dx, 0), M + min(dx, 0))
        rj = slice(max(-dy, 0), M + min(-dy, 0))
        cj = slice(max(-dx, 0), M + min(-dx, 0))
        area = (ri.stop - ri.start) * (ci.stop - ci.start)
        step = max(1, _CHUNK // max(area, 1))
        for s in range(0, len(idx), step):
            k = idx[s:s + step]
            h[k] = np.einsum("kuv,kuv->k", crops[i[k]][:, ri, ci], np.conj(crops[j[k]][:, rj, cj])) / area
    return i, j, h


def _leading_phases(H: scipy.sparse.csr_matrix) -> np.ndarray:
    """Unit-modulus phases of the leading eigenvector of Hermitian ``H`` (deterministic)."""
    n = H.shape[0]
    if n <= DENSE_LIMIT:
        _w, v = np.linalg.eigh(H.toarray())
        vec = v[:, -1]
    else:
        _w, v = scipy.sparse.linalg.eigsh(H, k=1, which="LA", v0=np.ones(n, np.complex128), tol=1e-10)
        vec = v[:, 0]
    mag = np.abs(vec)
    return np.where(mag > 0, vec / np.where(mag > 0, mag, 1.0), 1.0)


def group_phase_offsets(obj: np.ndarray, global_offsets: np.ndarray, M: int) -> np.ndarray:
    """The constant phase ``theta_k`` (radians, ``[n]``) of each group relative to its overlapping
    neighbours; ``obj * exp(-1j * theta)`` makes the groups agree (see the module docstring)."""
    crops = _crops(obj, M)
    n = crops.shape[0]
    xy = _offsets_xy(global_offsets, n)
    theta = np.zeros(n, np.float64)
    i, j, h = overlap_products(crops, xy)
    keep = np.abs(h) > 0
    i, j, h = i[keep], j[keep], h[keep]
    if len(h) == 0:
        return theta
    graph = scipy.sparse.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    n_comp, label = scipy.sparse.csgraph.connected_components(graph, directed=False)
    for c in range(n_comp):
        members = np.flatnonzero(label == c)
        if len(members) < 2:
            continue
        local = np.full(n, -1, np.int64)
        local[members] = np.arange(len(members))
        sel = label[i] == c
        li, lj, lh = local[i[sel]], local[j[sel]], h[sel]
        H = scipy.sparse.coo_matrix((np.concatenate([lh, np.conj(lh)]), (np.concatenate([li, lj]),
                                     np.concatenate([lj, li]))), shape=(len(members),) * 2).tocsr()
        z = _leading_phases(H)
        z *= np.exp(-1j * np.angle(z.sum()))  # gauge: the component's mean correction is 0
        theta[members] = np.angle(z)
    return theta


def align_group_phases(obj: np.ndarray, global_offsets: np.ndarray, M: int) -> tuple[np.ndarray, np.ndarray]:
    """``(obj * exp(-1j * theta), theta)``: per-group objects ``[n, N, N, 1]`` with their constant
    phases made consistent over the overlaps of their central ``M x M`` crops."""
    theta = group_phase_offsets(obj, global_offsets, M)
    o = np.asarray(obj)
    rotation = np.exp(-1j * theta).astype(o.dtype if np.iscomplexobj(o) else np.complex128)
    return o * rotation[:, None, None, None], theta

"""Scoring a stitched reconstruction against the ground-truth object (backend-neutral).

A stitched canvas from ``reassemble_position(obj, global_offsets, M)`` of size
``S x S`` is centred on the mean group centroid ``(x̄, ȳ)``: canvas pixel ``(i, j)``
shows object pixel ``(ȳ + i - S/2, x̄ + j - S/2)``.  :func:`ground_truth_canvas`
samples the true object on that same grid, so the two can be compared pixel by
pixel over the covered region.
"""

from __future__ import annotations

import numpy as np

from ptycho.reference.physics import object_patches, reassemble_position


def _square(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a[..., 0] if a.ndim == 3 else a


def ground_truth_canvas(objectGuess: np.ndarray, global_offsets: np.ndarray, size: int) -> np.ndarray:
    """The true object on the stitched canvas grid, complex64 ``[size, size]``."""
    centre = np.asarray(global_offsets, dtype=np.float64).reshape(-1, 2).mean(axis=0)
    return object_patches(np.asarray(objectGuess), centre[None, :], int(size))[0]


def coverage_mask(global_offsets: np.ndarray, N: int, M: int = 20) -> np.ndarray:
    """Boolean ``[S, S]``: the canvas pixels that at least one stitched patch covers."""
    n = np.asarray(global_offsets).shape[0]
    ones = np.ones((n, N, N, 1), dtype=np.complex64)
    return np.abs(_square(reassemble_position(ones, np.asarray(global_offsets, dtype=np.float64), M))) > 0.5


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of two real images over ``mask`` (all pixels when None)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if mask is not None:
        a, b = a[mask], b[mask]
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / denom) if denom > 0 else 0.0


def remove_global_phase(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``recon * exp(-i phi0)`` with ``phi0 = angle(sum recon * conj(truth))``: the best constant phase offset."""
    r, t = np.asarray(recon), np.asarray(truth)
    sel = (slice(None),) if mask is None else mask
    phi0 = np.angle(np.sum(r[sel] * np.conj(t[sel])))
    return (r * np.exp(-1j * phi0)).astype(np.complex64)


def score_stitched(
    stitched: np.ndarray, objectGuess: np.ndarray, global_offsets: np.ndarray, N: int, M: int = 20
) -> dict[str, float]:
    """Amplitude and phase Pearson correlation of a stitched object with the truth over the covered region.

    Returns ``amp_pearson``, ``phase_pearson`` (after removing the global phase
    offset) and ``covered_pixels``.
    """
    recon = _square(stitched)
    mask = coverage_mask(global_offsets, N, M)
    if mask.shape != recon.shape:
        raise ValueError(f"stitched canvas {recon.shape} does not match the coverage grid {mask.shape}; same M?")
    truth = ground_truth_canvas(objectGuess, global_offsets, recon.shape[0])
    aligned = remove_global_phase(recon, truth, mask)
    return {
        "amp_pearson": pearson(np.abs(recon), np.abs(truth), mask),
        "phase_pearson": pearson(np.angle(aligned), np.angle(truth), mask),
        "covered_pixels": float(mask.sum()),
    }

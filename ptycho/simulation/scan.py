"""Scan positions on the object canvas: uniform random and raster (with optional jitter).

Positions are float64 ``[M, 2]`` in ``(x, y)`` order (``conventions.COORD_ORDER``),
in pixels of the object canvas: ``x`` = column, ``y`` = row.  A position is the
object pixel under the patch centre ``(N/2, N/2)`` (``physics.object_patches``).

Every position lies in the *scan window*, per axis of length ``L`` (``W`` for
``x``, ``H`` for ``y``)::

    lo = N/2 + border,    hi = L - 1 - N/2 - border

so the ``N x N`` patch, including the extra bilinear tap of a fractional
position, stays at least ``border`` pixels inside the object (its pixels span
``[p - N/2, p + N/2]``).  ``border`` defaults to :data:`DEFAULT_BORDER` pixels.
"""

from __future__ import annotations

import math

import numpy as np

from ptycho.errors import ConfigError

__all__ = ["DEFAULT_BORDER", "SCAN_KINDS", "make_scan", "min_object_size", "scan_window"]

#: Scan kinds understood by :func:`make_scan`.
SCAN_KINDS: tuple[str, ...] = ("random", "raster")
#: Default margin, in pixels, between every patch and the object edge.
DEFAULT_BORDER: int = 4


def scan_window(length: int, N: int, border: float = DEFAULT_BORDER) -> tuple[float, float]:
    """``(lo, hi)`` bounds in pixels of the positions along an object axis of ``length`` pixels."""
    return N / 2.0 + border, length - 1.0 - N / 2.0 - border


def min_object_size(N: int, border: float = DEFAULT_BORDER) -> int:
    """Smallest object side (pixels) with a non-empty scan window: ``N + 2 * border + 2``."""
    return int(math.ceil(N + 2 * border + 2))


def _check_count(n_positions: int) -> int:
    if isinstance(n_positions, bool) or int(n_positions) != n_positions or n_positions < 1:
        raise ConfigError("n_positions", n_positions, "a positive integer")
    return int(n_positions)


def make_scan(
    kind: str,
    n_positions: int,
    object_shape: tuple[int, int],
    N: int,
    rng: np.random.Generator,
    *,
    border: float = DEFAULT_BORDER,
    step: float | None = None,
    jitter: float = 0.0,
) -> np.ndarray:
    """Scan positions, float64 ``[n_positions, 2]`` in ``(x, y)`` order (pixels).

    ``kind='random'``
        ``x ~ U[lo_x, hi_x)``, ``y ~ U[lo_y, hi_y)`` independently (one
        ``rng.random((M, 2))`` draw, so the first ``k`` positions of a longer
        scan equal the positions of a ``k``-position scan with the same stream).
    ``kind='raster'``
        A row-major grid (``y`` outer, ``x`` inner) of ``nx = ceil(sqrt(M))``
        columns and ``ny = ceil(M / nx)`` rows, truncated to the first ``M``
        positions.  With ``step=None`` the columns and rows span the scan window
        evenly (``linspace(lo, hi)``); with ``step`` (pixels) the grid has that
        spacing and is centred on the object, and must fit in the window.
        ``jitter`` > 0 adds independent ``N(0, jitter**2)`` pixel offsets to every
        coordinate, clipped back into the window.  ``rng`` is used only for jitter.

    ``object_shape`` is ``(H, W)`` in pixels; ``border`` is the margin described
    in the module docstring.  Raises :class:`ConfigError` for an unknown kind, a
    non-positive count, an object too small for ``N`` and ``border``, or a raster
    grid that does not fit.
    """
    if kind not in SCAN_KINDS:
        raise ConfigError("scan", kind, f"one of {list(SCAN_KINDS)}")
    M = _check_count(n_positions)
    if not (np.isfinite(border) and border >= 0):
        raise ConfigError("scan_border", border, "a number of pixels >= 0")
    H, W = (int(v) for v in object_shape)
    need = min_object_size(N, border)
    if min(H, W) < need:
        raise ConfigError(
            "object_size",
            (H, W),
            f"at least {need} pixels per side for N={N} and border={border}",
            fix="increase object_size or decrease N / scan_border",
        )
    (lo_x, hi_x), (lo_y, hi_y) = scan_window(W, N, border), scan_window(H, N, border)
    lo, hi = np.array([lo_x, lo_y]), np.array([hi_x, hi_y])
    if kind == "random":
        return lo + rng.random((M, 2)) * (hi - lo)

    if not (np.isfinite(jitter) and jitter >= 0):
        raise ConfigError("jitter", jitter, "a standard deviation in pixels >= 0")
    nx = int(math.ceil(math.sqrt(M)))
    ny = int(math.ceil(M / nx))
    if step is None:
        xs = np.linspace(lo[0], hi[0], nx)
        ys = np.linspace(lo[1], hi[1], ny)
    else:
        if not (np.isfinite(step) and step > 0):
            raise ConfigError("raster_step", step, "a positive spacing in pixels")
        xs = (W - 1) / 2.0 + (np.arange(nx) - (nx - 1) / 2.0) * step
        ys = (H - 1) / 2.0 + (np.arange(ny) - (ny - 1) / 2.0) * step
        if xs[0] < lo[0] or xs[-1] > hi[0] or ys[0] < lo[1] or ys[-1] > hi[1]:
            largest = min((hi[0] - lo[0]) / max(nx - 1, 1), (hi[1] - lo[1]) / max(ny - 1, 1))
            raise ConfigError(
                "raster_step",
                step,
                f"at most {largest:.3g} pixels for a {ny} x {nx} grid on a {H} x {W} object",
                fix="decrease raster_step or n_positions, or increase object_size",
            )
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    xy = np.stack([gx.ravel(), gy.ravel()], axis=1)[:M]
    if jitter > 0:
        xy = np.clip(xy + rng.normal(0.0, float(jitter), size=xy.shape), lo, hi)
    return np.ascontiguousarray(xy, dtype=np.float64)

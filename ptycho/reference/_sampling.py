"""Bilinear sampling on a shifted pixel grid with per-corner zero fill: the one interpolation kernel.

:func:`ptycho.reference.physics.translate`, :func:`~ptycho.reference.physics.object_patches`,
:func:`~ptycho.reference.physics.extract_patches` and
:func:`~ptycho.reference.physics.reassemble_patches` all reduce to sampling image ``k``
at ``(y, x) = (oy_k + r, ox_k + c)`` for output pixel ``(r, c)``: a per-image origin
plus the integer pixel grid.  This module implements that once, vectorised.

Rule (identical to upstream ``projective_warp_xla`` with ``fill_mode='zeros'``)::

    y0 = floor(y), wy = y - y0,  x0 = floor(x), wx = x - x0
    out = (1-wy)(1-wx) I[y0, x0] + (1-wy) wx I[y0, x0+1] + wy (1-wx) I[y0+1, x0] + wy wx I[y0+1, x0+1]

where each corner sample ``I[yi, xi]`` is replaced by 0 when ``yi`` is outside
``[0, H-1]`` or ``xi`` is outside ``[0, W-1]`` (each corner individually).  Because the
origin is constant per image, ``wy`` and ``wx`` are constant per image and the four
corners are four slices of one ``(h+1) x (w+1)`` window.  All arithmetic is float64 /
complex128.
"""

from __future__ import annotations

import numpy as np

#: Output elements per chunk (bounds peak memory; does not change results).
_CHUNK_ELEMENTS = 1 << 22


def sample_shifted(images: np.ndarray, oy: np.ndarray, ox: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinearly sample at ``(oy[k] + r, ox[k] + c)``, ``r < out_h``, ``c < out_w``, with zero fill.

    Parameters
    ----------
    images:
        ``[K, H, W]`` stack (image ``k`` is sampled for output ``k``) or one ``[H, W]``
        image shared by every output.  Real or complex.
    oy, ox:
        float ``[K]`` row and column origins in pixels of ``images``.
    out_h, out_w:
        output size in pixels.

    Returns
    -------
    ``[K, out_h, out_w]``: float64 for real input, complex128 for complex input.
    """
    work = np.complex128 if np.iscomplexobj(images) else np.float64
    img = np.asarray(images).astype(work, copy=False)
    oy = np.asarray(oy, dtype=np.float64).reshape(-1)
    ox = np.asarray(ox, dtype=np.float64).reshape(-1)
    K = oy.shape[0]
    H, W = img.shape[-2:]
    shared = img.ndim == 2
    if not shared and img.shape[0] != K:
        raise ValueError(f"{img.shape[0]} images but {K} sampling origins")
    flat = img.reshape(-1)
    out = np.empty((K, out_h, out_w), dtype=work)
    step = max(1, _CHUNK_ELEMENTS // max(1, (out_h + 1) * (out_w + 1)))
    gy = np.arange(out_h + 1)
    gx = np.arange(out_w + 1)
    for k0 in range(0, K, step):
        sl = slice(k0, min(K, k0 + step))
        fy = np.floor(oy[sl])
        fx = np.floor(ox[sl])
        wy = (oy[sl] - fy)[:, None, None]
        wx = (ox[sl] - fx)[:, None, None]
        rows = fy.astype(np.int64)[:, None] + gy  # [k, out_h + 1]
        cols = fx.astype(np.int64)[:, None] + gx  # [k, out_w + 1]
        vy = (rows >= 0) & (rows <= H - 1)
        vx = (cols >= 0) & (cols <= W - 1)
        idx = np.clip(rows, 0, H - 1)[:, :, None] * W + np.clip(cols, 0, W - 1)[:, None, :]
        if not shared:
            idx += (np.arange(sl.start, sl.stop) * (H * W))[:, None, None]
        win = np.take(flat, idx)
        win *= vy[:, :, None] & vx[:, None, :]
        top = (1.0 - wx) * win[:, :-1, :-1] + wx * win[:, :-1, 1:]
        bottom = (1.0 - wx) * win[:, 1:, :-1] + wx * win[:, 1:, 1:]
        out[sl] = (1.0 - wy) * top + wy * bottom
    return out

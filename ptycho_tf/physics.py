"""TensorFlow versions of the physics ops of :mod:`ptycho.reference.physics`.

Every public op here has the same name, arguments, layouts and conventions as its
NumPy reference and is tested against it (``tests/tf/test_tf_helper.py``) at float32
tolerances.  Nothing is restated: signs, epsilons, masks and sizes come from
:mod:`ptycho.conventions` and :mod:`ptycho.reference.physics`.

Layouts (as the reference)
    *channel*: images ``[B, N, N, C]``, positions ``[B, 1, 2, C]`` with ``(x, y)`` on
    axis 2.  *flat*: ``[K, H, W]`` with ``K = B * C`` in batch-major order (row
    ``b * C + c``), offsets ``[K, 2]`` ``(x, y)``.  ``x`` indexes columns, ``y`` rows.

Precision
    float32 / complex64 throughout (the reference computes in double precision),
    except :func:`reassemble_position`, which accumulates in float64 / complex128.

Translation
    One interpolation kernel, :func:`sample_shifted`, implements bilinear sampling on a
    shifted pixel grid with per-corner zero fill using two ``tf.gather`` calls (no
    ``ImageProjectiveTransform``, no TensorFlow Addons).  It is differentiable with
    respect to the images (the offsets are data, not parameters).  ``translate``,
    ``reassemble_patches`` and ``extract_patches`` reduce to it, exactly as the
    reference reduces to ``ptycho.reference._sampling.sample_shifted``.

Every op works per sample: nothing ever mixes the samples of a batch, whatever
``B * C`` is (upstream merged them when ``B * C >= 64``; see
``specs/tensorflow-backend.md``).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ptycho.conventions import (
    EXTRACTION_SHIFT_SIGN,
    REASSEMBLY_NORM_EPS,
    REASSEMBLY_SHIFT_SIGN,
    STITCH_NORM_EPS,
    TRANSLATE_CONTENT_SIGN,
    X_INDEX,
    Y_INDEX,
    x_full_target_energy,
)
from ptycho.errors import ConfigError
from ptycho.reference.physics import center_mask, check_sigma, gaussian_kernel3, probe_disk_mask

__all__ = [
    "center_crop",
    "channels_to_flat",
    "combine_complex",
    "diffract",
    "diffract_channels",
    "extract_patches",
    "flat_to_channels",
    "gaussian_smooth3x3",
    "illuminate",
    "masked_mean",
    "mean_absolute_error",
    "normalize_x_full",
    "pad_object",
    "pad_to",
    "poisson_nll",
    "positions_to_flat",
    "reassemble_patches",
    "reassemble_position",
    "sample_shifted",
    "translate",
    "trim",
]

TensorLike = tf.Tensor | np.ndarray


# =========================================================================== layouts
def channels_to_flat(a: tf.Tensor) -> tf.Tensor:
    """Channel images ``[B, H, W, C]`` -> flat stack ``[B * C, H, W]`` (row ``b * C + c``)."""
    s = tf.shape(a)
    return tf.reshape(tf.transpose(a, (0, 3, 1, 2)), (s[0] * s[3], s[1], s[2]))


def flat_to_channels(a: tf.Tensor, C: int) -> tf.Tensor:
    """Flat stack ``[B * C, H, W]`` -> channel images ``[B, H, W, C]``."""
    s = tf.shape(a)
    return tf.transpose(tf.reshape(a, (-1, C, s[1], s[2])), (0, 2, 3, 1))


def positions_to_flat(p: tf.Tensor) -> tf.Tensor:
    """Positions ``[B, 1, 2, C]`` -> offsets ``[B * C, 2]`` ``(x, y)``, row ``b * C + c``."""
    return tf.reshape(tf.transpose(p[:, 0, :, :], (0, 2, 1)), (-1, 2))


def _is_complex(x: tf.Tensor) -> bool:
    return x.dtype.is_complex


def _as_float_or_complex(x: TensorLike) -> tf.Tensor:
    """complex input -> complex64, anything else -> float32."""
    t = tf.convert_to_tensor(x)
    return tf.cast(t, tf.complex64 if t.dtype.is_complex else tf.float32)


def _weight(w: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A real weight in the dtype of ``like`` (complex weights have zero imaginary part)."""
    return tf.cast(w, like.dtype)


# =========================================================================== sampling
def _require(shape: tf.TensorShape, want: list[int | None] | None, name: str, layout: str) -> None:
    """Refuse ``shape`` unless it matches ``want`` (a None entry: any size; None: any shape; unknown graph-mode
    dims always match)."""
    if not shape.is_compatible_with(tf.TensorShape(want)):
        raise ValueError(f"{name} must have layout {layout}, got shape {shape}")


def sample_shifted(images: tf.Tensor, oy: tf.Tensor, ox: tf.Tensor, out_h: int, out_w: int) -> tf.Tensor:
    """Bilinearly sample image ``k`` at ``(oy[k] + r, ox[k] + c)`` with per-corner zero fill.

    The TensorFlow twin of ``ptycho.reference._sampling.sample_shifted``::

        y0 = floor(y), wy = y - y0 (likewise x)
        out = (1-wy)(1-wx) I[y0,x0] + (1-wy) wx I[y0,x0+1] + wy (1-wx) I[y0+1,x0] + wy wx I[y0+1,x0+1]

    where a corner sample is 0 when its row is outside ``[0, H-1]`` or its column outside
    ``[0, W-1]``.  The origin is constant per image, so the weights are constant per image
    and the four corners are slices of one ``(out_h + 1) x (out_w + 1)`` window gathered
    with two ``tf.gather`` calls (rows, then columns).

    Args:
        images: ``[K, H, W]`` float32 or complex64.
        oy, ox: float ``[K]`` row / column origins in input pixels.
        out_h, out_w: output size (Python ints).

    Returns:
        ``[K, out_h, out_w]`` in the dtype of ``images``.
    """
    images = _as_float_or_complex(images)
    # Origins and bilinear weights in float64 (as the reference): an origin near P/2 minus an
    # offset loses ~4e-6 px in float32, which the reassembly normalisation amplifies ~10x.
    oy = tf.cast(tf.reshape(oy, (-1,)), tf.float64)
    ox = tf.cast(tf.reshape(ox, (-1,)), tf.float64)
    H = tf.shape(images)[1]
    W = tf.shape(images)[2]
    fy = tf.floor(oy)
    fx = tf.floor(ox)
    wy = (oy - fy)[:, None, None]
    wx = (ox - fx)[:, None, None]
    rows = tf.cast(fy, tf.int32)[:, None] + tf.range(out_h + 1, dtype=tf.int32)[None, :]  # [K, out_h + 1]
    cols = tf.cast(fx, tf.int32)[:, None] + tf.range(out_w + 1, dtype=tf.int32)[None, :]  # [K, out_w + 1]
    vy = tf.cast((rows >= 0) & (rows <= H - 1), tf.float32)
    vx = tf.cast((cols >= 0) & (cols <= W - 1), tf.float32)
    win = tf.gather(images, tf.clip_by_value(rows, 0, H - 1), axis=1, batch_dims=1)  # [K, out_h + 1, W]
    win = tf.gather(win, tf.clip_by_value(cols, 0, W - 1), axis=2, batch_dims=1)  # [K, out_h + 1, out_w + 1]
    win = win * _weight(vy[:, :, None] * vx[:, None, :], win)
    wx_c = _weight(wx, win)
    wy_c = _weight(wy, win)
    top = (1.0 - wx_c) * win[:, :-1, :-1] + wx_c * win[:, :-1, 1:]
    bottom = (1.0 - wx_c) * win[:, 1:, :-1] + wx_c * win[:, 1:, 1:]
    return (1.0 - wy_c) * top + wy_c * bottom


def _translate_core(
    images: tf.Tensor,
    offsets: tf.Tensor,
    out_hw: tuple[int, int],
    origin: tuple[float, float] = (0.0, 0.0),
) -> tf.Tensor:
    """Sample output ``(r, c)`` of image ``k`` at ``(r + origin_y - s*ty_k, c + origin_x - s*tx_k)``."""
    off = tf.cast(offsets, tf.float64)
    oy = origin[0] - TRANSLATE_CONTENT_SIGN * off[:, Y_INDEX]
    ox = origin[1] - TRANSLATE_CONTENT_SIGN * off[:, X_INDEX]
    return sample_shifted(images, oy, ox, out_hw[0], out_hw[1])


def translate(images: TensorLike, offsets: TensorLike) -> tf.Tensor:
    """Bilinear translation with per-corner zero fill; content moves by ``+offset``.

    ``out_k(r, c)`` = bilinear sample of ``in_k`` at ``(y = r - s*ty_k, x = c - s*tx_k)``,
    ``s = conventions.TRANSLATE_CONTENT_SIGN`` (reference ``physics.translate``).

    Args:
        images: flat stack ``[K, H, W]``, real or complex.
        offsets: ``[K, 2]`` ``(tx, ty)`` in pixels.

    Returns:
        ``[K, H, W]``: complex64 for complex input, float32 otherwise.
    """
    images = _as_float_or_complex(images)
    if images.shape.rank != 3:
        raise ValueError(f"images must have layout [K, H, W], got shape {images.shape}")
    H, W = int(images.shape[1]), int(images.shape[2])
    offsets = tf.convert_to_tensor(offsets)
    _require(offsets.shape, [images.shape[0], 2], "offsets", "[K, 2] (tx, ty), one row per image")
    return _translate_core(images, offsets, (H, W))


# =========================================================================== pad / crop
def pad_to(images: TensorLike, P: int) -> tf.Tensor:
    """Zero-pad the last two axes from ``N`` to ``P``: ``(P - N) // 2`` before, the rest after."""
    a = _as_float_or_complex(images)
    n_h, n_w = int(a.shape[-2]), int(a.shape[-1])
    P = int(P)
    if P < n_h or P < n_w:
        raise ValueError(f"cannot pad {n_h}x{n_w} images to the smaller size P={P}")
    widths = [[0, 0]] * (a.shape.rank - 2) + [
        [(P - n_h) // 2, P - n_h - (P - n_h) // 2],
        [(P - n_w) // 2, P - n_w - (P - n_w) // 2],
    ]
    return tf.pad(a, widths)


def center_crop(images: TensorLike, n: int) -> tf.Tensor:
    """Central ``n x n`` crop of the last two axes: rows/cols ``(H - n)//2 .. (H - n)//2 + n - 1``."""
    a = _as_float_or_complex(images)
    H, W = int(a.shape[-2]), int(a.shape[-1])
    n = int(n)
    if not (0 < n <= H and n <= W):
        raise ValueError(f"cannot centre-crop {H}x{W} images to n={n}")
    return a[..., (H - n) // 2 : (H - n) // 2 + n, (W - n) // 2 : (W - n) // 2 + n]


def pad_object(patch: TensorLike, P: int) -> tf.Tensor:
    """``object.big=False`` assembly: zero-pad ``[B, N, N, 1]`` to ``[B, P, P, 1]`` (no translation)."""
    a = _as_float_or_complex(patch)
    if a.shape.rank != 4 or a.shape[3] != 1:
        raise ValueError(f"pad_object expects one channel [B, N, N, 1], got shape {a.shape}")
    N = int(a.shape[1])
    P = int(P)
    if P < N:
        raise ValueError(f"P={P} must be >= N={N}")
    before = (P - N) // 2
    return tf.pad(a, [[0, 0], [before, P - N - before], [before, P - N - before], [0, 0]])


def trim(canvas: TensorLike, N: int) -> tf.Tensor:
    """Central ``N x N`` crop of a canvas ``[B, P, P, 1]`` -> ``[B, N, N, 1]`` (the ``trimmed_obj``)."""
    a = _as_float_or_complex(canvas)
    if a.shape.rank != 4:
        raise ValueError(f"canvas must have layout [B, P, P, 1], got shape {a.shape}")
    H, W = int(a.shape[1]), int(a.shape[2])
    N = int(N)
    if not 0 < N <= min(H, W):
        raise ValueError(f"cannot trim a {H}x{W} canvas to N={N}")
    top, left = (H - N) // 2, (W - N) // 2  # each axis centred on its own size (reference physics.trim)
    return a[:, top : top + N, left : left + N, :]


# =========================================================================== object assembly
def reassemble_patches(patches: TensorLike, positions: TensorLike, P: int) -> tf.Tensor:
    """Reassemble the ``C`` patches of each group onto its own ``P x P`` canvas (``object.big=True``).

    Per sample ``b`` (reference ``physics.reassemble_patches``)::

        d_c  = REASSEMBLY_SHIFT_SIGN * positions[b, 0, :, c]
        num  = sum_c translate(pad_to(patches[b, :, :, c], P), d_c)
        den  = sum_c translate(pad_to(center_mask(N), P), d_c) + REASSEMBLY_NORM_EPS
        canvas[b, :, :, 0] = num / den

    The pad is fused into the sampling origin.  Each sample is reassembled independently
    for every batch size (no batch-mean centring, no merging of samples).

    Args:
        patches: complex ``[B, N, N, C]`` (N a multiple of 4).
        positions: float ``[B, 1, 2, C]`` relative offsets ``coords_relative``.
        P: canvas size, ``P >= N``.

    Returns:
        complex64 ``[B, P, P, 1]`` (float32 for real input).
    """
    x = _as_float_or_complex(patches)
    if x.shape.rank != 4:
        raise ValueError(f"patches must have layout [B, N, N, C], got shape {x.shape}")
    _require(x.shape, [None, x.shape[1], x.shape[1], None], "patches", "[B, N, N, C] (square patches)")
    N, C = int(x.shape[1]), int(x.shape[3])
    P = int(P)
    if P < N:
        raise ValueError(f"P={P} must be >= N={N}")
    pos = tf.cast(positions, tf.float32)
    _require(pos.shape, [x.shape[0], 1, 2, C], "positions", "[B, 1, 2, C] (x, y) per channel")
    shifts = REASSEMBLY_SHIFT_SIGN * positions_to_flat(pos)
    before = float((P - N) // 2)
    origin = (-before, -before)
    flat = channels_to_flat(x)
    num = _translate_core(flat, shifts, (P, P), origin)
    num = tf.reduce_sum(tf.reshape(num, (-1, C, P, P)), axis=1)
    mask = tf.broadcast_to(tf.constant(center_mask(N)), tf.stack([tf.shape(flat)[0], N, N]))
    den = _translate_core(mask, shifts, (P, P), origin)
    den = tf.reduce_sum(tf.reshape(den, (-1, C, P, P)), axis=1) + REASSEMBLY_NORM_EPS
    return (num / _weight(den, num))[..., None]


def extract_patches(canvas: TensorLike, positions: TensorLike, N: int) -> tf.Tensor:
    """Extract the ``C`` patches of each group from its canvas (inverse of reassembly).

    ``out[b, :, :, c] = center_crop(translate(canvas[b, :, :, 0], EXTRACTION_SHIFT_SIGN *
    positions[b, 0, :, c]), N)`` (reference ``physics.extract_patches``), with the crop
    fused into the sampling origin.

    Args:
        canvas: ``[B, P, P, 1]`` complex (or real).
        positions: float ``[B, 1, 2, C]`` relative offsets.
        N: patch size, ``N <= P``.

    Returns:
        ``[B, N, N, C]`` (channel layout), complex64 for complex input, float32 otherwise.
    """
    a = _as_float_or_complex(canvas)
    if a.shape.rank != 4 or a.shape[3] != 1 or a.shape[1] != a.shape[2]:
        raise ValueError(f"canvas must have shape [B, P, P, 1], got {a.shape}")
    P = int(a.shape[1])
    N = int(N)
    if not 0 < N <= P:
        raise ValueError(f"N={N} must satisfy 0 < N <= P={P}")
    pos = tf.cast(positions, tf.float32)
    _require(pos.shape, [a.shape[0], 1, 2, None], "positions", "[B, 1, 2, C] (x, y) per channel")
    C = int(pos.shape[3])
    shifts = EXTRACTION_SHIFT_SIGN * positions_to_flat(pos)
    start = float((P - N) // 2)
    src = tf.repeat(a[..., 0], C, axis=0)  # row b*C + c holds canvas b
    flat = _translate_core(src, shifts, (N, N), (start, start))
    return flat_to_channels(flat, C)


# =========================================================================== illumination
def _smooth(x: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable 3x3 Gaussian over axes 1, 2 of ``[B, N, N, C]`` with REFLECT padding."""
    k = [float(v) for v in gaussian_kernel3(sigma)]
    p = tf.pad(x, [[0, 0], [1, 1], [0, 0], [0, 0]], mode="REFLECT")
    x = k[0] * p[:, :-2] + k[1] * p[:, 1:-1] + k[2] * p[:, 2:]
    p = tf.pad(x, [[0, 0], [0, 0], [1, 1], [0, 0]], mode="REFLECT")
    return k[0] * p[:, :, :-2] + k[1] * p[:, :, 1:-1] + k[2] * p[:, :, 2:]


def gaussian_smooth3x3(images: TensorLike, sigma: float) -> tf.Tensor:
    """3x3 Gaussian smoothing of each ``N x N`` image (reference ``physics.gaussian_smooth3x3``).

    Kernel ``softmax(-[1, 0, 1] / (2 sigma**2))`` applied separably over axes 1 and 2 with
    REFLECT padding (TensorFlow ``'REFLECT'`` = numpy ``'reflect'``); complex input is
    smoothed with the real kernel (real and imaginary parts alike).  ``sigma == 0`` is the
    identity; ``sigma < 0`` raises ``ConfigError``.  ``images`` ``[B, N, N, C]``.
    """
    a = _as_float_or_complex(images)
    if a.shape.rank != 4 or min(a.shape[1] or 2, a.shape[2] or 2) < 2:
        raise ValueError(f"images must have layout [B, N, N, C] with N >= 2 (3x3 reflect padding), got shape {a.shape}")
    s = check_sigma(sigma)
    return a if s == 0 else _smooth(a, s)


def illuminate(
    patches: TensorLike,
    probe: TensorLike,
    *,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
) -> tf.Tensor:
    """Exit wave ``psi`` (reference ``physics.illuminate``).

    ``psi = probe[None, :, :, None] * patches``; then 3x3 Gaussian smoothing if
    ``gaussian_smoothing_sigma != 0``; then times ``probe_disk_mask(N)`` if ``probe_mask``.

    Args:
        patches: complex ``[B, N, N, C]``.
        probe: complex ``[N, N]`` (normalised).

    Returns:
        complex64 ``[B, N, N, C]``.
    """
    x = tf.cast(patches, tf.complex64)
    pr = tf.cast(probe, tf.complex64)
    if x.shape.rank != 4 or pr.shape.rank != 2:
        raise ValueError(f"expected patches [B, N, N, C] and probe [N, N], got {x.shape} and {pr.shape}")
    _require(x.shape, [None, pr.shape[0], pr.shape[1], None], "patches", "[B, N, N, C] with the probe's N x N")
    _require(pr.shape, [x.shape[1], x.shape[1]], "probe", "[N, N] (square)")
    s = check_sigma(gaussian_smoothing_sigma)
    psi = pr[None, :, :, None] * x
    if s != 0:
        psi = _smooth(psi, s)
    if probe_mask:
        N = int(x.shape[1])
        psi = psi * tf.constant(probe_disk_mask(N).astype(np.complex64))[None, :, :, None]
    return psi


def combine_complex(amp: TensorLike, phase: TensorLike) -> tf.Tensor:
    """``amp * exp(i * phase)`` = ``complex(amp cos(phase), amp sin(phase))``, complex64."""
    a = tf.cast(amp, tf.float32)
    p = tf.cast(phase, tf.float32)
    tf.broadcast_static_shape(a.shape, p.shape)  # ValueError naming both shapes unless they broadcast
    return tf.complex(a * tf.cos(p), a * tf.sin(p))


# =========================================================================== diffraction
def _diffract_last2(psi: tf.Tensor) -> tf.Tensor:
    """``sqrt(fftshift(|fft2(psi)|**2) / (H * W))`` over the last two axes (complex64 -> float32)."""
    F = tf.signal.fft2d(psi)
    H, W = int(psi.shape[-2]), int(psi.shape[-1])
    intensity = (tf.math.real(F) ** 2 + tf.math.imag(F) ** 2) / float(H * W)
    return tf.sqrt(tf.signal.fftshift(intensity, axes=(-2, -1)))


def diffract(psi: TensorLike) -> tf.Tensor:
    """Far-field amplitude over the last two axes (reference ``physics.diffract``).

    ``A = sqrt(fftshift(|fft2(psi)|**2) / N**2)``: no ifftshift before the FFT
    (``conventions.FFT_IFFTSHIFT_BEFORE``), fftshift after; DC at ``(N//2, N//2)``.
    ``psi`` ``[..., N, N]`` complex; returns float32 of the same shape.
    """
    p = tf.cast(psi, tf.complex64)
    if p.shape.rank < 2:
        raise ValueError(f"psi must have at least 2 dimensions [..., N, N], got shape {p.shape}")
    return _diffract_last2(p)


def diffract_channels(psi: TensorLike) -> tf.Tensor:
    """:func:`diffract` for channel layout: complex ``[B, N, N, C]`` -> float32 ``[B, N, N, C]``."""
    p = tf.cast(psi, tf.complex64)
    if p.shape.rank != 4:
        raise ValueError(f"psi must have layout [B, N, N, C], got shape {p.shape}")
    return tf.transpose(_diffract_last2(tf.transpose(p, (0, 3, 1, 2))), (0, 2, 3, 1))


# =========================================================================== normalisation
def normalize_x_full(diffraction: TensorLike) -> tuple[tf.Tensor, tf.Tensor]:
    """``X_full = norm * d`` with ``norm = sqrt((N/2)**2 / mean_{b,c} sum_{h,w} d**2)`` (float64 inside).

    Returns ``(X_full float32 [B, N, N, C], norm float64 scalar tensor)``; reference
    ``physics.normalize_x_full``.
    """
    d = tf.cast(diffraction, tf.float64)
    if d.shape.rank != 4:
        raise ValueError(f"diffraction must have layout [B, N, N, C], got shape {d.shape}")
    _require(d.shape, [None, d.shape[1], d.shape[1], None], "diffraction", "[B, N, N, C] (square patterns)")
    N = int(d.shape[1])
    energy = tf.reduce_mean(tf.reduce_sum(d**2, axis=(1, 2)))
    norm = tf.sqrt(x_full_target_energy(N) / energy)
    return tf.cast(norm * d, tf.float32), norm


# =========================================================================== losses
def masked_mean(terms: tf.Tensor, bad_pixels: TensorLike | None = None) -> tf.Tensor:
    """Mean of float32 loss terms ``[B, N, N, C]`` over the good detector pixels.

    The masking rule of ``ptycho.reference.physics.masked_mean``: ``sum(w * terms) / (B * C * sum(w))``
    with ``w = 1 - bad_pixels`` (bool ``[N, N]``) broadcast as ``[1, N, N, 1]``; the plain mean
    when ``bad_pixels`` is None.
    """
    if bad_pixels is None:
        return tf.reduce_mean(terms)
    w = 1.0 - tf.cast(bad_pixels, tf.float32)
    count = tf.cast(tf.shape(terms)[0] * tf.shape(terms)[3], tf.float32) * tf.reduce_sum(w)
    return tf.reduce_sum(terms * w[None, :, :, None]) / count


def poisson_nll(
    y_true_intensity: TensorLike, y_pred_intensity: TensorLike, bad_pixels: TensorLike | None = None
) -> tf.Tensor:
    """``mean(y_pred - y_true * log(y_pred))`` over every element (float32 scalar).

    Equals ``tf.nn.log_poisson_loss(y_true, log(y_pred))`` reduced by the mean, as upstream's
    ``negloglik``.  No epsilon (``y_pred`` must be > 0).  With ``bad_pixels`` (bool ``[N, N]``)
    the mean runs over the good pixels only (:func:`masked_mean`).
    """
    yt = tf.cast(y_true_intensity, tf.float32)
    yp = tf.cast(y_pred_intensity, tf.float32)
    _require(yp.shape, yt.shape.as_list() if yt.shape.rank is not None else None, "y_pred_intensity",
             f"the shape of y_true_intensity {yt.shape} (no broadcasting)")
    return masked_mean(yp - yt * tf.math.log(yp), bad_pixels)


def mean_absolute_error(a: TensorLike, b: TensorLike, bad_pixels: TensorLike | None = None) -> tf.Tensor:
    """``mean(|a - b|)`` over every element (modulus for complex input), float32 scalar.

    With ``bad_pixels`` (bool ``[N, N]``) the mean runs over the good pixels only (:func:`masked_mean`).
    """
    x = _as_float_or_complex(a)
    y = _as_float_or_complex(b)
    _require(y.shape, x.shape.as_list() if x.shape.rank is not None else None, "b",
             f"the shape of a {x.shape} (no broadcasting)")
    if x.dtype != y.dtype:
        x = tf.cast(x, tf.complex64)
        y = tf.cast(y, tf.complex64)
    return tf.cast(masked_mean(tf.abs(x - y), bad_pixels), tf.float32)


# =========================================================================== stitching
#: Patches per chunk in :func:`reassemble_position` (bounds memory; does not change results).
_STITCH_CHUNK = 1024


def _stitch_taps(q: np.ndarray, f: np.ndarray, M: int, pad: int, S: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Flat canvas indices and bilinear weights of the 4 taps of every crop pixel, ``[k*2*2*M*M]``.

    ``q`` int ``[k, 2]`` and ``f`` float ``[k, 2]`` are the integer and fractional parts of
    ``-TRANSLATE_CONTENT_SIGN * d`` per patch (x, y); taps outside the ``S x S`` canvas get weight 0.
    """
    u = np.arange(M)
    taps = np.arange(2)[None, :, None]
    rows = u[None, None, :] + pad - q[:, Y_INDEX, None, None] - taps  # [k, 2, M]
    cols = u[None, None, :] + pad - q[:, X_INDEX, None, None] - taps
    w_y = np.stack([1.0 - f[:, Y_INDEX], f[:, Y_INDEX]], axis=1)[:, :, None]  # [k, 2, 1]
    w_x = np.stack([1.0 - f[:, X_INDEX], f[:, X_INDEX]], axis=1)[:, :, None]
    w_r = np.where((rows >= 0) & (rows < S), w_y, 0.0)
    w_c = np.where((cols >= 0) & (cols < S), w_x, 0.0)
    rows = np.clip(rows, 0, S - 1)
    cols = np.clip(cols, 0, S - 1)
    idx = (rows[:, :, None, :, None] * S + cols[:, None, :, None, :]).reshape(-1)  # [k, a, b, u, v]
    w = (w_r[:, :, None, :, None] * w_c[:, None, :, None, :]).reshape(-1)
    return tf.constant(idx), tf.constant(w)


def reassemble_position(obj_tensor: TensorLike, global_offsets: TensorLike, M: int = 20) -> tf.Tensor:
    """Stitch per-group objects into one image at their global positions (as Ptychodus calls it).

    Same formula as the reference ``physics.reassemble_position``::

        crop_k = obj[k, N//2 - M//2 : N//2 + M//2, same, 0]       # central M x M
        d_k    = global_offsets[k] - mean_k(global_offsets)        # (x, y)
        pad    = ceil(max |d_k|), rounded up to even;  S = M + 2 pad
        out    = sum_k translate(pad(crop_k), d_k) / (sum_k translate(pad(ones), d_k) + STITCH_NORM_EPS)

    computed as a scatter-add of the four bilinear taps of every crop pixel
    (``tf.math.unsorted_segment_sum``) in float64 / complex128, so memory grows with
    ``n * M * M`` rather than ``n * S * S``.  The canvas size depends on the offsets' values,
    so the offsets are read eagerly (they are data, never trained).

    Args:
        obj_tensor: complex ``[n, N, N, 1]`` per-group objects (``diffraction_to_obj``
            output), a NumPy array or a tensor.
        global_offsets: float64 ``[n, 1, 2, 1]`` group centroids ``(x, y)`` in object pixels.
        M: even crop size, ``2 <= M <= N`` (Ptychodus passes 20).

    Returns:
        complex64 tensor ``[S, S, 1]`` (``np.asarray`` / ``.numpy()`` give the array).
    """
    obj = tf.convert_to_tensor(obj_tensor)
    if obj.shape.rank != 4 or obj.shape[1] != obj.shape[2] or obj.shape[3] != 1:
        raise ValueError(f"obj_tensor must have shape [n, N, N, 1], got {obj.shape}")
    n, N = int(obj.shape[0]), int(obj.shape[1])
    if n < 1:
        raise ValueError("obj_tensor holds no patches (n = 0)")
    g = np.asarray(global_offsets.numpy() if hasattr(global_offsets, "numpy") else global_offsets, np.float64)
    if g.ndim not in (2, 4) or g.shape[0] != n or g.size != 2 * n:  # the (x, y) pair of each of the n groups
        raise ValueError(f"global_offsets must have shape [n, 1, 2, 1] or [n, 2] with n={n}, got {g.shape}")
    if int(M) != M or M < 2 or M % 2 or M > N:
        raise ConfigError("M", M, f"an even integer with 2 <= M <= N={N}")
    M = int(M)
    g = g.reshape(n, 2)
    d = g - g.mean(axis=0)
    pad = int(math.ceil(float(np.max(np.abs(d)))))
    pad += pad % 2
    S = M + 2 * pad
    # Pixel u of a crop lands on canvas row u + pad - q - a with weight (1 - f, f) for tap a in {0, 1},
    # q = floor(-s*d), f = -s*d - q (the reference's derivation).
    t = -TRANSLATE_CONTENT_SIGN * d
    q = np.floor(t).astype(np.int64)
    f = t - q
    lo, hi = N // 2 - M // 2, N // 2 + M // 2
    crop = tf.cast(obj[:, lo:hi, lo:hi, 0], tf.complex128)  # [n, M, M]
    num_re = tf.zeros((S * S,), tf.float64)
    num_im = tf.zeros((S * S,), tf.float64)
    den = tf.zeros((S * S,), tf.float64)
    for k0 in range(0, n, _STITCH_CHUNK):
        idx, w = _stitch_taps(q[k0 : k0 + _STITCH_CHUNK], f[k0 : k0 + _STITCH_CHUNK], M, pad, S)
        c = crop[k0 : k0 + _STITCH_CHUNK]
        vals = tf.reshape(tf.broadcast_to(c[:, None, None, :, :], (int(c.shape[0]), 2, 2, M, M)), (-1,))
        num_re += tf.math.unsorted_segment_sum(w * tf.math.real(vals), idx, S * S)
        num_im += tf.math.unsorted_segment_sum(w * tf.math.imag(vals), idx, S * S)
        den += tf.math.unsorted_segment_sum(w, idx, S * S)
    den += STITCH_NORM_EPS
    out = tf.complex(num_re / den, num_im / den)
    return tf.cast(tf.reshape(out, (S, S, 1)), tf.complex64)

"""NumPy reference implementation of every PtychoPINN physics op: the executable spec.

Both backends (TensorFlow, PyTorch) are tested against these functions.  The prose
version is ``specs/physics.md``.  Every sign, layout, epsilon and FFT convention comes
from :mod:`ptycho.conventions`; nothing is restated here.

Layouts
    *channel*: images ``[B, N, N, C]`` (TF layout), positions ``[B, 1, 2, C]`` with
    ``(x, y)`` on axis 2.  *flat*: image stack ``[K, H, W]`` with ``K = B * C`` in
    batch-major order (row ``b * C + c``), offsets ``[K, 2]`` in ``(x, y)`` order.
    ``x`` indexes columns (last image axis), ``y`` rows.  All lengths are pixels.

Precision
    Inputs are upcast to float64 / complex128; every op computes in double precision and
    casts its result once at the end: complex results are complex64, real results
    float32 (except scalars, which are Python floats).  :func:`forward_physics` chains
    the public ops, so its intermediates are rounded to complex64/float32 between stages,
    as in the backends.

Forward model (``forward_physics``)
    ``reassemble_patches`` (or ``pad_object``) -> ``trim`` / ``extract_patches`` ->
    ``illuminate`` (probe, smoothing, mask) -> ``diffract_channels`` -> scale by
    ``exp(log_scale)`` -> square.

This module never imports tensorflow or torch.
"""

from __future__ import annotations

import math

import numpy as np

from ptycho.conventions import (
    EXTRACTION_SHIFT_SIGN,
    REASSEMBLY_NORM_EPS,
    REASSEMBLY_SHIFT_SIGN,
    STITCH_NORM_EPS,
    TRANSLATE_CONTENT_SIGN,
    X_INDEX,
    Y_INDEX,
    channels,
    channels_to_flat,
    flat_to_channels,
    intensity_scale,
    padded_size,
    positions_to_flat,
    x_full_target_energy,
)
from ptycho.errors import ConfigError, DataContractError
from ptycho.reference._sampling import sample_shifted
from ptycho.reference.probe import (
    DEFAULT_PROBE_WINDOW_SCALE,
    default_probe,
    normalize_probe,
    probe_disk_mask,
)

__all__ = [
    "DEFAULT_PROBE_WINDOW_SCALE",
    "border_mask",
    "center_crop",
    "center_mask",
    "check_sigma",
    "combine_complex",
    "default_probe",
    "diffract",
    "diffract_channels",
    "extract_patches",
    "forward_physics",
    "gaussian_kernel3",
    "gaussian_smooth3x3",
    "illuminate",
    "intensity_scale",
    "good_pixel_weights",
    "masked_mean",
    "mean_absolute_error",
    "normalize_probe",
    "normalize_x_full",
    "object_patches",
    "pad_object",
    "pad_to",
    "poisson_nll",
    "probe_disk_mask",
    "reassemble_patches",
    "reassemble_position",
    "translate",
    "trim",
]
# ``intensity_scale(nphotons, N) = sqrt(nphotons) / (N/2)`` is re-exported from conventions:
# the network is fed ``s * X_full`` and predicts ``s * A``.


# =========================================================================== helpers
def _out_dtype(a: np.ndarray) -> type:
    """complex64 for complex input, float32 otherwise."""
    return np.complex64 if np.iscomplexobj(a) else np.float32


def _work(a: np.ndarray) -> np.ndarray:
    """Upcast to complex128 (complex input) or float64 (real input)."""
    a = np.asarray(a)
    return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64, copy=False)


def _require_shape(a: np.ndarray, ndim: int, name: str, layout: str) -> None:
    if a.ndim != ndim:
        raise ValueError(f"{name} must have layout {layout}, got shape {a.shape}")


def _check_positions(positions: np.ndarray, B: int, C: int, name: str = "positions") -> np.ndarray:
    """Validate ``[B, 1, 2, C]`` positions and return flat float64 offsets ``[B*C, 2]`` (x, y)."""
    p = np.asarray(positions)
    if p.shape != (B, 1, 2, C):
        raise ValueError(f"{name} must have shape [B, 1, 2, C] = {[B, 1, 2, C]}, got {list(p.shape)}")
    return positions_to_flat(p.astype(np.float64))


def _pad_hw(a: np.ndarray, P: int, axes: tuple[int, int]) -> np.ndarray:
    """Zero-pad two axes from size n to P: ``(P - n) // 2`` before, the remainder after."""
    widths = [(0, 0)] * a.ndim
    for ax in axes:
        n = a.shape[ax]
        if P < n:
            raise ValueError(f"cannot pad an axis of size {n} to the smaller size P={P}")
        before = (P - n) // 2
        widths[ax] = (before, P - n - before)
    return np.pad(a, widths)


def _crop_hw(a: np.ndarray, n: int, axes: tuple[int, int]) -> np.ndarray:
    """Central crop of two axes to size n: start at ``(size - n) // 2``."""
    index: list[slice] = [slice(None)] * a.ndim
    for ax in axes:
        size = a.shape[ax]
        if not 0 < n <= size:
            raise ValueError(f"cannot centre-crop an axis of size {size} to n={n}")
        start = (size - n) // 2
        index[ax] = slice(start, start + n)
    return a[tuple(index)]


def _translate64(
    images: np.ndarray,
    offsets: np.ndarray,
    out_hw: tuple[int, int] | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Core of :func:`translate` in double precision.

    Output pixel ``(r, c)`` of image ``k`` (``r < out_h``, ``c < out_w``) samples input
    ``k`` at ``y = r + origin_y - s*ty_k``, ``x = c + origin_x - s*tx_k`` with
    ``s = TRANSLATE_CONTENT_SIGN``.  ``origin`` lets callers fuse a pad or a crop.
    """
    K, H, W = images.shape
    oh, ow = (H, W) if out_hw is None else out_hw
    off = np.asarray(offsets, dtype=np.float64)
    oy = origin[0] - TRANSLATE_CONTENT_SIGN * off[:, Y_INDEX]
    ox = origin[1] - TRANSLATE_CONTENT_SIGN * off[:, X_INDEX]
    return sample_shifted(images, oy, ox, oh, ow)


# =========================================================================== normalisation
def normalize_x_full(diffraction: np.ndarray, bad_pixels: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Normalise diffraction amplitudes to the network input ``X_full``.

    Formula (float64 internally; upstream ``normalize_data``)::

        norm = sqrt((N/2)**2 / mean_{b, c}(sum_{h, w good} d[b, h, w, c]**2))
        X_full = float32(norm * d)

    so that ``mean_{b,c} sum_{h,w good} X_full**2 == conventions.x_full_target_energy(N)
    == (N/2)**2``.  The sum runs over the good pixels of one pattern (all pixels when
    ``bad_pixels`` is None: bad pixels are not signal), the mean over samples *and*
    channels.  Values at bad pixels are scaled like the rest (they stay in the input).

    Parameters
    ----------
    diffraction:
        Amplitudes (not intensities), real ``[B, N, N, C]`` (channel layout).
    bad_pixels:
        optional bool ``[N, N]`` detector mask, True = not measured.

    Returns
    -------
    ``(X_full, norm)``: float32 ``[B, N, N, C]`` and the Python float ``norm``.

    Raises ``DataContractError`` for a non-4-D or non-square array or for zero or
    non-finite total energy.
    """
    d = np.asarray(diffraction)
    if d.ndim != 4 or d.shape[1] != d.shape[2]:
        raise DataContractError(
            f"expected diffraction amplitudes with layout [B, N, N, C], got shape {d.shape}",
            field="diffraction",
            fix="pass the grouped diffraction stack in channel layout [B, N, N, C]",
        )
    if np.iscomplexobj(d):
        raise DataContractError(
            "expected real diffraction amplitudes, got a complex array",
            field="diffraction",
            fix="pass |F| (amplitude), not the complex far field",
        )
    N = d.shape[1]
    d64 = d.astype(np.float64)
    w = good_pixel_weights(bad_pixels, N)[None, :, :, None]
    energy = float(np.mean(np.sum(w * d64**2, axis=(1, 2))))
    if not (math.isfinite(energy) and energy > 0):
        raise DataContractError(
            f"mean pattern energy is {energy!r}; it must be finite and > 0 to normalise",
            field="diffraction",
            fix="remove NaN/inf values and all-zero data",
        )
    norm = math.sqrt(x_full_target_energy(N) / energy)
    return (norm * d64).astype(np.float32), norm


# =========================================================================== sampling
def translate(images: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Bilinear translation with per-corner zero fill; content moves by ``+offset``.

    Formula (``s = conventions.TRANSLATE_CONTENT_SIGN = +1``; float64 internally)::

        out_k(r, c) = bilinear sample of in_k at (y = r - s*ty_k, x = c - s*tx_k)

    with ``y0 = floor(y)``, ``wy = y - y0`` (likewise x) and
    ``out = (1-wy)(1-wx) I[y0,x0] + (1-wy) wx I[y0,x0+1] + wy (1-wx) I[y0+1,x0] + wy wx I[y0+1,x0+1]``,
    where each of the four corner samples is 0 when its row is outside ``[0, H-1]`` or
    its column outside ``[0, W-1]``.  Positive ``tx`` moves content to larger column
    index, positive ``ty`` to larger row index (upstream ``translate_xla``).

    Parameters
    ----------
    images:
        flat stack ``[K, H, W]``, real or complex (real and imaginary parts are
        interpolated identically).
    offsets:
        ``[K, 2]`` float, ``(tx, ty)`` = ``(x, y)`` in pixels, one row per image.

    Returns
    -------
    ``[K, H, W]``: complex64 for complex input, float32 for real input.
    """
    imgs = np.asarray(images)
    _require_shape(imgs, 3, "images", "[K, H, W]")
    off = np.asarray(offsets)
    if off.shape != (imgs.shape[0], 2):
        raise ValueError(f"offsets must have shape [K, 2] = {[imgs.shape[0], 2]}, got {list(off.shape)}")
    return _translate64(imgs, off).astype(_out_dtype(imgs))


def object_patches(obj: np.ndarray, xy: np.ndarray, N: int) -> np.ndarray:
    """Extract ``N x N`` patches of a full object centred on scan positions (ground-truth ``Y``).

    Formula (float64 internally)::

        patch_k(r, c) = bilinear sample of obj at (y = y_k + r - N//2, x = x_k + c - N//2)

    with the per-corner zero-fill rule of :func:`translate` (zero outside the object).
    The patch centre ``(N//2, N//2)`` sits on the scan position: a delta at object pixel
    ``(row y0, col x0)`` appears at patch pixel ``(N//2 + y0 - y_k, N//2 + x0 - x_k)``.
    Positions are the *true* scan positions (no reflection through the group centroid).
    Equals upstream ``get_image_patches`` at gridsize 1 (pad by N//2, translate by
    ``-xy``, keep ``[:N, :N]``).

    Parameters
    ----------
    obj:
        complex (or real) ``[H, W]`` object; row = y, column = x.
    xy:
        float ``[K, 2]`` scan positions ``(x, y)`` in object pixels.
    N:
        patch size in pixels.

    Returns
    -------
    complex64 ``[K, N, N]``.
    """
    o = np.asarray(obj)
    _require_shape(o, 2, "obj", "[H, W]")
    pos = np.asarray(xy, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"xy must have shape [K, 2] (x, y), got {list(pos.shape)}")
    if int(N) != N or N < 1:
        raise ValueError(f"N={N!r} is invalid: expected a positive integer patch size in pixels")
    N = int(N)
    return sample_shifted(o, pos[:, Y_INDEX] - N // 2, pos[:, X_INDEX] - N // 2, N, N).astype(np.complex64)


# =========================================================================== diffraction
def _diffract64(psi: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
    F = np.fft.fft2(_work(psi).astype(np.complex128), axes=axes)
    n_pix = psi.shape[axes[0]] * psi.shape[axes[1]]
    intensity = (F.real**2 + F.imag**2) / n_pix
    return np.sqrt(np.fft.fftshift(intensity, axes=axes))


def diffract(psi: np.ndarray) -> np.ndarray:
    """Far-field diffraction amplitude over the last two axes.

    Formula (complex128 internally; ``conventions.FFT_IFFTSHIFT_BEFORE`` is False,
    ``FFT_FFTSHIFT_AFTER`` is True)::

        A = sqrt(fftshift(|fft2(psi)|**2) / (H * W))        (H = W = N)

    ``fft2`` is the unnormalised forward DFT over the last two axes and ``fftshift``
    acts on those axes only.  The zero frequency lands at pixel ``(N//2, N//2)`` and
    Parseval holds: ``sum A**2 == sum |psi|**2`` per image.

    Parameters
    ----------
    psi:
        exit wave ``[..., N, N]``, complex (real accepted).

    Returns
    -------
    float32 amplitude ``[..., N, N]``.
    """
    p = np.asarray(psi)
    if p.ndim < 2:
        raise ValueError(f"psi must have at least 2 dimensions [..., N, N], got shape {p.shape}")
    return _diffract64(p, (-2, -1)).astype(np.float32)


def diffract_channels(psi: np.ndarray) -> np.ndarray:
    """:func:`diffract` for channel layout: complex ``[B, N, N, C]`` -> float32 ``[B, N, N, C]``.

    The 2-D FFT runs over axes 1 and 2 (each channel is an independent pattern).
    """
    p = np.asarray(psi)
    _require_shape(p, 4, "psi", "[B, N, N, C]")
    return _diffract64(p, (1, 2)).astype(np.float32)


# =========================================================================== pad / crop / masks
def pad_to(images: np.ndarray, P: int) -> np.ndarray:
    """Zero-pad the last two axes from ``N`` to ``P``: ``(P - N) // 2`` before, the rest after.

    ``images``: ``[K, N, N]`` (any leading axes allowed).  Returns ``[K, P, P]``,
    complex64 for complex input, float32 otherwise.  Inverse: ``center_crop(., N)``.
    """
    a = np.asarray(images)
    if a.ndim < 2:
        raise ValueError(f"images must have at least 2 dimensions [..., N, N], got shape {a.shape}")
    return _pad_hw(a, int(P), (-2, -1)).astype(_out_dtype(a))


def center_crop(images: np.ndarray, n: int) -> np.ndarray:
    """Central ``n x n`` crop of the last two axes: rows/cols ``(H - n)//2 .. (H - n)//2 + n - 1``.

    ``images``: ``[..., H, W]``.  Returns ``[..., n, n]``, complex64 for complex input,
    float32 otherwise.
    """
    a = np.asarray(images)
    if a.ndim < 2:
        raise ValueError(f"images must have at least 2 dimensions [..., H, W], got shape {a.shape}")
    return _crop_hw(a, int(n), (-2, -1)).astype(_out_dtype(a))


def _check_mask_n(N: int) -> int:
    if int(N) != N or N < 4 or N % 4:
        raise ValueError(f"N={N!r} is invalid: the centre/border masks need a positive multiple of 4")
    return int(N)


def center_mask(N: int) -> np.ndarray:
    """Ones in the central ``N/2 x N/2`` block (rows and cols ``N/4 .. 3N/4 - 1``), zeros elsewhere.

    Upstream ``mk_centermask(kind='center')``.  ``N`` must be a multiple of 4.
    Returns float32 ``[N, N]``.
    """
    N = _check_mask_n(N)
    m = np.zeros((N, N), dtype=np.float32)
    m[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = 1.0
    return m


def border_mask(N: int) -> np.ndarray:
    """``1 - center_mask(N)``: ones outside the central ``N/2 x N/2`` block. float32 ``[N, N]``."""
    return (1.0 - center_mask(N)).astype(np.float32)


# =========================================================================== object assembly
def reassemble_patches(patches: np.ndarray, positions: np.ndarray, P: int) -> np.ndarray:
    """Reassemble the ``C`` patches of each group onto a ``P x P`` canvas (``object.big=True``).

    Formula, per sample ``b`` (complex128 internally; real and imaginary parts share the
    real denominator, which is what upstream's separate Re/Im division amounts to)::

        d_c  = REASSEMBLY_SHIFT_SIGN * positions[b, 0, :, c]          # = pos_c - centroid
        num  = sum_c translate(pad_to(patches[b, :, :, c], P), d_c)
        den  = sum_c translate(pad_to(center_mask(N), P), d_c) + REASSEMBLY_NORM_EPS
        canvas[b, :, :, 0] = num / den

    Each sample is reassembled independently (never mixes the samples of a batch, for any
    ``B * C``); offsets are used as given (no batch-mean centring).  Content outside the
    union of the translated central ``N/2`` windows is divided by
    ``REASSEMBLY_NORM_EPS`` (amplified ~1000x): that is the defined model.

    Parameters
    ----------
    patches:
        complex ``[B, N, N, C]`` (N a multiple of 4).
    positions:
        float ``[B, 1, 2, C]`` relative offsets ``coords_relative`` ((x, y) on axis 2).
    P:
        canvas size in pixels, ``P >= N`` (normally ``conventions.padded_size``).

    Returns
    -------
    complex64 ``[B, P, P, 1]``.
    """
    x = np.asarray(patches)
    _require_shape(x, 4, "patches", "[B, N, N, C]")
    B, N, N2, C = x.shape
    if N != N2:
        raise ValueError(f"patches must be square [B, N, N, C], got shape {x.shape}")
    P = int(P)
    if P < N:
        raise ValueError(f"P={P} must be >= N={N}")
    shifts = REASSEMBLY_SHIFT_SIGN * _check_positions(positions, B, C)
    before = (P - N) // 2
    origin = (-float(before), -float(before))  # fuse the zero pad: padded(i) = patch(i - before)
    flat = channels_to_flat(_work(x).astype(np.complex128))
    num = _translate64(flat, shifts, (P, P), origin).reshape(B, C, P, P).sum(axis=1)
    mask = np.broadcast_to(center_mask(N).astype(np.float64), (B * C, N, N))
    den = _translate64(mask, shifts, (P, P), origin).reshape(B, C, P, P).sum(axis=1)
    return (num / (den + REASSEMBLY_NORM_EPS))[..., None].astype(np.complex64)


def pad_object(patch: np.ndarray, P: int) -> np.ndarray:
    """``object.big=False`` assembly: zero-pad ``[B, N, N, 1]`` to ``[B, P, P, 1]`` (no translation).

    Padding ``(P - N) // 2`` before, the rest after (as :func:`pad_to`).  Returns
    complex64 for complex input, float32 otherwise.
    """
    a = np.asarray(patch)
    _require_shape(a, 4, "patch", "[B, N, N, 1]")
    if a.shape[3] != 1:
        raise ValueError(f"pad_object expects one channel [B, N, N, 1], got shape {a.shape}")
    return _pad_hw(a, int(P), (1, 2)).astype(_out_dtype(a))


def trim(canvas: np.ndarray, N: int) -> np.ndarray:
    """Central ``N x N`` crop of a canvas ``[B, P, P, 1]`` -> ``[B, N, N, 1]`` (the ``trimmed_obj``).

    Rows/cols ``(P - N)//2 .. (P - N)//2 + N - 1``: the object centred on the group
    centroid.  Returns complex64 for complex input, float32 otherwise.
    """
    a = np.asarray(canvas)
    _require_shape(a, 4, "canvas", "[B, P, P, 1]")
    return _crop_hw(a, int(N), (1, 2)).astype(_out_dtype(a))


def extract_patches(canvas: np.ndarray, positions: np.ndarray, N: int) -> np.ndarray:
    """Extract the ``C`` patches of each group from its canvas (inverse of reassembly).

    Formula, per sample ``b`` and channel ``c`` (float64 internally)::

        d_c = EXTRACTION_SHIFT_SIGN * positions[b, 0, :, c]           # = centroid - pos_c
        out[b, :, :, c] = center_crop(translate(canvas[b, :, :, 0], d_c), N)

    i.e. out pixel ``(r, c)`` samples the canvas at
    ``(y = r + (P-N)//2 - d_y, x = c + (P-N)//2 - d_x)``: the canvas point at
    ``pos_c - centroid`` from the canvas centre is brought to the patch centre.  The
    translate zero fill applies at the canvas bounds ``[0, P-1]``.

    Parameters
    ----------
    canvas:
        ``[B, P, P, 1]`` complex (or real).
    positions:
        float ``[B, 1, 2, C]`` relative offsets ``coords_relative``.
    N:
        patch size, ``N <= P``.

    Returns
    -------
    ``[B, N, N, C]`` (channel layout; upstream returns the same values flat), complex64
    for complex input, float32 otherwise.
    """
    a = np.asarray(canvas)
    _require_shape(a, 4, "canvas", "[B, P, P, 1]")
    B, P, P2, one = a.shape
    if P != P2 or one != 1:
        raise ValueError(f"canvas must have shape [B, P, P, 1], got {a.shape}")
    N = int(N)
    if not 0 < N <= P:
        raise ValueError(f"N={N} must satisfy 0 < N <= P={P}")
    pos = np.asarray(positions)
    _require_shape(pos, 4, "positions", "[B, 1, 2, C]")
    C = pos.shape[3]
    shifts = EXTRACTION_SHIFT_SIGN * _check_positions(positions, B, C)
    start = float((P - N) // 2)
    src = np.repeat(_work(a[..., 0]), C, axis=0)  # row b*C + c holds canvas b
    flat = _translate64(src, shifts, (N, N), (start, start))
    return flat_to_channels(flat, C).astype(_out_dtype(a))


# =========================================================================== illumination
def gaussian_kernel3(sigma: float) -> np.ndarray:
    """1-D 3-tap Gaussian ``softmax(-[1, 0, 1] / (2 sigma**2))`` (float64 ``[3]``); ``sigma > 0``."""
    s2 = float(sigma) ** 2
    logits = -np.array([1.0, 0.0, 1.0]) / (2.0 * s2)
    k = np.exp(logits - logits.max())
    return k / k.sum()


def _smooth64(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable 3x3 Gaussian over axes 1, 2 of ``[B, N, N, C]`` with numpy 'reflect' padding."""
    k = gaussian_kernel3(sigma)
    p = np.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0)), mode="reflect")
    x = k[0] * p[:, :-2] + k[1] * p[:, 1:-1] + k[2] * p[:, 2:]
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)), mode="reflect")
    return k[0] * p[:, :, :-2] + k[1] * p[:, :, 1:-1] + k[2] * p[:, :, 2:]


def check_sigma(sigma: float) -> float:
    """``gaussian_smoothing_sigma`` as a float, or ConfigError unless finite and >= 0 (all backends use this)."""
    s = float(sigma)
    if not (math.isfinite(s) and s >= 0):
        raise ConfigError("gaussian_smoothing_sigma", sigma, "a finite number >= 0")
    return s


def gaussian_smooth3x3(images: np.ndarray, sigma: float) -> np.ndarray:
    """3x3 Gaussian smoothing of each ``N x N`` image (upstream TFA-style ``gaussian_filter2d``).

    Formula (float64 internally)::

        k = softmax(-[1, 0, 1] / (2 sigma**2))            # 1-D taps at offsets -1, 0, +1
        out = k (x) k applied separably over axes 1 (rows) and 2 (cols)

    Borders use REFLECT padding (numpy ``mode='reflect'``: ``[a b c ...] -> b | a b c``,
    the edge pixel not repeated).  Complex input: real and imaginary parts are smoothed
    identically (the kernel is real).  ``sigma == 0`` is the identity; ``sigma < 0``
    raises ``ConfigError``.

    ``images``: ``[B, N, N, C]`` (N >= 2).  Returns the same shape, complex64 for complex
    input, float32 otherwise.
    """
    a = np.asarray(images)
    _require_shape(a, 4, "images", "[B, N, N, C]")
    if min(a.shape[1], a.shape[2]) < 2:
        raise ValueError(f"images must be [B, N, N, C] with N >= 2 (3x3 reflect padding), got shape {a.shape}")
    s = check_sigma(sigma)
    if s == 0:
        return a.astype(_out_dtype(a))
    return _smooth64(_work(a), s).astype(_out_dtype(a))


def illuminate(
    patches: np.ndarray,
    probe: np.ndarray,
    *,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
) -> np.ndarray:
    """Probe illumination (upstream ``ProbeIllumination``): the exit wave ``psi``.

    Formula (complex128 internally), in this order::

        psi = probe[None, :, :, None] * patches
        if gaussian_smoothing_sigma != 0: psi = gaussian_smooth3x3(psi, sigma)
        if probe_mask:                    psi = psi * probe_disk_mask(N)

    Parameters
    ----------
    patches:
        complex ``[B, N, N, C]`` object patches.
    probe:
        complex ``[N, N]`` (normalised, see :func:`normalize_probe`), shared by every
        sample and channel.

    Returns
    -------
    complex64 ``[B, N, N, C]``.
    """
    x = np.asarray(patches)
    _require_shape(x, 4, "patches", "[B, N, N, C]")
    pr = np.asarray(probe)
    if pr.shape != x.shape[1:3]:
        raise ValueError(f"probe must have shape [N, N] = {list(x.shape[1:3])}, got {list(pr.shape)}")
    s = check_sigma(gaussian_smoothing_sigma)
    psi = pr.astype(np.complex128)[None, :, :, None] * x.astype(np.complex128)
    if s != 0:
        psi = _smooth64(psi, s)
    if probe_mask:
        psi = psi * probe_disk_mask(x.shape[1]).astype(np.float64)[None, :, :, None]
    return psi.astype(np.complex64)


def combine_complex(amp: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """``amp * exp(i * phase)`` (= ``amp cos(phase) + i amp sin(phase)``), complex64, float64 internally.

    ``amp`` and ``phase`` are real arrays of broadcastable shapes (phase in radians).
    """
    a = np.asarray(amp, dtype=np.float64)
    p = np.asarray(phase, dtype=np.float64)
    return (a * np.exp(1j * p)).astype(np.complex64)


# =========================================================================== losses
def good_pixel_weights(bad_pixels: np.ndarray | None, N: int) -> np.ndarray:
    """``1 - bad_pixels`` as float64 ``[N, N]`` (all ones when ``bad_pixels`` is None).

    THE masking rule of the diffraction losses (both backends implement it; ``specs/physics.md``):
    a detector pixel marked bad contributes nothing, and a loss that is a mean over
    ``[B, N, N, C]`` elements becomes the mean over the elements on good pixels,
    ``sum(w * term) / (B * C * sum(w))`` (:func:`masked_mean`).  With no mask it is the plain mean.
    """
    if bad_pixels is None:
        return np.ones((N, N), np.float64)
    m = np.asarray(bad_pixels)
    if m.shape != (N, N):
        raise ValueError(f"bad_pixels has shape {m.shape}, expected [{N}, {N}]")
    return 1.0 - m.astype(np.float64)


def masked_mean(terms: np.ndarray, bad_pixels: np.ndarray | None = None) -> float:
    """Mean of per-element loss terms ``[B, N, N, C]`` over the good detector pixels (float64).

    ``sum(w * terms) / (B * C * sum(w))`` with ``w = good_pixel_weights(bad_pixels, N)``
    broadcast as ``[1, N, N, 1]``; equals ``np.mean(terms)`` when ``bad_pixels`` is None.
    """
    t = np.asarray(terms, dtype=np.float64)
    _require_shape(t, 4, "terms", "[B, N, N, C]")
    w = good_pixel_weights(bad_pixels, t.shape[1])
    return float(np.sum(t * w[None, :, :, None]) / (t.shape[0] * t.shape[3] * w.sum()))


def poisson_nll(
    y_true_intensity: np.ndarray, y_pred_intensity: np.ndarray, bad_pixels: np.ndarray | None = None
) -> float:
    """Poisson negative log-likelihood without the ``log(y!)`` constant, averaged over all elements.

    Formula (float64)::

        L = mean(y_pred - y_true * log(y_pred))

    (= ``tf.nn.log_poisson_loss(y_true, log y_pred, compute_full_loss=False)`` reduced by
    the mean over every element, as upstream's ``negloglik``.)  No epsilon: ``y_pred``
    must be > 0 everywhere (``ValueError`` otherwise; upstream would return inf/NaN).
    For fixed ``y_true >= 0`` each term is minimised at ``y_pred == y_true``.  With a
    ``bad_pixels`` mask (``[N, N]``, inputs ``[B, N, N, C]``) the mean runs over the good
    pixels only (:func:`masked_mean`).

    Returns a Python float.
    """
    yt = np.asarray(y_true_intensity, dtype=np.float64)
    yp = np.asarray(y_pred_intensity, dtype=np.float64)
    if yt.shape != yp.shape:
        raise ValueError(f"shape mismatch: y_true {yt.shape} vs y_pred {yp.shape}")
    if not np.all(yp > 0):
        raise ValueError("y_pred_intensity must be > 0 everywhere (log of a non-positive rate)")
    terms = yp - yt * np.log(yp)
    return float(np.mean(terms)) if bad_pixels is None else masked_mean(terms, bad_pixels)


def mean_absolute_error(a: np.ndarray, b: np.ndarray, bad_pixels: np.ndarray | None = None) -> float:
    """``mean(|a - b|)`` over all elements (float64; modulus for complex input). Python float.

    With a ``bad_pixels`` mask (``[N, N]``, inputs ``[B, N, N, C]``) the mean runs over the good
    pixels only (:func:`masked_mean`).
    """
    x = np.asarray(a)
    y = np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {x.shape} vs {y.shape}")
    terms = np.abs(_work(x) - _work(y))
    return float(np.mean(terms)) if bad_pixels is None else masked_mean(terms, bad_pixels)


# =========================================================================== forward model
def forward_physics(
    obj_patches: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray,
    log_scale: float,
    *,
    N: int,
    gridsize: int,
    object_big: bool,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
    P: int | None = None,
) -> dict[str, np.ndarray]:
    """The physics half of PtychoPINN: decoder object patches -> predicted diffraction.

    Pipeline (each stage is the public op of this module, so intermediates are rounded
    to complex64/float32 between stages)::

        padded_object  = reassemble_patches(obj_patches, positions, P)   if object_big
                         pad_object(obj_patches, P)                       otherwise
        trimmed_object = trim(padded_object, N)
        object_patches = extract_patches(padded_object, positions, N)
        illuminated    = illuminate(object_patches, probe, probe_mask, sigma)
        amplitude      = diffract_channels(illuminated)
        pred_amplitude = float32(exp(log_scale) * amplitude)
        pred_intensity = float32(pred_amplitude ** 2)

    Parameters
    ----------
    obj_patches:
        complex ``[B, N, N, Co]``; ``Co = C = gridsize**2`` if ``object_big`` else 1.
    positions:
        float ``[B, 1, 2, C]`` relative offsets ``coords_relative``.
    probe:
        complex ``[N, N]``, already normalised.
    log_scale:
        natural log of the intensity scale ``s``.
    P:
        canvas size; default ``conventions.padded_size(N, gridsize)``.

    Returns
    -------
    dict with 'padded_object' complex64 ``[B, P, P, 1]``, 'trimmed_object' complex64
    ``[B, N, N, 1]``, 'object_patches' complex64 ``[B, N, N, C]``, 'illuminated'
    complex64 ``[B, N, N, C]``, 'amplitude' float32 ``[B, N, N, C]`` (unscaled),
    'pred_amplitude' float32 ``[B, N, N, C]``, 'pred_intensity' float32 ``[B, N, N, C]``.
    """
    x = np.asarray(obj_patches)
    _require_shape(x, 4, "obj_patches", "[B, N, N, Co]")
    C = channels(gridsize)
    if x.shape[1] != N or x.shape[2] != N:
        raise ValueError(f"obj_patches must be [B, {N}, {N}, Co], got shape {x.shape}")
    Co = C if object_big else 1
    if x.shape[3] != Co:
        raise ValueError(
            f"obj_patches has {x.shape[3]} channels; expected Co = {Co} "
            f"(object_big={object_big}, gridsize={gridsize})"
        )
    _check_positions(positions, x.shape[0], C)  # also when object_big=False leaves them to extraction
    P = padded_size(N, gridsize) if P is None else int(P)
    x = x.astype(np.complex64)
    padded = reassemble_patches(x, positions, P) if object_big else pad_object(x, P)
    trimmed = trim(padded, N)
    patches = extract_patches(padded, positions, N)
    psi = illuminate(patches, probe, probe_mask=probe_mask, gaussian_smoothing_sigma=gaussian_smoothing_sigma)
    amplitude = diffract_channels(psi)
    pred_amplitude = (math.exp(float(log_scale)) * amplitude.astype(np.float64)).astype(np.float32)
    pred_intensity = (pred_amplitude.astype(np.float64) ** 2).astype(np.float32)
    return {
        "padded_object": padded,
        "trimmed_object": trimmed,
        "object_patches": patches,
        "illuminated": psi,
        "amplitude": amplitude,
        "pred_amplitude": pred_amplitude,
        "pred_intensity": pred_intensity,
    }


# =========================================================================== stitching
#: Patches per chunk in :func:`reassemble_position` (bounds memory; does not change results).
_STITCH_CHUNK = 1024


def reassemble_position(obj: np.ndarray, global_offsets: np.ndarray, M: int = 20) -> np.ndarray:
    """Stitch per-group objects into one image at their global positions (upstream ``reassemble_position``).

    Formula (float64 / complex128 internally)::

        crop_k  = obj[k, N//2 - M//2 : N//2 + M//2, same, 0]             # central M x M
        d_k     = global_offsets[k] - mean_k(global_offsets)             # (x, y)
        pad     = ceil(max_k,axis |d_k|);  pad += pad % 2                # even
        S       = M + 2 * pad
        num     = sum_k translate(zero_pad(crop_k, pad), d_k)            # S x S
        den     = sum_k translate(zero_pad(ones(M, M), pad), d_k)
        out     = num / (den + STITCH_NORM_EPS)

    ``translate`` is :func:`translate` (content moves by ``+d``).  Canvas pixel ``(i, j)``
    shows the object at ``(y = mean_y + i - (M/2 + pad), x = mean_x + j - (M/2 + pad))``
    when patch pixel ``(N/2, N/2)`` is the object at that patch's global offset.
    Overlaps are averaged (bilinear weights included); pixels no patch covers are 0.
    Implemented as a vectorised scatter-add of the four bilinear taps of every crop pixel
    (equivalent to the formula above; chunked over patches for memory).

    Parameters
    ----------
    obj:
        complex ``[n, N, N, 1]`` per-group objects (``trimmed_object``), centred on their
        group centroid.
    global_offsets:
        float64 ``[n, 1, 2, 1]`` group centroids (``coords_offsets``), (x, y).
    M:
        even crop size in pixels, ``2 <= M <= N``.

    Returns
    -------
    complex64 ``[S, S, 1]``.
    """
    o = np.asarray(obj)
    _require_shape(o, 4, "obj", "[n, N, N, 1]")
    n, N, N2, one = o.shape
    if N != N2 or one != 1 or n < 1:
        raise ValueError(f"obj must have shape [n, N, N, 1] with n >= 1, got {o.shape}")
    g = np.asarray(global_offsets, dtype=np.float64)
    if g.ndim not in (2, 4) or g.shape[0] != n or g.size != 2 * n:  # the (x, y) pair of each of the n groups
        raise ValueError(f"global_offsets must have shape [n, 1, 2, 1] or [n, 2] with n={n}, got {g.shape}")
    if int(M) != M or M < 2 or M % 2 or M > N:
        raise ConfigError("M", M, f"an even integer with 2 <= M <= N={N}")
    M = int(M)
    g = g.reshape(n, 2)
    crop = _work(o[:, N // 2 - M // 2 : N // 2 + M // 2, N // 2 - M // 2 : N // 2 + M // 2, 0])
    d = g - g.mean(axis=0)
    pad = int(math.ceil(float(np.max(np.abs(d)))))
    pad += pad % 2
    S = M + 2 * pad
    # translate(zero_pad(crop, pad), d)(r) = (1-f) crop[r + q - pad] + f crop[r + q + 1 - pad],
    # q = floor(-s*d), f = -s*d - q: crop pixel u lands on r = u + pad - q - a with tap a in {0, 1}.
    t = -TRANSLATE_CONTENT_SIGN * d
    q = np.floor(t)
    f = t - q
    u = np.arange(M)
    num_re = np.zeros(S * S)
    num_im = np.zeros(S * S)
    den = np.zeros(S * S)
    for k0 in range(0, n, _STITCH_CHUNK):
        sl = slice(k0, k0 + _STITCH_CHUNK)
        w_y = np.stack([1.0 - f[sl, Y_INDEX], f[sl, Y_INDEX]], axis=1)  # [k, 2]
        w_x = np.stack([1.0 - f[sl, X_INDEX], f[sl, X_INDEX]], axis=1)
        taps = np.arange(2)[None, :, None]
        rows = u[None, None, :] + pad - q[sl, Y_INDEX, None, None].astype(np.int64) - taps  # [k, 2, M]
        cols = u[None, None, :] + pad - q[sl, X_INDEX, None, None].astype(np.int64) - taps
        w_r = np.where((rows >= 0) & (rows < S), w_y[:, :, None], 0.0)
        w_c = np.where((cols >= 0) & (cols < S), w_x[:, :, None], 0.0)
        rows = np.clip(rows, 0, S - 1)
        cols = np.clip(cols, 0, S - 1)
        # [k, a, b, u, v]
        idx = (rows[:, :, None, :, None] * S + cols[:, None, :, None, :]).ravel()
        w = (w_r[:, :, None, :, None] * w_c[:, None, :, None, :]).ravel()
        vals = np.broadcast_to(crop[sl][:, None, None, :, :], (crop[sl].shape[0], 2, 2, M, M)).ravel()
        num_re += np.bincount(idx, weights=w * vals.real, minlength=S * S)
        if np.iscomplexobj(vals):
            num_im += np.bincount(idx, weights=w * vals.imag, minlength=S * S)
        den += np.bincount(idx, weights=w, minlength=S * S)
    out = (num_re + 1j * num_im) / (den + STITCH_NORM_EPS)
    return out.reshape(S, S, 1).astype(np.complex64)


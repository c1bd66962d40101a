"""PyTorch versions of the PtychoPINN physics ops (the NumPy reference is ``ptycho.reference.physics``).

Every op here computes the same quantity as the reference op of the same name; the tests in
``tests/torch/test_helper.py`` compare them at float32 tolerances.  Signs, epsilons, the FFT
convention and the mask geometry are imported from :mod:`ptycho.conventions` (never restated).

Layouts (channels-first, ``ptycho.conventions.TORCH_IMAGE_LAYOUT``)
    images ``[B, C, N, N]``; positions ``[B, C, 1, 2]`` with ``(x, y)`` on the last axis; a group's
    canvas ``[B, 1, P, P]``; the flat stack of the reference ``[K, H, W]`` with ``K = B * C`` in
    batch-major order (row ``b * C + c``) is ``images.reshape(B * C, H, W)``.

Sampling
    Every translation in the model (translate, reassemble, extract) samples image ``k`` at
    ``(y, x) = (oy_k + r, ox_k + c)`` for output pixel ``(r, c)``: a per-image origin plus the pixel
    grid.  Because the origin is constant per image, bilinear interpolation with the reference's
    per-corner zero fill is separable: ``out_k = A_k @ img_k @ B_k^T`` where ``A_k [out_h, H]`` has
    ``1 - wy`` at column ``floor(oy_k) + r`` and ``wy`` at ``floor(oy_k) + r + 1`` of row ``r`` (a
    column index outside ``[0, H-1]`` simply does not exist, which is the zero fill of that
    corner), likewise ``B_k`` for x.  This is exact (the same formula as
    ``ptycho.reference._sampling.sample_shifted``), differentiable in the image, deterministic on
    CPU and CUDA (two batched matmuls), and never mixes the samples of a batch.

Precision
    The physics runs in float32 / complex64 (outside autocast: :func:`physics_autocast_off`).  The
    integer and fractional parts of the shifts are computed in float64 from the offsets.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from ptycho.conventions import (
    EXTRACTION_SHIFT_SIGN,
    REASSEMBLY_NORM_EPS,
    REASSEMBLY_SHIFT_SIGN,
    STITCH_NORM_EPS,
    TRANSLATE_CONTENT_SIGN,
    X_INDEX,
    Y_INDEX,
    padded_size,
    x_full_target_energy,
)
from ptycho.errors import ConfigError
from ptycho.reference.physics import border_mask as np_border_mask
from ptycho.reference.physics import center_mask as np_center_mask
from ptycho.reference.physics import check_sigma, gaussian_kernel3
from ptycho.reference.physics import probe_disk_mask as np_probe_disk_mask

__all__ = [
    "border_mask",
    "center_crop",
    "center_mask",
    "combine_complex",
    "diffract",
    "extract_patches",
    "forward_physics",
    "gaussian_smooth3x3",
    "illuminate",
    "interp_matrix",
    "mean_absolute_error",
    "normalize_x_full",
    "pad_object",
    "pad_to",
    "physics_autocast_off",
    "poisson_nll",
    "probe_disk_mask",
    "reassemble_patches",
    "reassemble_position",
    "sample_shifted",
    "translate",
    "trim",
]

Tensor = torch.Tensor


# =========================================================================== small utilities
def physics_autocast_off(device_type: str) -> AbstractContextManager:
    """A context that disables autocast on ``device_type`` (the physics always runs in float32)."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


_MASK_CACHE: dict[tuple[str, int, str, torch.dtype], Tensor] = {}


def _cached_mask(kind: str, N: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    key = (kind, int(N), str(device), dtype)
    mask = _MASK_CACHE.get(key)
    if mask is None:
        source = {"center": np_center_mask, "border": np_border_mask, "disk": np_probe_disk_mask}[kind](int(N))
        mask = torch.as_tensor(np.asarray(source), dtype=dtype, device=device)
        _MASK_CACHE[key] = mask
    return mask


def center_mask(N: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Ones in the central ``N/2 x N/2`` block (reference ``center_mask``), ``[N, N]``. Do not modify in place."""
    return _cached_mask("center", N, torch.device(device), dtype)


def border_mask(N: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """``1 - center_mask(N)`` (reference ``border_mask``), ``[N, N]``. Do not modify in place."""
    return _cached_mask("border", N, torch.device(device), dtype)


def probe_disk_mask(N: int, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Disk of radius ``N // 4`` (reference ``probe_disk_mask``), ``[N, N]``. Do not modify in place."""
    return _cached_mask("disk", N, torch.device(device), dtype)


def _to_ri(z: Tensor) -> Tensor:
    """Complex ``[..., H, W]`` -> real ``[..., 2, H, W]`` (real, imaginary); real input gets ``[..., 1, H, W]``."""
    if z.is_complex():
        return torch.view_as_real(z).movedim(-1, -3)
    return z.unsqueeze(-3)


def _from_ri(x: Tensor, was_complex: bool) -> Tensor:
    """Inverse of :func:`_to_ri`."""
    if was_complex:
        return torch.complex(x[..., 0, :, :], x[..., 1, :, :])
    return x[..., 0, :, :]


# =========================================================================== sampling
def interp_matrix(origin: Tensor, n_out: int, n_in: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Bilinear interpolation matrices along one axis, with the reference's per-corner zero fill.

    Args:
        origin: float ``[...]`` sampling origins in pixels (any float dtype; floor and fraction are
            taken in float64).
        n_out: output length ``n`` (row ``r`` samples the input at ``origin + r``).
        n_in: input length ``H``.

    Returns:
        ``[..., n_out, n_in]`` of ``dtype``: row ``r`` holds ``1 - w`` at column ``f + r`` and ``w`` at
        ``f + r + 1`` (``f = floor(origin)``, ``w = origin - f``); columns outside ``[0, n_in - 1]``
        are absent, so those corner samples are zero.
    """
    o = origin.detach().to(torch.float64)
    f = torch.floor(o)
    w = (o - f).to(dtype)[..., None, None]
    fi = f.to(torch.int64)[..., None, None]
    rows = torch.arange(n_out, device=origin.device, dtype=torch.int64)[:, None]
    cols = torch.arange(n_in, device=origin.device, dtype=torch.int64)[None, :]
    delta = cols - rows - fi  # [..., n_out, n_in]: j - r - f
    return torch.where(delta == 0, 1.0 - w, torch.zeros((), dtype=dtype, device=origin.device)) + torch.where(
        delta == 1, w, torch.zeros((), dtype=dtype, device=origin.device)
    )


def _apply_separable(ay: Tensor, x: Tensor, ax: Tensor) -> Tensor:
    """``ay @ x @ ax^T`` with broadcasting of the leading axes (real tensors)."""
    return torch.matmul(torch.matmul(ay, x), ax.transpose(-1, -2))


def sample_shifted(images: Tensor, oy: Tensor, ox: Tensor, out_h: int, out_w: int) -> Tensor:
    """Bilinearly sample image ``k`` at ``(oy[k] + r, ox[k] + c)`` with per-corner zero fill.

    The torch counterpart of ``ptycho.reference._sampling.sample_shifted``.

    Args:
        images: ``[K, H, W]`` real or complex.
        oy, ox: ``[K]`` row and column origins in pixels.
        out_h, out_w: output size.

    Returns:
        ``[K, out_h, out_w]`` with the dtype of ``images`` (float32 / complex64 for those inputs).
    """
    if images.ndim != 3:
        raise ValueError(f"images must have shape [K, H, W], got {list(images.shape)}")
    K, H, W = images.shape
    if oy.shape != (K,) or ox.shape != (K,):
        raise ValueError(f"{K} images but origins of shapes {list(oy.shape)} / {list(ox.shape)}")
    real_dtype = images.real.dtype if images.is_complex() else images.dtype
    ay = interp_matrix(oy, out_h, H, real_dtype)[:, None]  # [K, 1, out_h, H]
    ax = interp_matrix(ox, out_w, W, real_dtype)[:, None]
    return _from_ri(_apply_separable(ay, _to_ri(images), ax), images.is_complex())


def translate(images: Tensor, offsets: Tensor) -> Tensor:
    """Bilinear translation with per-corner zero fill; content moves by ``TRANSLATE_CONTENT_SIGN * offset``.

    Reference ``translate``: ``out_k(r, c) = in_k(y = r - s*ty_k, x = c - s*tx_k)``.

    Args:
        images: flat stack ``[K, H, W]``, real or complex.
        offsets: ``[K, 2]`` ``(tx, ty)`` in pixels.

    Returns:
        ``[K, H, W]``, same dtype as ``images``.
    """
    if images.ndim != 3:
        raise ValueError(f"images must have shape [K, H, W], got {list(images.shape)}")
    if offsets.shape != (images.shape[0], 2):
        raise ValueError(f"offsets must have shape [K, 2] = {[images.shape[0], 2]}, got {list(offsets.shape)}")
    off = offsets.detach().to(torch.float64)
    oy = -TRANSLATE_CONTENT_SIGN * off[:, Y_INDEX]
    ox = -TRANSLATE_CONTENT_SIGN * off[:, X_INDEX]
    return sample_shifted(images, oy, ox, images.shape[1], images.shape[2])


# =========================================================================== pad / crop
def pad_to(images: Tensor, P: int) -> Tensor:
    """Zero-pad the last two axes from ``N`` to ``P``: ``(P - N) // 2`` before, the rest after."""
    n_h, n_w = images.shape[-2:]
    if P < n_h or P < n_w:
        raise ValueError(f"cannot pad [{n_h}, {n_w}] to the smaller size P={P}")
    bh, bw = (P - n_h) // 2, (P - n_w) // 2
    pad = (bw, P - n_w - bw, bh, P - n_h - bh)
    if images.is_complex():
        return torch.complex(F.pad(images.real, pad), F.pad(images.imag, pad))
    return F.pad(images, pad)


def center_crop(images: Tensor, n: int) -> Tensor:
    """Central ``n x n`` crop of the last two axes (rows/cols ``(H - n)//2 .. (H - n)//2 + n - 1``)."""
    H, W = images.shape[-2:]
    if not (0 < n <= H and n <= W):
        raise ValueError(f"cannot centre-crop [{H}, {W}] to n={n}")
    sh, sw = (H - n) // 2, (W - n) // 2
    return images[..., sh : sh + n, sw : sw + n]


def pad_object(patch: Tensor, P: int) -> Tensor:
    """``object_big=False`` assembly: zero-pad ``[B, 1, N, N]`` to ``[B, 1, P, P]`` (no translation)."""
    if patch.ndim != 4 or patch.shape[1] != 1:
        raise ValueError(f"pad_object expects one channel [B, 1, N, N], got {list(patch.shape)}")
    return pad_to(patch, P)


def trim(canvas: Tensor, N: int) -> Tensor:
    """Central ``N x N`` crop of a canvas ``[B, 1, P, P]`` -> ``[B, 1, N, N]`` (the trimmed object)."""
    if canvas.ndim != 4:
        raise ValueError(f"canvas must have shape [B, 1, P, P], got {list(canvas.shape)}")
    return center_crop(canvas, N)


# =========================================================================== object assembly
def reassemble_patches(patches: Tensor, positions: Tensor, P: int) -> Tensor:
    """Reassemble the ``C`` patches of each group onto a ``P x P`` canvas (``object_big=True``).

    Reference ``reassemble_patches``, per sample ``b`` (never mixes samples, any batch size)::

        d_c    = REASSEMBLY_SHIFT_SIGN * positions[b, c, 0, :]
        num    = sum_c translate(pad_to(patches[b, c], P), d_c)
        den    = sum_c translate(pad_to(center_mask(N), P), d_c) + REASSEMBLY_NORM_EPS
        canvas = num / den

    Args:
        patches: complex ``[B, C, N, N]``.
        positions: float ``[B, C, 1, 2]`` relative offsets ``coords_relative`` (x, y).
        P: canvas size, ``P >= N``.

    Returns:
        complex ``[B, 1, P, P]``.
    """
    if patches.ndim != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must have shape [B, C, N, N], got {list(patches.shape)}")
    B, C, N, _ = patches.shape
    if positions.shape != (B, C, 1, 2):
        raise ValueError(f"positions must have shape [B, C, 1, 2] = {[B, C, 1, 2]}, got {list(positions.shape)}")
    if P < N:
        raise ValueError(f"P={P} must be >= N={N}")
    shifts = REASSEMBLY_SHIFT_SIGN * positions.detach().to(torch.float64)[:, :, 0, :]  # [B, C, 2]
    before = float((P - N) // 2)
    oy = -before - TRANSLATE_CONTENT_SIGN * shifts[..., Y_INDEX]
    ox = -before - TRANSLATE_CONTENT_SIGN * shifts[..., X_INDEX]
    real_dtype = patches.real.dtype if patches.is_complex() else patches.dtype
    ay = interp_matrix(oy, P, N, real_dtype)[:, :, None]  # [B, C, 1, P, N]
    ax = interp_matrix(ox, P, N, real_dtype)[:, :, None]
    mask = center_mask(N, device=patches.device, dtype=real_dtype).expand(B, C, 1, N, N)
    stacked = torch.cat([_to_ri(patches), mask], dim=2)  # [B, C, 2 (or 1) + 1, N, N]
    summed = _apply_separable(ay, stacked, ax).sum(dim=1)  # [B, k, P, P]
    den = summed[:, -1:] + REASSEMBLY_NORM_EPS
    if patches.is_complex():
        return torch.complex(summed[:, 0:1] / den, summed[:, 1:2] / den)
    return summed[:, 0:1] / den


def extract_patches(canvas: Tensor, positions: Tensor, N: int) -> Tensor:
    """Extract the ``C`` patches of each group from its canvas (reference ``extract_patches``).

    ``out[b, c] = center_crop(translate(canvas[b, 0], EXTRACTION_SHIFT_SIGN * positions[b, c, 0]), N)``.

    Args:
        canvas: ``[B, 1, P, P]`` complex (or real).
        positions: float ``[B, C, 1, 2]`` relative offsets (x, y).
        N: patch size, ``N <= P``.

    Returns:
        ``[B, C, N, N]``, same dtype as ``canvas``.
    """
    if canvas.ndim != 4 or canvas.shape[1] != 1 or canvas.shape[2] != canvas.shape[3]:
        raise ValueError(f"canvas must have shape [B, 1, P, P], got {list(canvas.shape)}")
    B, _, P, _ = canvas.shape
    if positions.ndim != 4 or positions.shape[0] != B or positions.shape[2:] != (1, 2):
        raise ValueError(f"positions must have shape [B={B}, C, 1, 2], got {list(positions.shape)}")
    if not 0 < N <= P:
        raise ValueError(f"N={N} must satisfy 0 < N <= P={P}")
    shifts = EXTRACTION_SHIFT_SIGN * positions.detach().to(torch.float64)[:, :, 0, :]  # [B, C, 2]
    start = float((P - N) // 2)
    oy = start - TRANSLATE_CONTENT_SIGN * shifts[..., Y_INDEX]
    ox = start - TRANSLATE_CONTENT_SIGN * shifts[..., X_INDEX]
    real_dtype = canvas.real.dtype if canvas.is_complex() else canvas.dtype
    ay = interp_matrix(oy, N, P, real_dtype)[:, :, None]  # [B, C, 1, N, P]
    ax = interp_matrix(ox, N, P, real_dtype)[:, :, None]
    src = _to_ri(canvas[:, 0])[:, None]  # [B, 1, k, P, P], broadcast over C
    return _from_ri(_apply_separable(ay, src, ax), canvas.is_complex())


# =========================================================================== illumination
def gaussian_smooth3x3(images: Tensor, sigma: float) -> Tensor:
    """3x3 Gaussian smoothing of each ``N x N`` image with REFLECT padding (reference ``gaussian_smooth3x3``).

    1-D taps ``softmax(-[1, 0, 1] / (2 sigma**2))`` applied separably over rows then columns;
    real and imaginary parts identically; ``sigma == 0`` is the identity.

    Args:
        images: ``[B, C, N, N]`` real or complex.
        sigma: ``>= 0``.
    """
    s = check_sigma(sigma)
    if images.ndim != 4 or min(images.shape[2], images.shape[3]) < 2:
        raise ValueError(f"images must have shape [B, C, N, N] with N >= 2 (3x3 reflect padding), got "
                         f"{list(images.shape)}")
    if s == 0:
        return images
    k0, k1, k2 = (float(v) for v in gaussian_kernel3(s))
    was_complex = images.is_complex()
    B, C, H, W = images.shape
    x = _to_ri(images).reshape(B, -1, H, W)
    # REFLECT padding by one pixel built from slices (deterministic backward on every device,
    # unlike ReflectionPad2d's CUDA backward): [a b c ... y z] -> b | a b c ... y z | y
    p = torch.cat([x[:, :, 1:2], x, x[:, :, -2:-1]], dim=2)
    x = k0 * p[:, :, :-2] + k1 * p[:, :, 1:-1] + k2 * p[:, :, 2:]
    p = torch.cat([x[..., 1:2], x, x[..., -2:-1]], dim=3)
    x = k0 * p[..., :-2] + k1 * p[..., 1:-1] + k2 * p[..., 2:]
    return _from_ri(x.reshape(B, C, -1, H, W), was_complex)


def illuminate(patches: Tensor, probe: Tensor, *, probe_mask: bool, gaussian_smoothing_sigma: float) -> Tensor:
    """Exit wave ``psi = probe * patches``, then optional smoothing, then optional disk mask.

    Args:
        patches: complex ``[B, C, N, N]``.
        probe: complex ``[N, N]`` (normalised), shared by every sample and channel.
        probe_mask: multiply by :func:`probe_disk_mask`.
        gaussian_smoothing_sigma: sigma of :func:`gaussian_smooth3x3` (0 = off).

    Returns:
        complex ``[B, C, N, N]``.
    """
    if patches.ndim != 4:
        raise ValueError(f"patches must have shape [B, C, N, N], got {list(patches.shape)}")
    if probe.shape != patches.shape[-2:]:
        raise ValueError(f"probe must have shape [N, N] = {list(patches.shape[-2:])}, got {list(probe.shape)}")
    psi = probe * patches
    psi = gaussian_smooth3x3(psi, gaussian_smoothing_sigma)
    if probe_mask:
        psi = psi * probe_disk_mask(patches.shape[-1], device=patches.device, dtype=psi.real.dtype)
    return psi


def combine_complex(amp: Tensor, phase: Tensor) -> Tensor:
    """``amp * exp(i * phase)`` (complex, from real ``amp`` and ``phase`` in radians)."""
    try:
        torch.broadcast_shapes(amp.shape, phase.shape)
    except RuntimeError as exc:
        raise ValueError(f"amp {list(amp.shape)} and phase {list(phase.shape)} do not broadcast") from exc
    return torch.complex(amp * torch.cos(phase), amp * torch.sin(phase))


# =========================================================================== diffraction and losses
def diffract(psi: Tensor) -> Tensor:
    """Far-field amplitude over the last two axes: ``sqrt(fftshift(|fft2(psi)|**2) / (H * W))``.

    No ``ifftshift`` before the FFT (``conventions.FFT_IFFTSHIFT_BEFORE``), ``fftshift`` after it, so the
    zero frequency lands at pixel ``(N//2, N//2)`` and Parseval holds.  ``psi``: ``[..., N, N]``
    complex.  Returns the real amplitude ``[..., N, N]``.
    """
    if psi.ndim < 2:
        raise ValueError(f"psi must have at least 2 dimensions [..., N, N], got {list(psi.shape)}")
    spectrum = torch.fft.fft2(psi)
    n_pix = psi.shape[-1] * psi.shape[-2]
    intensity = (spectrum.real.square() + spectrum.imag.square()) / n_pix
    return torch.sqrt(torch.fft.fftshift(intensity, dim=(-2, -1)))


def masked_mean(terms: Tensor, bad_pixels: Tensor | None = None) -> Tensor:
    """Mean of loss terms ``[B, C, N, N]`` over the good detector pixels, a 0-d tensor.

    The masking rule of ``ptycho.reference.physics.masked_mean``: ``sum(w * terms) / (B * C * sum(w))``
    with ``w = 1 - bad_pixels`` (bool ``[N, N]``); the plain mean when ``bad_pixels`` is None.
    """
    if bad_pixels is None:
        return torch.mean(terms)
    w = 1.0 - bad_pixels.to(device=terms.device, dtype=terms.dtype)
    return torch.sum(terms * w) / (terms.shape[0] * terms.shape[1] * w.sum())


def poisson_nll(y_true_intensity: Tensor, y_pred_intensity: Tensor, bad_pixels: Tensor | None = None) -> Tensor:
    """``mean(y_pred - y_true * log(y_pred))`` over all elements (no epsilon), a 0-d tensor.

    With ``bad_pixels`` (bool ``[N, N]``) the mean runs over the good pixels only (:func:`masked_mean`).
    """
    if y_true_intensity.shape != y_pred_intensity.shape:
        raise ValueError(
            f"shape mismatch: y_true {list(y_true_intensity.shape)} vs y_pred {list(y_pred_intensity.shape)}"
        )
    return masked_mean(y_pred_intensity - y_true_intensity * torch.log(y_pred_intensity), bad_pixels)


def mean_absolute_error(a: Tensor, b: Tensor, bad_pixels: Tensor | None = None) -> Tensor:
    """``mean(|a - b|)`` over all elements (modulus for complex input), a 0-d tensor.

    With ``bad_pixels`` (bool ``[N, N]``) the mean runs over the good pixels only (:func:`masked_mean`).
    """
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {list(a.shape)} vs {list(b.shape)}")
    return masked_mean(torch.abs(a - b), bad_pixels)


def normalize_x_full(diffraction: Tensor) -> tuple[Tensor, float]:
    """Scale diffraction amplitudes ``[B, C, N, N]`` so the mean per-pattern energy is ``(N/2)**2``.

    ``norm = sqrt((N/2)**2 / mean_{b,c} sum_{h,w} d**2)`` (float64); returns ``(float32(norm * d), norm)``.
    """
    if diffraction.ndim != 4 or diffraction.shape[-1] != diffraction.shape[-2]:
        raise ValueError(f"diffraction must have shape [B, C, N, N], got {list(diffraction.shape)}")
    d64 = diffraction.to(torch.float64)
    energy = float(d64.square().sum(dim=(-2, -1)).mean())
    if not (math.isfinite(energy) and energy > 0):
        raise ValueError(f"mean pattern energy is {energy!r}; it must be finite and > 0 to normalise")
    norm = math.sqrt(x_full_target_energy(diffraction.shape[-1]) / energy)
    return (norm * d64).to(torch.float32), norm


# =========================================================================== forward physics
def forward_physics(
    obj_patches: Tensor,
    positions: Tensor,
    probe: Tensor,
    log_scale: Tensor,
    *,
    N: int,
    gridsize: int,
    object_big: bool,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
    P: int | None = None,
) -> dict[str, Tensor]:
    """The physics half of PtychoPINN in torch layout (reference ``forward_physics``).

    Args:
        obj_patches: complex ``[B, Co, N, N]`` decoder object (``Co = C`` if ``object_big`` else 1).
        positions: float ``[B, C, 1, 2]``.
        probe: complex ``[N, N]`` (normalised).
        log_scale: 0-d float tensor, ``log`` of the intensity scale.
        P: canvas size, default ``conventions.padded_size(N, gridsize)``.

    Returns:
        ``padded_object [B,1,P,P]``, ``trimmed_object [B,1,N,N]``, ``object_patches [B,C,N,N]``,
        ``illuminated [B,C,N,N]`` (complex) and ``amplitude``, ``pred_amplitude``, ``pred_intensity``
        ``[B,C,N,N]`` (real).
    """
    P = padded_size(N, gridsize) if P is None else int(P)
    if object_big:
        padded = reassemble_patches(obj_patches, positions, P)
    else:
        padded = pad_object(obj_patches, P)
    trimmed = trim(padded, N)
    patches = extract_patches(padded, positions, N)
    psi = illuminate(patches, probe, probe_mask=probe_mask, gaussian_smoothing_sigma=gaussian_smoothing_sigma)
    amplitude = diffract(psi)
    pred_amplitude = torch.exp(log_scale) * amplitude
    return {
        "padded_object": padded,
        "trimmed_object": trimmed,
        "object_patches": patches,
        "illuminated": psi,
        "amplitude": amplitude,
        "pred_amplitude": pred_amplitude,
        "pred_intensity": pred_amplitude.square(),
    }


# =========================================================================== stitching
def reassemble_position(obj: Tensor, global_offsets: Tensor, M: int = 20, *, chunk: int = 4096) -> Tensor:
    """Stitch per-group objects at their global positions (reference ``reassemble_position``).

    Formula (float64 accumulation)::

        crop_k = obj[k, 0, N//2 - M//2 : N//2 + M//2, same]           # central M x M
        d_k    = global_offsets[k] - mean_k(global_offsets)            # (x, y)
        pad    = ceil(max |d|), made even;  S = M + 2 * pad
        out    = sum_k translate(zero_pad(crop_k, pad), d_k) / (sum_k translate(zero_pad(ones, pad), d_k)
                 + STITCH_NORM_EPS)

    Each crop is splatted into an ``(M+1) x (M+1)`` window of the canvas (its bilinear taps) with
    ``index_put_(accumulate=True)``, which is deterministic on CPU and CUDA.

    Args:
        obj: complex ``[n, 1, N, N]`` trimmed objects.
        global_offsets: float ``[n, 1, 1, 2]`` (torch layout) or ``[n, 2]`` (x, y), the group centroids
            in object pixels.
        M: even crop size, ``2 <= M <= N``.

    Returns:
        complex64 ``[1, S, S]``.
    """
    if obj.ndim != 4 or obj.shape[1] != 1 or obj.shape[2] != obj.shape[3] or obj.shape[0] < 1:
        raise ValueError(f"obj must have shape [n, 1, N, N] with n >= 1, got {list(obj.shape)}")
    n, _, N, _ = obj.shape
    if global_offsets.numel() != 2 * n or global_offsets.ndim not in (2, 4) or global_offsets.shape[0] != n:
        raise ValueError(f"global_offsets must be [n, 1, 1, 2] or [n, 2] with n={n} (x, y) pairs, got shape "
                         f"{list(global_offsets.shape)}")
    if int(M) != M or M < 2 or M % 2 or M > N:
        raise ConfigError("M", M, f"an even integer with 2 <= M <= N={N}")
    M = int(M)
    device = obj.device
    g = global_offsets.detach().to(torch.float64).reshape(n, 2)
    lo = N // 2 - M // 2
    crop = obj[:, 0, lo : lo + M, lo : lo + M].to(torch.complex128)
    d = g - g.mean(dim=0)
    pad = int(math.ceil(float(d.abs().max()))) if n else 0
    pad += pad % 2
    S = M + 2 * pad
    t = -TRANSLATE_CONTENT_SIGN * d
    q = torch.floor(t)
    f = t - q
    qi = q.to(torch.int64)
    num = torch.zeros(S * S, dtype=torch.complex128, device=device)
    den = torch.zeros(S * S, dtype=torch.float64, device=device)
    # Window row i of patch k is canvas row base_k + i, base_k = pad - q_k - 1; it receives
    # f * crop[i] (i < M) + (1 - f) * crop[i - 1] (i >= 1): a bidiagonal [M + 1, M] matrix.
    i = torch.arange(M + 1, device=device)[:, None]
    u = torch.arange(M, device=device)[None, :]
    for k0 in range(0, n, chunk):
        sl = slice(k0, min(n, k0 + chunk))
        fy = f[sl, Y_INDEX][:, None, None]
        fx = f[sl, X_INDEX][:, None, None]
        wy = torch.where(i == u, fy, 0.0) + torch.where(i == u + 1, 1.0 - fy, 0.0)  # [k, M+1, M]
        wx = torch.where(i == u, fx, 0.0) + torch.where(i == u + 1, 1.0 - fx, 0.0)
        win = torch.complex(wy @ crop[sl].real @ wx.transpose(1, 2), wy @ crop[sl].imag @ wx.transpose(1, 2))
        cov = wy.sum(dim=2)[:, :, None] * wx.sum(dim=2)[:, None, :]  # splat of ones(M, M)
        rows = (pad - qi[sl, Y_INDEX] - 1)[:, None] + torch.arange(M + 1, device=device)[None, :]
        cols = (pad - qi[sl, X_INDEX] - 1)[:, None] + torch.arange(M + 1, device=device)[None, :]
        valid = ((rows >= 0) & (rows < S))[:, :, None] & ((cols >= 0) & (cols < S))[:, None, :]
        idx = rows.clamp(0, S - 1)[:, :, None] * S + cols.clamp(0, S - 1)[:, None, :]
        idx = idx[valid]
        num.index_put_((idx,), win[valid], accumulate=True)
        den.index_put_((idx,), cov[valid], accumulate=True)
    out = num / (den + STITCH_NORM_EPS)
    return out.reshape(1, S, S).to(torch.complex64)

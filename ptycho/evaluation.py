"""Evaluation of reconstructions: SSIM, PSNR, FRC after registration and phase-offset removal.

One implementation for everything that scores a reconstruction: ``ptycho_evaluate``, the
``score.json`` of ``ptycho_train`` / ``ptycho_inference`` and the conformance harness's end-to-end
checks (``conformance.compare``) all call this module.

A ptychographic reconstruction is determined only up to a constant phase factor and,
once stitched, up to a small translation, so comparing it with the ground truth (or
with the other backend's reconstruction) pixel by pixel needs both removed first.
This module provides those steps and the standard quality measures:

- :func:`remove_global_phase`: the least-squares constant phase factor;
- :func:`register_subpixel`: scikit-image's ``phase_cross_correlation`` (the upsampled-DFT
  method of Guizar-Sicairos, Thurman & Fienup, Opt. Lett. 33, 156 (2008)) to 1/100 pixel,
  then a Fourier shift;
- :func:`ssim`: **scikit-image's** ``skimage.metrics.structural_similarity`` (Wang, Bovik, Sheikh &
  Simoncelli, IEEE TIP 13, 600 (2004)) with ``gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False`` (an 11x11 Gaussian window, population statistics, K1 = 0.01,
  K2 = 0.03: the settings of the paper, so numbers compare with published ones) and
  ``data_range`` = the reference's peak-to-peak value over the mask; its SSIM map is averaged
  over the mask minus a 5-pixel border;
- :func:`psnr`: peak signal-to-noise ratio in dB (scikit-image's ``peak_signal_noise_ratio``
  over the masked pixels);
- :func:`frc`: Fourier ring correlation with the 1/2-bit (or 1-bit) threshold of van Heel
  & Schatz, J. Struct. Biol. 151, 250 (2005), and the fixed 1/7 threshold (Rosenthal &
  Henderson, J. Mol. Biol. 333, 721 (2003));
- :func:`score_pair`: all of the above for a complex reconstruction against a reference;
- :func:`score_stitched`: a stitched object against the true object over the scanned region.

Conventions (all functions):

- images are 2-D arrays indexed ``[y, x]`` (row, column); shifts are ``(dy, dx)`` in
  pixels, positive ``dy`` moves content down (to larger row index), positive ``dx`` to
  the right;
- in two-argument metrics the SECOND argument is the reference (ground truth): the
  default ``data_range`` is the reference's peak-to-peak value over the mask;
- spatial frequencies are in cycles per pixel (Nyquist = 0.5); a resolution in pixels
  is ``1 / frequency``;
- phases are in radians;
- ``mask`` is a boolean array of the image's shape selecting the pixels that count
  (for a stitched canvas: the region the scan covered); ``None`` means every pixel.

Stitched canvases: ``reassemble_position(obj, global_offsets, M)`` of size ``S x S`` is centred
on the mean group centroid ``(x̄, ȳ)``: canvas pixel ``(i, j)`` shows object pixel
``(ȳ + i - S/2, x̄ + j - S/2)``.  :func:`ground_truth_canvas` samples the true object on that
same grid and :func:`coverage_mask` marks the pixels some patch covers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np

from ptycho.reference.physics import object_patches, reassemble_position

__all__ = [
    "FRC",
    "FRC_THRESHOLDS",
    "coverage_mask",
    "fourier_shift",
    "frc",
    "frc_threshold",
    "global_phase_offset",
    "ground_truth_canvas",
    "json_ready",
    "pearson",
    "psnr",
    "register_subpixel",
    "remove_global_phase",
    "score_pair",
    "score_stitched",
    "ssim",
]

#: SSIM constants of Wang et al. (2004) (scikit-image's defaults).
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
#: scikit-image truncates the Gaussian at 3.5 sigma: radius 5, an 11 x 11 window as in the paper.
SSIM_TRUNCATE = 3.5
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)

#: FRC thresholds T(n) = (a + b / sqrt(n)) / (c + d / sqrt(n)) for a ring of n pixels
#: (van Heel & Schatz 2005, eqs. 13 and 17); ``'1/7'`` is the fixed threshold 1/7 (a = 1/7, b = d = 0, c = 1).
FRC_THRESHOLDS: dict[str, tuple[float, float, float, float]] = {
    "half-bit": (0.2071, 1.9102, 1.2071, 0.9102),
    "one-bit": (0.5, 2.4142, 1.5, 1.4142),
    "1/7": (1.0 / 7.0, 0.0, 1.0, 0.0),
}
FRCCriterion = Literal["half-bit", "one-bit", "1/7"]

#: Default upsampling of the registration: shifts are resolved to 1/100 pixel.
REGISTRATION_UPSAMPLE = 100


def _image(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D image [y, x], got shape {arr.shape}")
    return arr


def _pair(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    a, b = _image(a, "first image"), _image(b, "second image")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != a.shape:
            raise ValueError(f"mask shape {mask.shape} does not match the image shape {a.shape}")
        if not mask.any():
            raise ValueError("mask selects no pixel")
    return a, b, mask


def _real(a: np.ndarray, name: str) -> np.ndarray:
    if np.iscomplexobj(a):
        raise TypeError(f"{name} is complex; pass the amplitude or the phase")
    return a.astype(np.float64)


def _data_range(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> float:
    """Peak-to-peak of the reference ``b`` over the mask; of both images if that is 0; else 1."""
    sel_a, sel_b = (a, b) if mask is None else (a[mask], b[mask])
    span = float(np.ptp(sel_b))
    if span == 0.0:
        span = float(max(sel_a.max(), sel_b.max()) - min(sel_a.min(), sel_b.min()))
    return span if span > 0.0 else 1.0


# ---------------------------------------------------------------------------------------------
# global phase


def global_phase_offset(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The constant phase ``phi0`` (radians, in (-pi, pi]) minimising ``sum |recon e^{-i phi0} - truth|^2``.

    The least-squares solution is ``phi0 = angle(sum recon * conj(truth))`` over the mask.
    """
    r, t, mask = _pair(recon, truth, mask)
    if mask is not None:
        r, t = r[mask], t[mask]
    return float(np.angle(np.sum(r.astype(np.complex128) * np.conj(t.astype(np.complex128)))))


def remove_global_phase(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``recon * exp(-i phi0)`` with :func:`global_phase_offset`: recon's constant phase aligned to truth's.

    The result is complex with at least complex64 precision (complex128 input stays complex128).
    """
    phi0 = global_phase_offset(recon, truth, mask)
    r = np.asarray(recon)
    return (r * np.exp(-1j * phi0)).astype(np.result_type(r.dtype, np.complex64))


# ---------------------------------------------------------------------------------------------
# registration


def fourier_shift(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """``image`` translated by ``shift = (dy, dx)`` pixels: ``out[y, x] = image[y - dy, x - dx]``.

    The translation is a linear phase ramp in Fourier space, so it is exact for
    band-limited content and periodic: what leaves one edge re-enters at the other.
    A real image gives a real result (the imaginary residue of the Nyquist terms is dropped).
    """
    img = _image(image, "image")
    fy = np.fft.fftfreq(img.shape[0])[:, None]
    fx = np.fft.fftfreq(img.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (fy * shift[0] + fx * shift[1]))
    out = np.fft.ifft2(np.fft.fft2(img) * ramp)
    if np.iscomplexobj(img):
        return out.astype(np.result_type(img.dtype, np.complex64))
    return out.real.astype(np.result_type(img.dtype, np.float32))


def register_subpixel(
    moving: np.ndarray,
    reference: np.ndarray,
    upsample: int = REGISTRATION_UPSAMPLE,
    normalization: Literal["phase", "none"] = "phase",
    apodize: bool = False,
) -> tuple[tuple[float, float], np.ndarray]:
    """Sub-pixel translation registering ``moving`` onto ``reference``, and the registered image.

    ``skimage.registration.phase_cross_correlation(reference, moving, upsample_factor=upsample)``:
    the cross-power spectrum locates the integer correlation peak and an upsampled DFT over a
    1.5-pixel neighbourhood refines it to ``1 / upsample`` pixel (Guizar-Sicairos et al. 2008).
    ``normalization="phase"`` (default) is phase correlation, sharp and exact for clean or
    periodic shifts; ``"none"`` keeps plain cross-correlation, which weights frequencies by
    their power and is the robust choice for noisy images.  ``apodize`` removes the mean and
    applies a 2-D Hann window to both images first, so the edges of non-periodic images do
    not pull the peak towards zero shift.

    Returns ``((dy, dx), registered)`` where ``registered = fourier_shift(moving, (dy, dx))``
    best matches ``reference`` (``moving`` itself when the shift is zero): if ``moving`` is
    ``reference`` translated by ``(sy, sx)``, the shift is ``(-sy, -sx)``.  Works for real
    and complex images; shifts are wrapped to ``[-size/2, size/2)``.
    """
    from skimage.registration import phase_cross_correlation

    mov, ref, _ = _pair(moving, reference, None)
    if upsample < 1:
        raise ValueError(f"upsample must be >= 1, got {upsample}")
    if normalization not in ("phase", "none"):
        raise ValueError(f"normalization must be 'phase' or 'none', got {normalization!r}")
    a, b = ref.astype(np.complex128), mov.astype(np.complex128)
    if apodize:
        window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
        a, b = (a - a.mean()) * window, (b - b.mean()) * window
    shift, _error, _phase = phase_cross_correlation(
        a, b, upsample_factor=int(upsample), normalization="phase" if normalization == "phase" else None
    )
    dy, dx = float(shift[0]) + 0.0, float(shift[1]) + 0.0  # + 0.0 turns -0.0 into 0.0
    registered = mov.copy() if dy == 0.0 and dx == 0.0 else fourier_shift(mov, (dy, dx))
    return (dy, dx), registered


# ---------------------------------------------------------------------------------------------
# SSIM / PSNR


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None, mask: np.ndarray | None = None) -> float:
    """Mean structural similarity of two real images, in [-1, 1]; 1 = identical.

    scikit-image's ``structural_similarity(a, b, data_range=L, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, full=True)``: Wang et al. (2004) with a normalised 11x11
    Gaussian window (sigma 1.5), population statistics, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``
    and ``L = data_range`` (default: the peak-to-peak value of the reference ``b`` over the
    mask).  The SSIM map is averaged over the pixels whose whole window lies inside the image
    (a 5-pixel border is dropped, as scikit-image's mean does), restricted to ``mask`` if given.
    Images must be at least 11 x 11.
    """
    from skimage.metrics import structural_similarity

    a, b, mask = _pair(a, b, mask)
    a, b = _real(a, "a"), _real(b, "b")
    r = SSIM_RADIUS
    if min(a.shape) < 2 * r + 1:
        raise ValueError(f"SSIM needs images of at least {2 * r + 1} x {2 * r + 1} pixels, got {a.shape}")
    L = _data_range(a, b, mask) if data_range is None else float(data_range)
    if L <= 0:
        raise ValueError(f"data_range must be positive, got {L}")
    _, smap = structural_similarity(a, b, data_range=L, gaussian_weights=True, sigma=SSIM_SIGMA,
                                    use_sample_covariance=False, K1=SSIM_K1, K2=SSIM_K2, full=True)
    inner = (slice(r, -r), slice(r, -r))
    if mask is None:
        return float(smap[inner].mean())
    sel = mask[inner]
    if not sel.any():
        raise ValueError(f"mask selects no pixel at least {r} pixels from the image border")
    return float(smap[inner][sel].mean())


def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(L^2 / MSE)`` in dB of ``a`` against the reference ``b``.

    scikit-image's ``peak_signal_noise_ratio`` over the masked pixels.

    ``L = data_range`` (default: the peak-to-peak value of ``b`` over the mask).  Identical
    images give ``math.inf`` (MSE 0); callers that serialise to JSON must encode it.
    """
    from skimage.metrics import peak_signal_noise_ratio

    a, b, mask = _pair(a, b, mask)
    a, b = _real(a, "a"), _real(b, "b")
    L = _data_range(a, b, mask) if data_range is None else float(data_range)
    if L <= 0:
        raise ValueError(f"data_range must be positive, got {L}")
    sa, sb = (a, b) if mask is None else (a[mask], b[mask])
    if np.array_equal(sa, sb):
        return math.inf
    return float(peak_signal_noise_ratio(sb, sa, data_range=L))


# ---------------------------------------------------------------------------------------------
# FRC


class FRC(NamedTuple):
    """A Fourier ring correlation: one entry per ring from the first non-zero frequency to Nyquist."""

    frequencies: np.ndarray
    """ring centres, cycles per pixel"""
    curve: np.ndarray
    """the correlation per ring, in [-1, 1]"""
    threshold: np.ndarray
    """the resolution criterion per ring (1/2-bit by default)"""
    ring_pixels: np.ndarray
    """number of Fourier pixels in each ring"""
    cutoff: float
    """frequency (cycles/pixel) where the curve first falls below the threshold, linearly interpolated
    between rings; 0.0 if the first ring is already below, the last ring's frequency if it never falls"""
    area: float
    """area under the curve divided by the frequency span: the mean correlation, 1 for identical images"""

    @property
    def resolution_px(self) -> float:
        """The resolved period in pixels, ``1 / cutoff`` (``math.inf`` when nothing is resolved)."""
        return math.inf if self.cutoff <= 0.0 else 1.0 / self.cutoff


def frc_threshold(ring_pixels: np.ndarray, criterion: FRCCriterion = "half-bit") -> np.ndarray:
    """The threshold per ring: van Heel & Schatz's information criteria for rings of ``ring_pixels``
    Fourier pixels (``'half-bit'``, ``'one-bit'``), or the fixed ``'1/7'``."""
    if criterion not in FRC_THRESHOLDS:
        raise ValueError(f"criterion must be one of {sorted(FRC_THRESHOLDS)}, got {criterion!r}")
    a, b, c, d = FRC_THRESHOLDS[criterion]
    root = np.sqrt(np.maximum(np.asarray(ring_pixels, dtype=np.float64), 1.0))
    return (a + b / root) / (c + d / root)


def frc_cutoff(freqs: np.ndarray, curve: np.ndarray, threshold: np.ndarray) -> float:
    """Frequency where ``curve`` first falls below ``threshold``, linearly interpolated between rings.

    0.0 if the first ring is already below, the last ring's frequency if it never falls.
    """
    below = np.flatnonzero(curve < threshold)
    if below.size == 0:
        return float(freqs[-1])
    if below[0] == 0:
        return 0.0
    i = int(below[0])
    d0, d1 = curve[i - 1] - threshold[i - 1], curve[i] - threshold[i]
    return float(freqs[i - 1] + (freqs[i] - freqs[i - 1]) * d0 / (d0 - d1))


def frc(
    a: np.ndarray,
    b: np.ndarray,
    criterion: FRCCriterion = "half-bit",
    apodize: bool = True,
) -> FRC:
    """Fourier ring correlation of two images (real or complex) of the same shape.

    ``FRC(r) = Re sum_ring F_a conj(F_b) / sqrt(sum_ring |F_a|^2 sum_ring |F_b|^2)``.
    Each image has its mean removed and, with ``apodize``, is multiplied by a 2-D Hann
    window so the edges of a non-periodic image do not add a spurious correlated cross
    to the spectrum.  Rings are one frequency step wide, the step being
    ``1 / min(height, width)`` cycles per pixel; the DC ring is excluded and a ring in which
    either image has no power scores 0.  ``criterion`` picks the 1/2-bit (default) or
    1-bit threshold; see :class:`FRC` for the cutoff and area.
    """
    a, b, _ = _pair(a, b, None)
    height, width = a.shape
    n = min(height, width)
    if n < 4:
        raise ValueError(f"FRC needs images of at least 4 x 4 pixels, got {a.shape}")
    window = np.outer(np.hanning(height), np.hanning(width)) if apodize else 1.0
    fa = np.fft.fft2((a - a.mean()) * window)
    fb = np.fft.fft2((b - b.mean()) * window)
    fy = np.fft.fftfreq(height)[:, None] * n
    fx = np.fft.fftfreq(width)[None, :] * n
    ring = np.rint(np.hypot(fy, fx)).astype(np.int64).ravel()
    nrings = n // 2 + 1
    keep = ring < nrings
    ring = ring[keep]

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring, weights=values.ravel()[keep], minlength=nrings)

    cross = ring_sum((fa * np.conj(fb)).real)
    power = np.sqrt(ring_sum(np.abs(fa) ** 2) * ring_sum(np.abs(fb) ** 2))
    pixels = np.bincount(ring, minlength=nrings)
    curve = np.divide(cross, power, out=np.zeros(nrings), where=power > 0)[1:]
    freqs = np.arange(1, nrings) / n
    pixels = pixels[1:]
    thr = frc_threshold(pixels, criterion)
    cutoff = frc_cutoff(freqs, curve, thr)
    span = freqs[-1] - freqs[0]
    area = float(np.trapezoid(curve, freqs) / span) if span > 0 else float(curve[0])
    return FRC(freqs, curve, thr, pixels, cutoff, area)


# ---------------------------------------------------------------------------------------------
# scoring a reconstruction


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def score_pair(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Score a complex reconstruction against a complex reference (ground truth or the other backend).

    Steps: crop both to the bounding box of ``mask``; remove the global phase; register
    ``recon`` onto ``truth`` to 1/100 pixel and shift it there (Hann-windowed cross-correlation of
    the complex fields: on noisy, non-periodic crops plain phase correlation was measured off by
    up to 1 pixel, the windowed cross-correlation by < 0.1 pixel); remove the global phase again;
    drop a border as wide as the shift (rounded up, at least 1 pixel) where the periodic Fourier
    shift wrapped content around.
    The phase is compared after unwrapping relative to the reference
    (``angle(truth) + angle(recon * conj(truth))``), so a 2 pi jump is not an error.

    Returns (floats; ``psnr`` may be ``math.inf`` for identical inputs):

    - ``amp_ssim``, ``amp_psnr``: amplitude ``|recon|`` vs ``|truth|`` (dB);
    - ``phase_ssim``, ``phase_psnr``: phase vs phase, radians, ``data_range`` = the reference phase's span;
    - ``frc_cutoff``: 1/2-bit FRC cutoff of the complex fields, cycles/pixel (0.5 = Nyquist);
    - ``frc_cutoff_1_7``: the same curve's cutoff at the fixed 1/7 threshold;
    - ``frc_resolution_px``, ``frc_resolution_1_7_px``: ``1 / cutoff`` in pixels (``math.inf`` when
      nothing is resolved);
    - ``frc_area``: the FRC's mean correlation (1 = identical);
    - ``shift_y``, ``shift_x``: the registration shift applied to ``recon`` (pixels);
    - ``global_phase``: the phase offset removed from ``recon`` (radians; before registration);
    - ``pixels``: the number of pixels scored.
    """
    r, t, mask = _pair(recon, truth, mask)
    r, t = r.astype(np.complex128), t.astype(np.complex128)
    if mask is not None:
        box = _bounding_box(mask)
        r, t, mask = r[box], t[box], mask[box]
    phi0 = global_phase_offset(r, t, mask)
    (dy, dx), shifted = register_subpixel(r * np.exp(-1j * phi0), t, normalization="none", apodize=True)
    aligned = remove_global_phase(shifted, t, mask)
    border = max(1, int(math.ceil(max(abs(dy), abs(dx)))))
    valid = np.zeros(t.shape, dtype=bool)
    valid[border:-border, border:-border] = True
    if mask is not None:
        valid &= mask
    if not valid.any():
        raise ValueError(f"no pixel left to score after the registration shift ({dy:.2f}, {dx:.2f})")
    phase_truth = np.angle(t)
    phase_recon = phase_truth + np.angle(aligned * np.conj(t))
    ring = frc(np.where(valid, aligned, 0), np.where(valid, t, 0))
    cutoff_7 = frc_cutoff(ring.frequencies, ring.curve, frc_threshold(ring.ring_pixels, "1/7"))
    return {
        "amp_ssim": ssim(np.abs(aligned), np.abs(t), mask=valid),
        "amp_psnr": psnr(np.abs(aligned), np.abs(t), mask=valid),
        "phase_ssim": ssim(phase_recon, phase_truth, mask=valid),
        "phase_psnr": psnr(phase_recon, phase_truth, mask=valid),
        "frc_cutoff": ring.cutoff,
        "frc_cutoff_1_7": cutoff_7,
        "frc_resolution_px": ring.resolution_px,
        "frc_resolution_1_7_px": math.inf if cutoff_7 <= 0.0 else 1.0 / cutoff_7,
        "frc_area": ring.area,
        "shift_y": dy,
        "shift_x": dx,
        "global_phase": phi0,
        "pixels": float(valid.sum()),
    }


# ---------------------------------------------------------------------------------------------
# stitched objects


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


def score_stitched(
    stitched: np.ndarray, objectGuess: np.ndarray, global_offsets: np.ndarray, N: int, M: int = 20
) -> dict[str, float]:
    """Score a stitched object against the true object over the covered region.

    Returns every key of :func:`score_pair` (SSIM, PSNR, FRC after registration and global-phase
    removal, on the bounding box of the covered region) plus ``amp_pearson``, ``phase_pearson``
    (Pearson correlation without registration, after removing the global phase offset) and
    ``covered_pixels``.
    """
    recon = _square(stitched)
    mask = coverage_mask(global_offsets, N, M)
    if mask.shape != recon.shape:
        raise ValueError(f"stitched canvas {recon.shape} does not match the coverage grid {mask.shape}; same M?")
    truth = ground_truth_canvas(objectGuess, global_offsets, recon.shape[0])
    aligned = remove_global_phase(recon, truth, mask)
    out = {
        "amp_pearson": pearson(np.abs(recon), np.abs(truth), mask),
        "phase_pearson": pearson(np.angle(aligned), np.angle(truth), mask),
        "covered_pixels": float(mask.sum()),
    }
    out.update(score_pair(recon, truth, mask))
    return out


def json_ready(score: Mapping[str, Any]) -> dict[str, Any]:
    """``score`` with non-finite floats (an infinite PSNR or FRC resolution) as ``None`` (valid JSON)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in score.items()}

"""Synthetic complex objects (transmission functions) for simulated ptychography.

An object is a complex64 ``[size, size]`` transmission ``O = a * exp(i * phi)``
sampled on the object canvas (1 pixel = 1 detector-conjugate real-space pixel,
the pixel of the scan coordinates).  Every kind first draws one or two real
*texture* maps ``t`` with values in ``[0, 1]`` (min-max normalised) and maps
them linearly onto the requested amplitude and phase ranges:

``'lines'``
    Random straight lines, smoothed (upstream ``mk_lines_img``): the lines are
    rasterised one pixel wide on a canvas twice the object size, blurred as
    ``g(1) + 2 g(5) + 5 g(10)`` (``g(s)`` = Gaussian filter with sigma ``s``
    pixels), and the central ``size x size`` part is kept.  A single map ``t``
    drives both amplitude and phase, as for a thin sample of projected
    thickness ``t``: ``a = amp_max - (amp_max - amp_min) t`` (lines absorb) and
    ``phi = phase_min + (phase_max - phase_min) t``.

``'grf'``
    Two independent Gaussian random fields with the isotropic power spectrum
    ``S(k) ~ |k| ** -exponent`` (``k`` in cycles per pixel, ``S(0) = 0``), one
    for amplitude ``a = amp_min + (amp_max - amp_min) t_a`` and one for phase
    ``phi = phase_min + (phase_max - phase_min) t_p``.  The fields are periodic
    on the canvas.

All draws come from the ``rng`` passed in (the simulator's 'object' sub-stream).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.ndimage

from ptycho.errors import ConfigError

__all__ = [
    "DEFAULT_AMP_RANGE",
    "DEFAULT_GRF_EXPONENT",
    "DEFAULT_LINE_DENSITY",
    "DEFAULT_PHASE_RANGE",
    "OBJECT_KINDS",
    "gaussian_random_field",
    "lines_image",
    "make_object",
]

#: Object kinds understood by :func:`make_object`.
OBJECT_KINDS: tuple[str, ...] = ("lines", "grf")
#: Default amplitude range ``(min, max)`` of the transmission (dimensionless).
DEFAULT_AMP_RANGE: tuple[float, float] = (0.5, 1.0)
#: Default phase range ``(min, max)`` in radians.
DEFAULT_PHASE_RANGE: tuple[float, float] = (-1.0, 1.0)
#: Default number of lines per pixel of the (doubled) drawing canvas: ``n_lines =
#: round(DEFAULT_LINE_DENSITY * (2 * size) ** 2)``; 2.5e-4 draws 66 lines for a
#: 256-pixel object and 16 for a 128-pixel one.
DEFAULT_LINE_DENSITY: float = 2.5e-4
#: Default spectral exponent of the Gaussian random field (``S(k) ~ |k|**-3``).
DEFAULT_GRF_EXPONENT: float = 3.0
#: Smoothing of the lines image: ``sum(weight * gaussian_filter(img, sigma))`` (upstream mk_lines_img).
_LINE_BLUR: tuple[tuple[float, float], ...] = ((1.0, 1.0), (5.0, 2.0), (10.0, 5.0))


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or size < 8:
        raise ConfigError("object_size", size, "an integer number of pixels >= 8")
    return int(size)


def _check_range(name: str, value: Sequence[float], lo: float | None = None) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(name, value, "a pair (min, max) of finite numbers") from None
    if not (np.isfinite(a) and np.isfinite(b)) or a > b or (lo is not None and a < lo):
        bound = f" with min >= {lo}" if lo is not None else ""
        raise ConfigError(name, value, f"a pair (min, max) of finite numbers, min <= max{bound}")
    return a, b


def _unit_range(img: np.ndarray) -> np.ndarray:
    """Min-max normalise to ``[0, 1]`` (a constant image maps to 0)."""
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros_like(img)
    return (img - lo) / (hi - lo)


def lines_image(size: int, rng: np.random.Generator, *, n_lines: int | None = None) -> np.ndarray:
    """Smoothed random-lines texture, float64 ``[size, size]`` in ``[0, 1]``.

    ``n_lines`` straight segments with integer end points drawn uniformly on a
    ``2 size x 2 size`` canvas are rasterised one pixel wide (``max(|dx|, |dy|) + 1``
    samples per segment, rounded to the nearest pixel), blurred with
    ``g(1) + 2 g(5) + 5 g(10)`` (sigma in pixels, reflecting borders), cropped to
    the central ``size x size`` block and min-max normalised.  Default ``n_lines``:
    ``round(DEFAULT_LINE_DENSITY * (2 size)**2)`` (at least 1).
    """
    size = _check_size(size)
    canvas = 2 * size
    if n_lines is None:
        n_lines = max(1, round(DEFAULT_LINE_DENSITY * canvas**2))
    if isinstance(n_lines, bool) or int(n_lines) != n_lines or n_lines < 1:
        raise ConfigError("n_lines", n_lines, "a positive integer")
    ends = rng.integers(0, canvas, size=(int(n_lines), 4))  # r0, c0, r1, c1
    r0, c0, r1, c1 = (ends[:, i].astype(np.float64) for i in range(4))
    counts = np.maximum(np.abs(r1 - r0), np.abs(c1 - c0)).astype(np.int64) + 1
    line_id = np.repeat(np.arange(len(counts)), counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    t = step / np.maximum(counts[line_id] - 1, 1)
    rows = np.rint(r0[line_id] + t * (r1 - r0)[line_id]).astype(np.int64)
    cols = np.rint(c0[line_id] + t * (c1 - c0)[line_id]).astype(np.int64)
    img = np.zeros((canvas, canvas), dtype=np.float64)
    img[rows, cols] = 1.0
    blurred = sum(w * scipy.ndimage.gaussian_filter(img, s) for s, w in _LINE_BLUR)
    lo = size // 2
    return _unit_range(blurred[lo : lo + size, lo : lo + size])


def gaussian_random_field(size: int, rng: np.random.Generator, *, exponent: float = DEFAULT_GRF_EXPONENT) -> np.ndarray:
    """Periodic Gaussian random field, float64 ``[size, size]`` min-max normalised to ``[0, 1]``.

    White Gaussian noise is filtered in Fourier space by ``|k| ** (-exponent / 2)``
    (``k`` = radial frequency in cycles per pixel, the ``k = 0`` term set to 0), so
    the power spectrum is ``S(k) ~ |k| ** -exponent``.  Larger exponents give
    smoother fields (3 = smooth blobs with some fine texture).
    """
    size = _check_size(size)
    if not np.isfinite(exponent) or exponent < 0:
        raise ConfigError("grf_exponent", exponent, "a finite number >= 0")
    noise = rng.standard_normal((size, size))
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = 1.0
    filt = k ** (-float(exponent) / 2.0)
    filt[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(size, size))
    return _unit_range(field)


def make_object(
    kind: str,
    size: int,
    rng: np.random.Generator,
    *,
    amp_range: Sequence[float] = DEFAULT_AMP_RANGE,
    phase_range: Sequence[float] = DEFAULT_PHASE_RANGE,
    n_lines: int | None = None,
    grf_exponent: float = DEFAULT_GRF_EXPONENT,
) -> np.ndarray:
    """A synthetic complex object, complex64 ``[size, size]`` (see the module docstring).

    Parameters
    ----------
    kind:
        ``'lines'`` or ``'grf'``.
    size:
        Side of the square object canvas in pixels (>= 8).
    rng:
        Generator for every draw (the simulator passes its 'object' sub-stream).
    amp_range:
        ``(min, max)`` of the amplitude ``|O|``, ``0 <= min <= max``; the extremes
        are attained (min-max normalised textures).  Default ``(0.5, 1.0)``.
    phase_range:
        ``(min, max)`` of the phase ``arg O`` in radians.  Default ``(-1, 1)``.
    n_lines:
        'lines' only: number of segments on the doubled canvas (default from
        :data:`DEFAULT_LINE_DENSITY`).
    grf_exponent:
        'grf' only: spectral exponent (default 3).
    """
    if kind not in OBJECT_KINDS:
        raise ConfigError("object_kind", kind, f"one of {list(OBJECT_KINDS)}")
    amp_lo, amp_hi = _check_range("amp_range", amp_range, lo=0.0)
    ph_lo, ph_hi = _check_range("phase_range", phase_range)
    if kind == "lines":
        t = lines_image(size, rng, n_lines=n_lines)
        amp = amp_hi - (amp_hi - amp_lo) * t
        phase = ph_lo + (ph_hi - ph_lo) * t
    else:
        t_amp = gaussian_random_field(size, rng, exponent=grf_exponent)
        t_phase = gaussian_random_field(size, rng, exponent=grf_exponent)
        amp = amp_lo + (amp_hi - amp_lo) * t_amp
        phase = ph_lo + (ph_hi - ph_lo) * t_phase
    return (amp * np.exp(1j * phase)).astype(np.complex64)

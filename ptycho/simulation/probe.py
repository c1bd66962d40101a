"""A focused, defocused probe: a circular pupil propagated by a quadratic (Fresnel) phase.

Model (all on the ``N x N`` grid of the detector / patch)::

    f      = radial spatial frequency of the DFT grid, cycles per pixel (np.fft.fftfreq)
    f_c    = aperture * 0.5                      pupil radius (0.5 = Nyquist), cycles per pixel
    rho    = f / f_c                             normalised pupil coordinate
    pupil  = clip(f_c * N + 0.5 - f * N, 0, 1)   circular aperture, edge antialiased over 1 Fourier pixel
    P      = fftshift(ifft2(pupil * exp(2j * pi * defocus * rho**2)))
    P      = P / max|P|

``defocus`` is the Seidel defocus coefficient ``W020`` in waves: the wavefront
error at the pupil edge.  It is the Fresnel propagation phase
``exp(-i pi lambda z |q|**2)`` written in pupil units (``defocus = -lambda z
f_c**2 / 2`` for a propagation distance ``z``); the sign only mirrors the
focus.  In geometric optics the defocused spot has radius ``2 * defocus / f_c``
pixels (``= 8 * defocus`` for the default aperture 0.5); diffraction adds the
Airy radius ``0.61 / f_c`` pixels and Fresnel rings (about ``defocus`` of them)
inside the spot.  The default ``defocus = N / 48`` waves gives a geometric spot
radius of ``N / 6`` pixels, comparable to upstream's default probe (a disk of
radius about ``0.17 N``) and inside the probe mask (radius ``N / 4``).

The probe is centred on pixel ``(N/2, N/2)`` (the patch pixel that sits on the
scan position, see ``physics.object_patches``), its far field is the pupil: the
diffraction pattern of the bare probe (``physics.diffract``) is the antialiased
disk of radius ``aperture * N / 2`` pixels centred on ``(N/2, N/2)``.  The
probe is normalised to a peak amplitude of 1; the simulator rescales it to
photon units (``specs/simulator.md``).
"""

from __future__ import annotations

import numpy as np

from ptycho.errors import ConfigError

__all__ = ["DEFAULT_APERTURE", "default_defocus", "make_probe"]

#: Default pupil radius as a fraction of the Nyquist frequency (0.5 cycles per pixel).
DEFAULT_APERTURE: float = 0.5


def default_defocus(N: int) -> float:
    """Default defocus in waves, ``N / 48`` (geometric spot radius ``N / 6`` px at aperture 0.5)."""
    return N / 48.0


def make_probe(N: int, *, aperture: float = DEFAULT_APERTURE, defocus: float | None = None) -> np.ndarray:
    """The defocused circular-aperture probe, complex64 ``[N, N]`` with ``max|P| == 1``.

    Parameters
    ----------
    N:
        Probe / patch side in pixels (even, >= 8).
    aperture:
        Pupil radius as a fraction of the Nyquist frequency, ``0 < aperture < 1``
        (dimensionless; the pupil radius is ``aperture * N / 2`` Fourier pixels).
    defocus:
        Defocus ``W020`` in waves at the pupil edge (any finite real; 0 = focused
        Airy spot).  ``None`` means :func:`default_defocus` ``(N)``.

    Deterministic: no random numbers are involved.
    """
    if isinstance(N, bool) or int(N) != N or N < 8 or N % 2:
        raise ConfigError("N", N, "an even integer number of pixels >= 8")
    N = int(N)
    if not (np.isfinite(aperture) and 0.0 < aperture < 1.0):
        raise ConfigError("probe_aperture", aperture, "a fraction of the Nyquist frequency in (0, 1)")
    if defocus is None:
        defocus = default_defocus(N)
    if not np.isfinite(defocus):
        raise ConfigError("probe_defocus", defocus, "a finite number of waves")
    freq = np.fft.fftfreq(N)  # cycles per pixel, DC at index 0
    f = np.hypot(freq[:, None], freq[None, :])
    f_c = 0.5 * float(aperture)
    pupil = np.clip(f_c * N + 0.5 - f * N, 0.0, 1.0)
    rho2 = (f / f_c) ** 2
    field = pupil * np.exp(2j * np.pi * float(defocus) * rho2)
    probe = np.fft.fftshift(np.fft.ifft2(field))
    probe /= np.abs(probe).max()
    return probe.astype(np.complex64)

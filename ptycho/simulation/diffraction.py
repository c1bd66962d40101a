"""Diffraction amplitudes of a scan, scaled to a photon budget, with Poisson noise.

The forward model is the one the networks are trained with, taken from the NumPy
reference (never restated here)::

    psi_k = probe * physics.object_patches(obj, xy, N)[k]        exit wave at position k
    A_k   = physics.diffract(psi_k)                               sqrt(fftshift(|fft2 psi_k|^2) / N^2)

Photon-count convention (``nphotons`` given):

* the probe is rescaled to photon units, ``probe_ph = sqrt(c) * probe`` with
  ``c = nphotons / mean_k sum_pixels A_k**2`` (``A_k`` computed with the input
  probe), so the *expected* counts ``I_k = physics.diffract(probe_ph * patch_k)**2``
  satisfy ``mean_k sum_pixels I_k == nphotons``: ``nphotons`` is the mean over the
  scan of the expected total number of detected photons per pattern (by Parseval
  also ``mean_k sum |probe_ph * patch_k|**2``);
* with ``poisson=True`` each pixel is an independent Poisson count
  ``n ~ Poisson(I_k)`` drawn from the 'noise' sub-stream and the stored amplitude is
  ``sqrt(n)`` (so ``diff3d**2`` are integer photon counts);
* with ``poisson=False`` the stored amplitude is the expected amplitude ``sqrt(I_k)``.

With ``nphotons=None`` nothing is rescaled and no noise is drawn: the amplitude is
``physics.diffract(probe * patch_k)`` for the probe as given.

In every case the returned probe reproduces the noise-free amplitudes through the
forward model: ``physics.diffract(probe_out * object_patches(obj, xy, N)) ==
expected amplitude`` up to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptycho.errors import ConfigError
from ptycho.reference import physics

__all__ = ["DiffractionResult", "check_nphotons", "simulate_diffraction"]

#: Patterns per block when evaluating the forward model (bounds temporary memory).
_BLOCK = 256


@dataclass(frozen=True)
class DiffractionResult:
    """Output of :func:`simulate_diffraction`.

    Attributes
    ----------
    diff3d:
        float32 ``[M, N, N]`` amplitude: ``sqrt(counts)`` (Poisson), ``sqrt(expected
        counts)`` (noise-free with ``nphotons``) or the unscaled amplitude (``nphotons=None``).
    probe:
        complex64 ``[N, N]`` probe in the units of ``diff3d`` (``sqrt(photons)`` per
        pixel when ``nphotons`` is given).
    count_scale:
        ``c``, the factor applied to intensities (``probe = sqrt(c) * input probe``);
        1.0 when ``nphotons`` is None.
    mean_expected_photons:
        mean over patterns of the expected total per pattern (``== nphotons`` when
        given, up to rounding), in photons (or intensity units when ``nphotons`` is None).
    mean_detected_photons:
        mean over patterns of ``sum diff3d**2`` (the realised photon count when noisy).
    """

    diff3d: np.ndarray
    probe: np.ndarray
    count_scale: float
    mean_expected_photons: float
    mean_detected_photons: float


def check_nphotons(nphotons: float | None) -> float | None:
    """Validate a photon budget: ``None`` or a finite number > 0; returns it as ``float``."""
    if nphotons is None:
        return None
    try:
        value = float(nphotons)
    except (TypeError, ValueError):
        raise ConfigError("nphotons", nphotons, "a positive photon count or None") from None
    if not (np.isfinite(value) and value > 0):
        raise ConfigError("nphotons", nphotons, "a positive, finite photon count (e.g. 1e9) or None")
    return value


def _expected_amplitude(obj: np.ndarray, probe: np.ndarray, xy: np.ndarray, N: int) -> np.ndarray:
    """float32 ``[M, N, N]`` ``physics.diffract(probe * object_patches(obj, xy, N))``, in blocks."""
    out = np.empty((xy.shape[0], N, N), dtype=np.float32)
    for s in range(0, xy.shape[0], _BLOCK):
        patches = physics.object_patches(obj, xy[s : s + _BLOCK], N)
        out[s : s + _BLOCK] = physics.diffract(probe[None, :, :] * patches)
    return out


def simulate_diffraction(
    obj: np.ndarray,
    probe: np.ndarray,
    xy: np.ndarray,
    *,
    nphotons: float | None,
    rng: np.random.Generator | None = None,
    poisson: bool = True,
) -> DiffractionResult:
    """Diffraction amplitudes of ``obj`` scanned by ``probe`` at positions ``xy``.

    Parameters
    ----------
    obj:
        complex ``[H, W]`` object transmission (row = y, column = x).
    probe:
        complex ``[N, N]`` probe, centred on pixel ``(N/2, N/2)``; any scale.
    xy:
        float ``[M, 2]`` scan positions ``(x, y)`` in object pixels.
    nphotons:
        Mean expected photons per pattern (see the module docstring) or ``None``
        for unscaled, noise-free amplitudes.
    rng:
        Generator of the Poisson draws (the simulator's 'noise' sub-stream);
        required when ``nphotons`` is given and ``poisson`` is True.
    poisson:
        Draw Poisson counts (True) or return expected amplitudes (False).
    """
    nphotons = check_nphotons(nphotons)
    p = np.asarray(probe)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ConfigError("probe", f"array of shape {p.shape}", "a square [N, N] complex array")
    N = p.shape[0]
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] == 0:
        raise ConfigError("xy", f"array of shape {xy.shape}", "a non-empty [M, 2] array of (x, y) positions")
    p = p.astype(np.complex64)
    amp = _expected_amplitude(obj, p, xy, N)
    energy = float(np.mean(np.sum(np.square(amp, dtype=np.float64), axis=(1, 2))))
    if nphotons is None:
        return DiffractionResult(amp, p, 1.0, energy, energy)
    if not energy > 0:
        raise ConfigError("probe", "an illumination with zero total intensity", "a probe that is not all zero")
    scale = nphotons / energy
    root = np.sqrt(scale)
    probe_ph = (p.astype(np.complex128) * root).astype(np.complex64)
    mean_expected = energy * scale
    if not poisson:
        diff = (amp.astype(np.float64) * root).astype(np.float32)
        detected = float(np.mean(np.sum(np.square(diff, dtype=np.float64), axis=(1, 2))))
        return DiffractionResult(diff, probe_ph, float(scale), float(mean_expected), detected)
    if rng is None:
        raise ConfigError("rng", None, "a numpy Generator for the Poisson noise (the 'noise' sub-stream)")
    diff = np.empty_like(amp)
    total = 0.0
    for s in range(0, amp.shape[0], _BLOCK):
        lam = np.square(amp[s : s + _BLOCK], dtype=np.float64) * scale
        counts = rng.poisson(lam)
        total += float(counts.sum())
        diff[s : s + _BLOCK] = np.sqrt(counts, dtype=np.float64)
    return DiffractionResult(diff, probe_ph, float(scale), float(mean_expected), total / amp.shape[0])

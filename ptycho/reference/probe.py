"""NumPy reference of the probe: default probe, disk mask and normalisation (upstream ``ptycho/probe.py``).

Re-exported by :mod:`ptycho.reference.physics`; import from there.
"""

from __future__ import annotations

import math

import numpy as np

from ptycho.conventions import DEFAULT_PROBE_SCALE, DEFAULT_PROBE_WINDOW_SCALE
from ptycho.errors import ConfigError

__all__ = ["DEFAULT_PROBE_WINDOW_SCALE", "default_probe", "normalize_probe", "probe_disk_mask"]


def _gaussian_window(M: int, std: float, sym: bool = True) -> np.ndarray:
    """``scipy.signal.windows.gaussian(M, std, sym=True)`` in NumPy (float64 ``[M]``).

    ``w[n] = exp(-(n - (M-1)/2)**2 / (2 std**2))``.  Written out because importing
    ``scipy.signal`` costs ~2 s of start-up in every CLI; ``tests`` check it against scipy.
    """
    if not sym:
        raise ValueError("only the symmetric window is used")
    n = np.arange(M, dtype=np.float64) - (M - 1) / 2.0
    return np.exp(-(n**2) / (2.0 * float(std) ** 2))


def _check_n(N: int, name: str = "N") -> int:
    if int(N) != N or N < 1:
        raise ValueError(f"{name}={N!r} is invalid: expected a positive integer number of pixels")
    return int(N)


def probe_disk_mask(N: int) -> np.ndarray:
    """Disk mask of the probe: ``1`` where ``dist < N // 4``, else ``0``.

    ``dist = sqrt(x**2 + y**2)`` with ``x = y = arange(N) - N // 2 + 0.5`` (pixels), i.e.
    the disk is centred on ``(N/2 - 0.5, N/2 - 0.5)`` for even ``N`` (the centre of the
    array, between pixels).  Upstream ``probe.get_probe_mask``.

    Returns float32 ``[N, N]``.
    """
    N = _check_n(N)
    c = np.arange(N, dtype=np.float64) - N // 2 + 0.5
    dist = np.sqrt(c[:, None] ** 2 + c[None, :] ** 2)
    return (dist < N // 4).astype(np.float32)


def default_probe(N: int) -> np.ndarray:
    """Upstream ``probe.get_default_probe(N)``: a smoothed disk, real-valued.

    Formula (float64 internally)::

        L = _gaussian_window(N, std=N / (DEFAULT_PROBE_WINDOW_SCALE * pi**2), sym=True)
        L = L / max(L)
        disk = (outer(L, L) > 0.5)                    # radius ~0.17 N, centred at (N-1)/2
        probe = scipy.ndimage.gaussian_filter(disk.astype(float64), sigma=1) + 1e-9

    (``gaussian_filter`` with its defaults: mode 'reflect', truncate 4.0.)  The probe is
    not normalised; pass it through :func:`normalize_probe`.

    Returns complex64 ``[N, N]`` (imaginary part 0).
    """
    N = _check_n(N)
    window = _gaussian_window(N, std=N / (DEFAULT_PROBE_WINDOW_SCALE * math.pi**2), sym=True)
    window = window / window.max()
    disk = (np.outer(window, window) > 0.5).astype(np.float64)
    import scipy.ndimage  # lazy: only the default probe needs it

    probe = scipy.ndimage.gaussian_filter(disk, 1) + 1e-9
    return probe.astype(np.complex64)


def normalize_probe(probe: np.ndarray, probe_scale: float = DEFAULT_PROBE_SCALE) -> np.ndarray:
    """Normalise a probe so that ``mean(|probe_disk_mask(N) * P|) == 1 / probe_scale``.

    Formula (float64 internally; upstream ``probe.set_probe``)::

        norm = probe_scale * mean_{all N*N pixels}(|probe_disk_mask(N) * probe|)
        P = probe / norm

    The disk is applied whatever ``probe.mask`` says.  ``probe``: complex or real
    ``[N, N]``.  ``probe_scale`` > 0 (``ModelConfig.probe_scale``; default
    ``conventions.DEFAULT_PROBE_SCALE``).  Returns complex64 ``[N, N]``.
    Raises ``ConfigError`` for ``probe_scale <= 0`` and ``ValueError`` for a probe that
    is zero (or not finite) inside the disk.
    """
    p = np.asarray(probe)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(
            f"probe must be a square 2-D array [N, N], got shape {p.shape}; squeeze a trailing "
            "channel axis ([N, N, 1] -> [N, N]) before normalising"
        )
    if not (math.isfinite(float(probe_scale)) and probe_scale > 0):
        raise ConfigError("probe_scale", probe_scale, "a finite number > 0")
    p = p.astype(np.complex128)
    mean_abs = float(np.mean(np.abs(probe_disk_mask(p.shape[0]) * p)))
    if not (math.isfinite(mean_abs) and mean_abs > 0):
        raise ValueError(
            f"probe has mean |disk * probe| = {mean_abs!r}; it must be finite and nonzero inside the "
            f"central disk of radius N//4 = {p.shape[0] // 4} px"
        )
    return (p / (float(probe_scale) * mean_abs)).astype(np.complex64)

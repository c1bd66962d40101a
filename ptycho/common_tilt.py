"""The phase tilt common to every group's object, fitted to the measured patterns before stitching.

Why (``specs/physics.md`` §21): a pattern fixes its group's phase only up to a constant (which
``ptycho.phase_sync`` makes consistent over the overlaps) and, almost, up to a linear tilt: a tilt
``tau`` (rad/px) of the exit wave shifts its far field by ``tau * N / (2 pi)`` detector pixels, 0.02 px
for the 0.004 rad/px the README demo's networks end with.  The overlaps cannot see a tilt shared by
all groups (it only adds ``tau . (g_j - g_i)`` to each pair's relative constant, which synchronisation
then spreads into a ramp ``tau . r`` over the whole field, 0.4 rad across the demo's field), so the
only evidence for it is that sub-pixel shift of every pattern.  A network learns it no better than
its other small errors; which seed ends with a large one was a lottery.

What: the maximum-likelihood common tilt.  The per-group objects are pushed through the project's
forward model once (``ptycho.reference.physics``: the object on the padded canvas, ``extract_patches``
at the group's channel offsets, ``illuminate`` with the model's probe, mask and smoothing), and
``tau = (tau_x, tau_y)`` minimises the Poisson negative log-likelihood (the training loss,
``physics.poisson_nll`` up to constants) of the measured intensities under
``s * |F(psi * exp(i tau . r))|^2``, ``s`` the closed-form maximum-likelihood global scale
``sum(I_measured) / sum(I_predicted)`` (so the intensity normalisation does not matter).  A tilt
commutes with the probe and its mask exactly, with the bilinear extraction up to ``tau**2 / 8``
(3e-6 at 0.005 rad/px) and, when it is on, with the 3x3 smoothing up to a relative ``|tau|`` per pixel
(0.5 % at 0.005 rad/px), so the exit waves are computed once and every evaluation is one batch of FFTs.
Bad detector pixels are left out.  The fitted ``tau`` is the tilt to multiply in:
``apply_tilt(objects, tau)`` are the objects that explain the patterns best.

Measured (stop 19, specs/physics.md §21): on the README demo's networks (512 groups) the fitted tilt is
within about 2e-3 rad/px of the mean tilt measured against the true object (which needs the truth);
on the true object itself the fit finds less than 3e-4 rad/px and a planted 0.004 rad/px tilt comes back
to within 3e-4 (``tests/test_common_tilt.py``).

Conventions (``ptycho.conventions``): ``tau`` is ``(x, y)``, radians per object pixel, ``x`` along
columns; the ramp ``exp(i (tau_x (col - W/2) + tau_y (row - H/2)))`` is centred on the array's centre
pixel, so it is the same ramp for a group's ``N x N`` object and for its central ``M x M`` crop and
leaves the constant phase at the group's centre unchanged.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.optimize

from ptycho import conventions
from ptycho.reference import physics

__all__ = [
    "MAX_TILT_GROUPS", "MAX_TILT_PX_SHIFT", "apply_tilt", "exit_waves", "fit_common_tilt", "fit_groups", "tilt_nll",
]

#: Groups (evenly spaced over the scan) the fit uses at most: the tilt is common to all, and 512
#: groups fix it to about 1e-3 rad/px on the README demo.
MAX_TILT_GROUPS = 1024
#: Largest pattern shift (detector pixels) the fit searches, i.e. ``|tau| <= 2 pi * 0.5 / N``: a network
#: whose patterns are off by half a pixel has a gross error that no tilt repairs.
MAX_TILT_PX_SHIFT = 0.5
#: Search stops when the simplex is this small (rad/px): 3e-5 rad/px is 3e-3 rad over a 100-px field.
_XATOL = 3e-5
#: Finite-difference spacing (rad/px) of the Newton polish.
_NEWTON_H = 2e-4
#: Patterns per FFT batch of one likelihood evaluation, groups per batch of exit waves.
_CHUNK_PATTERNS = 512
_CHUNK_GROUPS = 128
#: Added to predicted intensities before the log (the waves are scaled to mean power 1, so ``|F|**2`` sums
#: to ``N**2`` per pattern).
_FLOOR = 1e-20


def fit_groups(n: int, max_groups: int = MAX_TILT_GROUPS) -> np.ndarray:
    """The groups the fit uses: at most ``max_groups`` of ``n``, evenly spaced, int64 indices."""
    if n < 1:
        raise ValueError("no groups to fit a tilt to")
    return np.unique(np.linspace(0, n - 1, min(int(n), int(max_groups))).round().astype(np.int64))


def _ramp(shape: tuple[int, int], tau: np.ndarray) -> np.ndarray:
    """``exp(i (tau_x (col - W/2) + tau_y (row - H/2)))``, complex128 ``[H, W]``."""
    H, W = shape
    rows = np.arange(H, dtype=np.float64)[:, None] - H / 2
    cols = np.arange(W, dtype=np.float64)[None, :] - W / 2
    return np.exp(1j * (float(tau[0]) * cols + float(tau[1]) * rows))


def apply_tilt(objects: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``objects [n, H, W, 1]`` times the ramp of ``tau`` (rad/px, ``(x, y)``), centred on each array's centre."""
    o = np.asarray(objects)
    if o.ndim != 4 or o.shape[-1] != 1:
        raise ValueError(f"expected objects of shape [n, H, W, 1] (channels-last), got {o.shape}")
    dtype = o.dtype if np.iscomplexobj(o) else np.complex64
    return (o * _ramp(o.shape[1:3], np.asarray(tau, np.float64))[None, :, :, None]).astype(dtype)


def exit_waves(
    objects: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray,
    *,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
) -> np.ndarray:
    """The exit waves the model's physics makes of per-group objects: complex64 ``[n, N, N, C]``.

    ``objects`` ``[n, N, N, 1]`` (what ``predict_objects`` returns), ``positions`` ``[n, 1, 2, C]``
    (the container's ``coords_nominal``, (x, y) pixels), ``probe`` ``[N, N]`` (any scale).  Each object
    is zero-padded to the model's canvas (``conventions.padded_size``) and cut at every channel's
    offset; the padding only matters outside the probe, since channel offsets are a few pixels.
    """
    obj = np.asarray(objects)
    if obj.ndim != 4 or obj.shape[-1] != 1 or obj.shape[1] != obj.shape[2]:
        raise ValueError(f"expected objects of shape [n, N, N, 1] (channels-last), got {obj.shape}")
    N = obj.shape[1]
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 4 or pos.shape[:3] != (obj.shape[0], 1, 2):
        raise ValueError(f"positions must have shape [n, 1, 2, C] with n={obj.shape[0]}, got {pos.shape}")
    gridsize = int(round(np.sqrt(pos.shape[-1])))
    canvas = physics.pad_to(obj[..., 0].astype(np.complex64), conventions.padded_size(N, gridsize))[..., None]
    patches = physics.extract_patches(canvas, pos, N)
    pr = np.asarray(probe).reshape(N, N)
    return physics.illuminate(patches, pr, probe_mask=probe_mask, gaussian_smoothing_sigma=gaussian_smoothing_sigma)


class _TiltLikelihood:
    """``tau -> NLL``: the Poisson NLL of the measured intensities under the exit waves tilted by ``tau``,
    with the global scale at its optimum, up to a constant (see :func:`tilt_nll`).

    Fast form, why not ``physics.diffract_channels``: this is evaluated about 40 times per fit, so the
    FFT runs once per evaluation in complex64 on ``[n * C, N, N]`` and the measured intensities are
    moved once into the FFT's unshifted order (``|fftshift(F)|**2`` paired with ``I`` is ``|F|**2``
    paired with ``ifftshift(I)``; the reference's ``1 / N**2`` cancels in the fitted scale).  With
    ``s = sum(I_m) / sum(I_p)`` the NLL ``sum(s I_p - I_m log(s I_p))`` is
    ``- sum(I_m log I_p) + sum(I_m) log(sum I_p) + const`` (bad pixels carry zero weight).
    ``tests/test_common_tilt.py`` checks it against the reference's ``diffract_channels``.
    """

    def __init__(self, psi: np.ndarray, intensity: np.ndarray, good: np.ndarray | None) -> None:
        waves = np.moveaxis(np.asarray(psi, dtype=np.complex128), -1, 1)  # [n, C, N, N]
        waves = waves.reshape(-1, *waves.shape[2:])
        power = float(np.mean(waves.real**2 + waves.imag**2))
        if not power > 0:
            raise ValueError("the exit waves are zero: no tilt can be fitted")
        self.waves = np.ascontiguousarray(waves / np.sqrt(power), dtype=np.complex64)  # the scale cancels
        self.exact = False  # True: complex128 FFTs and float64 logs (the Newton polish's finite differences)
        meas = np.moveaxis(np.asarray(intensity, dtype=np.float64), -1, 1).reshape(self.waves.shape)
        mask = None if good is None else np.asarray(good, bool).reshape(self.waves.shape[1:])
        if conventions.FFT_FFTSHIFT_AFTER:
            meas = np.fft.ifftshift(meas, axes=(1, 2))
            mask = None if mask is None else np.fft.ifftshift(mask)
        self.mask = mask
        self.weights = (meas if mask is None else meas * mask).astype(np.float32)
        self.total = float(self.weights.sum(dtype=np.float64))
        self.rows = np.arange(self.waves.shape[1], dtype=np.float64)[:, None] - self.waves.shape[1] / 2
        self.cols = np.arange(self.waves.shape[2], dtype=np.float64)[None, :] - self.waves.shape[2] / 2

    def __call__(self, tau: np.ndarray) -> float:
        ramp = np.exp(1j * (float(tau[0]) * self.cols + float(tau[1]) * self.rows))
        ramp = ramp if self.exact else ramp.astype(np.complex64)
        pred_total, weighted_log = 0.0, 0.0
        for start in range(0, len(self.waves), _CHUNK_PATTERNS):  # batches that stay in cache
            rows = slice(start, start + _CHUNK_PATTERNS)
            waves = self.waves[rows].astype(np.complex128) if self.exact else self.waves[rows]
            F = scipy.fft.fft2(waves * ramp, axes=(1, 2))
            pred = F.real**2 + F.imag**2
            pred_total += float((pred if self.mask is None else pred * self.mask).sum(dtype=np.float64))
            weighted_log += float(np.einsum("ijk,ijk->", self.weights[rows], np.log(pred + _FLOOR), dtype=np.float64))
        if not pred_total > 0:
            return float("inf")
        return float(-weighted_log + self.total * np.log(pred_total))


def tilt_nll(psi: np.ndarray, intensity: np.ndarray, tau: np.ndarray, good: np.ndarray | None = None) -> float:
    """Poisson NLL (up to a constant) of measured intensities ``[n, N, N, C]`` (good pixels, bool ``[N, N]``)
    under the exit waves ``psi`` ``[n, N, N, C]`` tilted by ``tau``, the global scale at its optimum."""
    return _TiltLikelihood(psi, intensity, good)(tau)


def fit_common_tilt(
    objects: np.ndarray,
    amplitudes: np.ndarray,
    positions: np.ndarray,
    probe: np.ndarray,
    *,
    probe_mask: bool = False,
    gaussian_smoothing_sigma: float = 0.0,
    bad_pixels: np.ndarray | None = None,
) -> np.ndarray:
    """The common tilt ``tau`` (rad/px, float64 ``(x, y)``) that, multiplied into every object
    (``apply_tilt(objects, tau)``), makes them explain the measured patterns best (module docstring).

    ``objects`` ``[n, N, N, 1]``, ``amplitudes`` ``[n, N, N, C]`` (the groups' measured diffraction
    amplitudes, any common scale; intensity = amplitude squared), ``positions`` ``[n, 1, 2, C]``;
    pass the groups :func:`fit_groups` picks.  ``bad_pixels`` bool ``[N, N]``: left out.
    Deterministic (Nelder-Mead from zero with a fixed simplex, bounded to a pattern shift of
    ``MAX_TILT_PX_SHIFT`` pixels).
    """
    obj = np.asarray(objects)
    amp = np.asarray(amplitudes)
    if amp.ndim != 4 or amp.shape[0] != obj.shape[0] or amp.shape[1:3] != obj.shape[1:3]:
        raise ValueError(f"amplitudes must have shape [n, N, N, C] matching objects {obj.shape}, got {amp.shape}")
    if obj.shape[0] == 0:
        raise ValueError("no groups to fit a tilt to")
    pos = np.asarray(positions)
    if pos.shape[-1] != amp.shape[-1]:
        raise ValueError(f"positions have {pos.shape[-1]} channels but the patterns {amp.shape[-1]}")
    psi = np.concatenate([  # in batches: the reference's interpolation slows down superlinearly with size
        exit_waves(obj[k:k + _CHUNK_GROUPS], pos[k:k + _CHUNK_GROUPS], probe, probe_mask=probe_mask,
                   gaussian_smoothing_sigma=gaussian_smoothing_sigma) for k in range(0, len(obj), _CHUNK_GROUPS)])
    good = None if bad_pixels is None else ~np.asarray(bad_pixels, dtype=bool)
    likelihood = _TiltLikelihood(psi, np.asarray(amp, dtype=np.float64) ** 2, good)
    bound = 2 * np.pi * MAX_TILT_PX_SHIFT / obj.shape[1]
    step = bound / 8
    result = scipy.optimize.minimize(
        likelihood, x0=np.zeros(2), method="Nelder-Mead",
        bounds=[(-bound, bound)] * 2,
        options={"xatol": _XATOL, "fatol": np.inf, "initial_simplex": [[0.0, 0.0], [step, 0.0], [0.0, step]]},
    )
    return np.clip(_newton_polish(likelihood, np.asarray(result.x, dtype=np.float64)), -bound, bound)


def _newton_polish(f: _TiltLikelihood, x: np.ndarray, steps: int = 2) -> np.ndarray:
    """Newton steps on finite differences (spacing ``_NEWTON_H``) from the simplex's answer.

    Why: Nelder-Mead stops anywhere inside its last simplex (``_XATOL``), so two nearly equal inputs
    (the same network in two frameworks) could get tilts 2e-4 rad/px apart; the likelihood is smooth and
    nearly quadratic there, and Newton steps (evaluated in double precision) land on its minimum, a smooth
    function of the inputs: a 1e-6 relative change of the objects moves it by a few 1e-8 rad/px.  A
    step is taken only where the curvature is positive definite and the step is smaller than the
    simplex's tolerance times ten (else the simplex's answer stands).
    """
    h = _NEWTON_H
    f.exact = True  # float32 rounding would be noise on differences this small
    for _ in range(steps):
        f0 = f(x)
        fxp, fxm = f(x + (h, 0.0)), f(x - (h, 0.0))
        fyp, fym = f(x + (0.0, h)), f(x - (0.0, h))
        fpp = f(x + (h, h))
        grad = np.array([fxp - fxm, fyp - fym]) / (2 * h)
        hxy = (fpp - fxp - fyp + f0) / h**2
        hess = np.array([[fxp - 2 * f0 + fxm, hxy * h**2], [hxy * h**2, fyp - 2 * f0 + fym]]) / h**2
        if not np.all(np.isfinite(hess)) or np.linalg.det(hess) <= 0 or hess[0, 0] <= 0:
            return x
        step = np.linalg.solve(hess, grad)
        if np.max(np.abs(step)) > 10 * _XATOL:
            return x
        x = x - step
    return x

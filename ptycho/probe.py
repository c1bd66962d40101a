"""The probe as the workflows and Ptychodus see it: set, estimate and read the normalised probe.

``ptycho.probe.set_probe_guess(None, probe)`` is part of the Ptychodus contract.  The
normalised probe lives in ``params.cfg['probe']`` as complex64 ``[N, N, 1]`` (a NumPy
array: backend-neutral), normalised by ``params.cfg['probe_scale']`` with
:func:`ptycho.reference.physics.normalize_probe`.  Both backends read it from there
when they build a model.
"""

from __future__ import annotations

import numpy as np

from ptycho import params
from ptycho.errors import DataContractError
from ptycho.reference.physics import default_probe, normalize_probe, probe_disk_mask


def get_default_probe(N: int, fmt: str = "np") -> np.ndarray:
    """Upstream default probe (unnormalised), complex64 ``[N, N]``; ``fmt='tf'`` gives ``[N, N, 1]``."""
    probe = default_probe(N)
    return probe[..., None] if fmt == "tf" else probe


def get_probe_mask(N: int) -> np.ndarray:
    """The probe disk mask (radius ``N // 4``) as complex64 ``[N, N, 1]``."""
    return probe_disk_mask(N).astype(np.complex64)[..., None]


def _as_2d_probe(probe: np.ndarray, name: str = "probe") -> np.ndarray:
    p = np.asarray(probe)
    while p.ndim > 2 and p.shape[-1] == 1:
        p = p[..., 0]
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise DataContractError(
            f"expected a square probe [N, N] (or [N, N, 1]), got shape {np.shape(probe)}",
            field=name,
            fix="pass the complex probe guess of the dataset (probeGuess)",
        )
    if not np.all(np.isfinite(p)):
        raise DataContractError("probe contains NaN or inf", field=name, fix="repair the probe guess")
    return p


def set_probe(probe: np.ndarray) -> np.ndarray:
    """Normalise ``probe`` with ``params.cfg['probe_scale']`` and store it in ``params.cfg['probe']``.

    Returns the stored complex64 ``[N, N, 1]`` array.
    """
    p = normalize_probe(_as_2d_probe(probe), params.get("probe_scale"))
    stored = p[..., None].astype(np.complex64)
    params.cfg["probe"] = stored
    return stored


def estimate_probe(X: np.ndarray) -> np.ndarray:
    """Estimate a probe from diffraction amplitudes ``X`` ``[B, N, N, C]`` (upstream's recipe).

    The mean pattern is inverse-transformed (``fftshift(ifft2(ifftshift(.)))``); the
    second moment of its middle row about ``N/2`` gives the width ``sigma`` of a
    Gaussian ``exp(-r**2 / (2 sigma**2)) + 1e-9`` (``r`` from ``N/2``), which is cut
    to the probe disk and rescaled to the sum of the default probe.  Returns float
    ``[N, N]`` (unnormalised).
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 4:
        raise DataContractError(f"expected X of shape [B, N, N, C], got {X.shape}", field="X")
    N = X.shape[1]
    mean = X.mean(axis=(0, 3))
    real_space = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(mean))))
    row = real_space[N // 2]
    r = np.arange(N) - N / 2.0
    weight = row / row.sum()
    sigma2 = float(np.sum(weight * r**2))
    yy, xx = np.meshgrid(r, r, indexing="ij")
    gauss = np.exp(-(xx**2 + yy**2) / (2.0 * max(sigma2, 1e-12))) + 1e-9
    gauss *= probe_disk_mask(N)
    return gauss * (np.abs(default_probe(N)).sum() / gauss.sum())


def set_probe_guess(X_train: np.ndarray | None = None, probe_guess: np.ndarray | None = None) -> np.ndarray:
    """Set the model probe: from ``probe_guess`` if given, else estimated from ``X_train``.

    This is the call Ptychodus makes as ``set_probe_guess(None, probe)``.  Returns the
    stored normalised probe, complex64 ``[N, N, 1]``.
    """
    if probe_guess is not None:
        return set_probe(probe_guess)
    if X_train is None:
        raise ValueError("set_probe_guess needs a probe_guess or training data X_train to estimate one from")
    return set_probe(estimate_probe(X_train))


def get_probe(N: int | None = None) -> np.ndarray:
    """The normalised probe in ``params.cfg['probe']`` (complex64 ``[N, N, 1]``).

    Raises ``KeyError`` with the fix when no probe has been set, and
    ``DataContractError`` when its size differs from ``N``.
    """
    if "probe" not in params.cfg:
        raise KeyError("params.cfg['probe'] is not set; call ptycho.probe.set_probe_guess(None, probeGuess) first")
    probe = np.asarray(params.cfg["probe"])
    if N is not None and probe.shape[0] != N:
        raise DataContractError(
            f"the stored probe is {probe.shape[0]}x{probe.shape[1]} but the model has N={N}",
            field="probe",
            fix="call set_probe_guess with the probe of this dataset",
        )
    return probe

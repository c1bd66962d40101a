"""NumPy reference of the whole PtychoPINN forward pass and its loss.

Composes the intensity scaler, the CNN (:func:`ptycho.reference.network.cnn_forward`)
and the physics (:func:`ptycho.reference.physics.forward_physics`) exactly as the
backends' ``autoencoder`` does, returning every named intermediate so a backend can
be compared stage by stage::

    scaled_input   = x_scaled / exp(log_scale)                      [B, N, N, C]   float32
    encoded        = encoder(scaled_input)                           [B, 8, 8, 128*nfs]
    amp, phase     = decoder_amp(encoded), decoder_phase(encoded)    [B, N, N, Co]  float32
    decoder_object = amp * exp(i * phase)                            [B, N, N, Co]  complex64
    padded_object, trimmed_object, object_patches, illuminated, amplitude,
    pred_amplitude (= exp(log_scale) * amplitude), pred_intensity (= pred_amplitude**2)
                   = forward_physics(decoder_object, positions, probe, log_scale, ...)

The probe is ``probe.real + 1j * probe.imag`` and the log scale is
``intensity_scale.log_scale`` from the canonical weights (both already final:
no normalisation is applied here).  This module never imports tensorflow or torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ptycho.network_spec import NetworkSpec
from ptycho.reference.network import cnn_forward
from ptycho.reference.physics import forward_physics, mean_absolute_error, poisson_nll

__all__ = ["OUTPUT_KEYS", "forward", "losses", "probe_from_weights"]

#: Keys of the dict :func:`forward` returns, in pipeline order.
OUTPUT_KEYS: tuple[str, ...] = (
    "scaled_input",
    "encoded",
    "amp",
    "phase",
    "decoder_object",
    "padded_object",
    "trimmed_object",
    "object_patches",
    "illuminated",
    "amplitude",
    "pred_amplitude",
    "pred_intensity",
)


def probe_from_weights(weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """The complex probe ``probe.real + 1j * probe.imag`` as complex64 ``[N, N]``."""
    real = np.asarray(weights["probe.real"], dtype=np.float32)
    imag = np.asarray(weights["probe.imag"], dtype=np.float32)
    return (real + 1j * imag).astype(np.complex64)


def forward(
    x_scaled: np.ndarray,
    positions: np.ndarray,
    weights: Mapping[str, np.ndarray],
    spec: NetworkSpec,
    *,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
    P: int | None = None,
) -> dict[str, np.ndarray]:
    """The full PtychoPINN forward pass with every named intermediate.

    Args:
        x_scaled: float ``[B, N, N, C]``, the network input ``intensity_scale * X_full``.
        positions: float ``[B, 1, 2, C]``, ``coords_relative`` in ``(x, y)`` order.
        weights: canonical weights of ``spec`` (conv parameters, ``intensity_scale.log_scale``,
            ``probe.real``, ``probe.imag``).
        spec: the network description.
        probe_mask: multiply the exit wave by the probe disk mask (``probe.mask``).
        gaussian_smoothing_sigma: sigma of the 3x3 smoothing of the exit wave (0 = off).
        P: canvas size (default ``conventions.padded_size(N, gridsize)``).

    Returns:
        ``{key: array}`` for every key of :data:`OUTPUT_KEYS` (shapes and dtypes in the module
        docstring; the physics keys as documented by ``forward_physics``).
    """
    x_scaled = np.asarray(x_scaled)
    expected = (spec.N, spec.N, spec.C)
    if x_scaled.ndim != 4 or tuple(x_scaled.shape[1:]) != expected:
        raise ValueError(f"x_scaled must have shape [B, {spec.N}, {spec.N}, {spec.C}], got {x_scaled.shape}")
    log_scale = float(np.asarray(weights["intensity_scale.log_scale"]))
    scaled_input = (x_scaled.astype(np.float64) / math.exp(log_scale)).astype(np.float32)
    cnn = cnn_forward(scaled_input, weights, spec)
    physics = forward_physics(
        cnn["object_patches"],
        positions,
        probe_from_weights(weights),
        log_scale,
        N=spec.N,
        gridsize=spec.gridsize,
        object_big=spec.object_big,
        probe_mask=probe_mask,
        gaussian_smoothing_sigma=gaussian_smoothing_sigma,
        P=P,
    )
    out: dict[str, np.ndarray] = {
        "scaled_input": scaled_input,
        "encoded": cnn["encoded"],
        "amp": cnn["amp"],
        "phase": cnn["phase"],
        "decoder_object": cnn["object_patches"],
    }
    out.update(physics)
    return {k: out[k] for k in OUTPUT_KEYS}


def losses(
    outputs: Mapping[str, np.ndarray],
    x_scaled: np.ndarray,
    *,
    nll_weight: float,
    mae_weight: float,
    bad_pixels: np.ndarray | None = None,
) -> dict[str, float]:
    """The training losses of one batch (the real-space loss, weight 0 upstream, is not included).

    Targets: ``y_intensity = x_scaled**2`` and ``y_amp = x_scaled``.

    Returns:
        ``'poisson_nll'`` = ``poisson_nll(y_intensity, outputs['pred_intensity'])``
        (mean of ``y_pred - y_true*log(y_pred)`` over every element), ``'mae'`` =
        ``mean_absolute_error(y_amp, outputs['pred_amplitude'])`` and ``'total'`` =
        ``nll_weight * poisson_nll + mae_weight * mae``, as Python floats.  With ``bad_pixels``
        (bool ``[N, N]``) both means run over the good detector pixels only
        (``physics.masked_mean``).
    """
    y_amp = np.asarray(x_scaled, dtype=np.float64)
    y_intensity = y_amp**2
    nll = poisson_nll(y_intensity, np.asarray(outputs["pred_intensity"]), bad_pixels)
    mae = mean_absolute_error(y_amp, np.asarray(outputs["pred_amplitude"], dtype=np.float64), bad_pixels)
    return {"poisson_nll": nll, "mae": mae, "total": float(nll_weight) * nll + float(mae_weight) * mae}

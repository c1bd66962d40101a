"""Training losses of the TensorFlow PtychoPINN model (the PyTorch twin is :mod:`ptycho_torch.losses`).

Loss (means over ALL elements; with a detector ``bad_pixels`` mask the two diffraction terms
average over the good pixels only, ``physics.masked_mean`` = ``ptycho.reference.physics.masked_mean``)::

    total = nll_weight * poisson_nll(x_scaled**2, pred_intensity)
          + mae_weight * mean|x_scaled - pred_amplitude|
          + realspace_weight * realspace_mae_weight * mean| |trimmed_object| - target |

with ``target`` = ``Y_I`` channel 0 translated by ``REASSEMBLY_SHIFT_SIGN * coords_relative[..., 0]``
into the group-centroid frame (only evaluated when both real-space weights are > 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from ptycho.conventions import REASSEMBLY_SHIFT_SIGN
from ptycho.loss_weights import LossWeights
from ptycho_tf import physics

__all__ = ["LOSS_KEYS", "LossWeights", "compute_losses", "realspace_target"]

#: Keys of the loss dicts (per batch) and of the per-term history series.
LOSS_KEYS: tuple[str, ...] = ("poisson_nll", "mae", "realspace", "total")


def realspace_target(Y_I: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Ground-truth amplitude of channel 0 in the group-centroid frame, float32 ``[B, N, N, 1]``.

    ``translate(Y_I[..., 0], REASSEMBLY_SHIFT_SIGN * positions[:, 0, :, 0])``: the patch of
    the first scan position moved to where reassembly places it on the canvas centred at
    the group centroid.
    """
    shifts = REASSEMBLY_SHIFT_SIGN * np.asarray(positions, dtype=np.float32)[:, 0, :, 0]
    out = physics.translate(np.asarray(Y_I, dtype=np.float32)[..., 0], shifts)
    return np.asarray(out)[..., None]


def compute_losses(
    outputs: Sequence[tf.Tensor],
    x_scaled: tf.Tensor,
    weights: LossWeights,
    target: tf.Tensor | None = None,
    bad_pixels: tf.Tensor | np.ndarray | None = None,
) -> dict[str, tf.Tensor]:
    """Loss terms of one batch from the autoencoder outputs ``[trimmed_obj, pred_amp, pred_intensity]``.

    ``x_scaled`` float32 ``[B, N, N, C]`` is both the input and the amplitude target
    (``y_intensity = x_scaled**2``).  ``target`` is :func:`realspace_target` (needed only
    when ``weights.realspace_factor > 0``).  ``bad_pixels`` (bool ``[N, N]``, True = not
    measured) leaves those detector pixels out of the Poisson and MAE means.  Returns float32
    scalars for :data:`LOSS_KEYS`.
    """
    trimmed, pred_amp, pred_int = outputs
    x = tf.cast(x_scaled, tf.float32)
    nll = physics.poisson_nll(tf.square(x), pred_int, bad_pixels)
    mae = physics.mean_absolute_error(x, pred_amp, bad_pixels)
    if weights.realspace_factor > 0:
        if target is None:
            raise ValueError("the real-space loss needs the ground-truth target (realspace_target)")
        realspace = tf.reduce_mean(tf.abs(tf.abs(trimmed) - tf.cast(target, tf.float32)))
    else:
        realspace = tf.zeros((), tf.float32)
    total = weights.nll_weight * nll + weights.mae_weight * mae + weights.realspace_factor * realspace
    return {"poisson_nll": nll, "mae": mae, "realspace": realspace, "total": total}

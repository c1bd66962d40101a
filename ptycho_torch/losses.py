"""Training losses of PtychoPINN (the same terms and reductions as the Keras backend).

``total = nll_weight * poisson_nll(x_scaled**2, pred_intensity)
        + mae_weight * mae(x_scaled, pred_amplitude)
        + realspace_weight * realspace_mae_weight * mean(| |trimmed_object| - target |)``

Means run over ALL elements (batch, channels, pixels), as Keras reduces them; with a detector
``bad_pixels`` mask the two diffraction terms average over the good pixels only
(``physics.masked_mean`` = ``ptycho.reference.physics.masked_mean``).  A term whose weight
is 0 is reported (detached) but not added to ``total``, so its value (even NaN, e.g. the Poisson
term of a non-positive prediction) cannot reach the gradient.  ``target`` is the ground-truth
amplitude of channel 0 moved into the group-centroid frame (:func:`realspace_target`).

``torch_loss_mode`` (``TrainingConfig.torch_loss_mode``) selects the weights: ``'poisson'`` uses the
configured ``nll_weight`` / ``mae_weight``; ``'mae'`` trains on the amplitude MAE only
(``nll_weight = 0``, ``mae_weight`` = the configured value, or 1 when that is 0).  The metric
prefix (``poisson_train_loss`` / ``mae_train_loss``) follows the mode.
"""

from __future__ import annotations

import torch

from ptycho.conventions import REASSEMBLY_SHIFT_SIGN
from ptycho.loss_weights import LossWeights
from ptycho_torch import physics

__all__ = ["LossWeights", "compute_losses", "realspace_target"]


def realspace_target(y_amp: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Ground-truth amplitude of channel 0 in the centroid frame, ``[B, 1, N, N]``.

    ``translate(Y_I[:, 0], REASSEMBLY_SHIFT_SIGN * positions[:, 0, 0, :])``: the reassembly shift of
    channel 0, which places its patch where the trimmed object shows it.
    """
    shifted = physics.translate(y_amp[:, 0], REASSEMBLY_SHIFT_SIGN * positions[:, 0, 0, :].to(torch.float64))
    return shifted[:, None]


def compute_losses(
    outputs: dict[str, torch.Tensor],
    x_scaled: torch.Tensor,
    weights: LossWeights,
    *,
    target: torch.Tensor | None = None,
    bad_pixels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch.

    Args:
        outputs: :meth:`PtychoPINN.forward_intermediates` of the batch.
        x_scaled: the network input ``[B, C, N, N]`` (the amplitude target; its square is the
            intensity target).
        weights: :class:`LossWeights`.
        target: :func:`realspace_target` of the batch, required when ``weights.uses_realspace``.
        bad_pixels: bool ``[N, N]`` detector mask (True = not measured), left out of the Poisson
            and MAE means; None masks nothing.

    Returns:
        0-d float tensors ``'poisson_nll'``, ``'mae'``, ``'realspace'`` and ``'total'`` (only
        ``total`` carries gradients of the weighted terms).
    """
    x = x_scaled if x_scaled.dtype == torch.float64 else x_scaled.float()
    pred_int, pred_amp = outputs["pred_intensity"], outputs["pred_amplitude"]
    terms: dict[str, torch.Tensor] = {}
    total = x.new_zeros(())
    if weights.nll_weight != 0.0:
        terms["poisson_nll"] = physics.poisson_nll(x.square(), pred_int, bad_pixels)
        total = total + weights.nll_weight * terms["poisson_nll"]
    else:
        with torch.no_grad():
            terms["poisson_nll"] = physics.poisson_nll(x.square(), pred_int.detach(), bad_pixels)
    if weights.mae_weight != 0.0:
        terms["mae"] = physics.mean_absolute_error(x, pred_amp, bad_pixels)
        total = total + weights.mae_weight * terms["mae"]
    else:
        with torch.no_grad():
            terms["mae"] = physics.mean_absolute_error(x, pred_amp.detach(), bad_pixels)
    if weights.uses_realspace:
        if target is None:
            raise ValueError("realspace_weight * realspace_mae_weight != 0 needs the real-space target")
        terms["realspace"] = physics.mean_absolute_error(outputs["trimmed_object"].abs(), target.to(x.dtype))
        total = total + weights.realspace_weight * weights.realspace_mae_weight * terms["realspace"]
    else:
        terms["realspace"] = x.new_zeros(())
    terms["total"] = total
    return terms

"""The weights of the PtychoPINN loss terms, shared by both backends.

``total = nll_weight * poisson_nll + mae_weight * mae + realspace_weight * realspace_mae_weight *
realspace_mae`` (``specs/network.md``; the reference is ``ptycho.reference.model.losses``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ptycho.config.config import TORCH_LOSS_MODES

__all__ = ["LossWeights"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (``TrainingConfig`` fields of the same names) and the metric prefix ``mode``."""

    nll_weight: float = 1.0
    mae_weight: float = 0.0
    realspace_weight: float = 0.0
    realspace_mae_weight: float = 0.0
    mode: str = "poisson"

    @classmethod
    def from_config(cls, config: Any, *, torch_loss_mode: bool = False) -> LossWeights:
        """From a ``TrainingConfig`` (duck-typed; missing fields take the defaults above).

        ``torch_loss_mode`` values (``TORCH_LOSS_MODES``): 'poisson' keeps the weights, 'mae' trains on
        the MAE alone.

        With ``torch_loss_mode`` (the PyTorch backend) ``config.torch_loss_mode == 'mae'`` sets
        ``nll_weight = 0`` and ``mae_weight`` to its value, or 1 when it is 0.
        """
        get = lambda name, default: getattr(config, name, default)  # noqa: E731
        nll, mae = float(get("nll_weight", 1.0)), float(get("mae_weight", 0.0))
        mode = get("torch_loss_mode", "poisson") if torch_loss_mode else "poisson"
        if mode not in TORCH_LOSS_MODES:
            raise ValueError(f"torch_loss_mode={mode!r} is invalid: expected one of {TORCH_LOSS_MODES}")
        if mode == "mae":
            nll, mae = 0.0, (mae if mae > 0 else 1.0)
        return cls(nll, mae, float(get("realspace_weight", 0.0)), float(get("realspace_mae_weight", 0.0)), mode)

    @property
    def realspace_factor(self) -> float:
        """``realspace_weight * realspace_mae_weight``: the weight of the real-space MAE."""
        return self.realspace_weight * self.realspace_mae_weight

    @property
    def uses_realspace(self) -> bool:
        """True when the real-space term contributes (both of its weights non-zero)."""
        return self.realspace_factor != 0.0

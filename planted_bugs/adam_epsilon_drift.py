"""Mutant: the PyTorch backend's Adam uses ``eps = 1e-8`` (``torch.optim.Adam``'s default) instead of 1e-7.

The classic porting slip from Keras (epsilon 1e-7) to torch (1e-8).  ``ptycho_torch.optim.KerasAdam``
binds its default ``eps`` when the class is defined, so the replacement of ``KerasAdam.__init__`` fills
in 1e-8 whenever the caller leaves ``eps`` out, which every caller in the backend does.  The update
changes only where ``sqrt(v)`` is comparable to epsilon (gradients ~1e-7 and below): invisible in
``train_k_steps``, 10x in the ``optimizer`` stage's tiny-gradient case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch
from ptycho.conventions import ADAM_BETA1, ADAM_BETA2, LEARNING_RATE

TARGET = "ptycho_torch.optim:KerasAdam.__init__"
DRIFTED = 1e-8


def apply() -> Patch:
    """Make KerasAdam's default epsilon 1e-8."""

    def make(original: Callable[..., None]) -> Callable[..., None]:
        def __init__(self: Any, params: Any, lr: float = LEARNING_RATE,
                     betas: tuple[float, float] = (ADAM_BETA1, ADAM_BETA2), eps: float = DRIFTED) -> None:
            original(self, params, lr=lr, betas=betas, eps=eps)

        return __init__

    return patch(TARGET, make)

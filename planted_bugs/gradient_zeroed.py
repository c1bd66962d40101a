"""Mutant: one parameter's gradient never reaches the PyTorch report (all zeros on one side).

Upstream's detached-tensor class: a parameter used through ``.detach()`` (or re-created outside the
module) gets ``grad = None``, which ``ptycho_torch.canonical.grads_to_canonical`` reports as zeros.  The
replacement zeroes the gradient of :data:`ZEROED`, the phase head's last border convolution, the
trainable tensor with the smallest gradients (max |g| 20-70 over DEFAULT_GATE).  A symmetric scale
(relative to the larger side) fails it whatever its magnitude.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_torch.parity_api:grads_to_canonical"
ZEROED = "decoder_phase.head.border.block.conv1.kernel"


def apply() -> Patch:
    """Report an all-zero gradient for one PyTorch parameter."""
    import numpy as np

    def make(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def grads_to_canonical(model: Any) -> dict[str, Any]:
            out = original(model)
            if ZEROED in out:
                out[ZEROED] = np.zeros_like(out[ZEROED])
            return out

        return grads_to_canonical

    return patch(TARGET, make)

"""Mutant: the PyTorch stitcher receives the objects with their spatial axes swapped by a wrong permute.

Upstream TORCH-GS2-STITCH-001: channels-first ``(B, C, H, W)`` predictions were handed to a
stitcher that expects channels-last, its layout guard never fired, and the patches were tiled
wrongly.  The replacement of ``ptycho_torch.physics.reassemble_position`` (the torch stitcher)
first converts its input as if it were channels-last with ``permute(0, 3, 2, 1)``, which for
a ``[n, 1, N, N]`` tensor keeps the shape and the guard happy but transposes every object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_torch.physics:reassemble_position"


def apply() -> Patch:
    """Transpose every object on its way into the torch stitcher."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def reassemble_position(obj: Any, global_offsets: Any, M: int = 20, **kwargs: Any) -> Any:
            channels_last = obj.permute(0, 2, 3, 1)  # what the caller "had": [n, N, N, 1]
            return original(channels_last.permute(0, 3, 2, 1), global_offsets, M, **kwargs)

        return reassemble_position

    return patch(TARGET, make)

"""Mutant: the PyTorch bundle loader rebuilds the model with one input channel whatever the gridsize.

Upstream ``create_torch_model_with_gridsize`` left ``C_model=1`` (BUG-TF-001's torch twin, see
``specs/pytorch-backend.md``): gridsize > 1 bundles reloaded as 1-channel models, and the
non-strict load hid it.  Here ``ptycho_torch.model_manager.create_torch_model_with_gridsize``
(what ``load_torch_bundle`` calls) ignores its ``gridsize`` argument and builds ``C = 1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_torch.model_manager:create_torch_model_with_gridsize"


def apply() -> Patch:
    """Make the torch bundle loader drop the gridsize (so the channel count) of the saved model."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def create_torch_model_with_gridsize(gridsize: int, N: int, *args: Any, **kwargs: Any) -> Any:
            return original(1, N, *args, **kwargs)

        return create_torch_model_with_gridsize

    return patch(TARGET, make)

"""Mutant: the PyTorch model builder ignores the configured ``object_big`` and uses upstream torch's default.

Upstream GRIDLINES-OBJECT-BIG-001 / GRIDLINES-PROBE-BIG-001 / PORT-ABLATION-FWD-001 ("default
drift invalidates parity runs"): the torch side built models with its own ``object_big`` /
``probe_big`` defaults instead of TensorFlow's (upstream ``create_torch_model_with_gridsize``
fell back to ``object_big=False``; TensorFlow's default is ``True``).  The replacement of
``network_spec_from_config`` as bound in ``ptycho_torch.parity_api`` (what ``build`` turns the
``ModelConfig`` into a network with) overrides the config's ``object_big`` with
:data:`TORCH_DEFAULT_OBJECT_BIG`.  At gridsize 1 the parameters keep their shapes, so the
canonical weights load cleanly and the model silently zero-pads where it should reassemble
(normalising by the central mask).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_torch.parity_api:network_spec_from_config"
#: Upstream torch's fallback for ``object_big``.
TORCH_DEFAULT_OBJECT_BIG = False


def apply() -> Patch:
    """Make the torch builder use ``object_big=False`` whatever the config says."""

    def make(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def network_spec_from_config(model_config: Any) -> Any:
            return original(dataclasses.replace(model_config, object_big=TORCH_DEFAULT_OBJECT_BIG))

        return network_spec_from_config

    return patch(TARGET, make)

"""Mutant: the PyTorch config bridge drops ``n_filters_scale`` on its way to ``params.cfg``.

Upstream CONFIG-001 / MAINREF-CLI-001: a configured field did not reach ``params.cfg`` on the
torch path (factory/dataclass drift, the bridge reading undeclared fields), so the legacy
state silently held the default.  The replacement of ``to_model_config`` as bound in
``ptycho_torch.config_factory`` (what ``create_training_payload`` turns the torch configs into
the canonical ``ModelConfig`` with, before ``update_legacy_dict(params.cfg, ...)``) forgets
:data:`DROPPED`: the canonical config, and so ``params.cfg``, get the dataclass default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_torch.config_factory:to_model_config"
#: The ``ModelConfig`` field the mutated bridge does not copy.
DROPPED = "n_filters_scale"


def apply() -> Patch:
    """Make the torch bridge leave :data:`DROPPED` at its ``ModelConfig`` default."""
    from ptycho.config.config import ModelConfig

    default = getattr(ModelConfig(), DROPPED)

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def to_model_config(*args: Any, **kwargs: Any) -> Any:
            return dataclasses.replace(original(*args, **kwargs), **{DROPPED: default})

        return to_model_config

    return patch(TARGET, make)

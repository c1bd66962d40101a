"""Mutant: the TensorFlow canonical-weight loader is non-strict and silently skips a layer it cannot match.

Upstream (``ptycho_torch`` model manager, see ``specs/pytorch-backend.md``): weight loading
caught and ignored name/shape errors, so a reloaded model silently kept random weights for
the layers it could not match.  The replacement of ``ptycho_tf.canonical.set_canonical_weights``
(what ``PtychoPINNModels.set_canonical_weights`` calls: model build, ``set_weights`` and
``read_weights_into``) looks the first encoder convolution up under a stale Keras 2 name
(:data:`STALE_NAMES`), finds nothing and keeps that kernel's Keras initialisation, without
validating or reporting anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_tf.canonical:set_canonical_weights"
#: Canonical name -> the (wrong) key the non-strict loader looks it up under.
STALE_NAMES: dict[str, str] = {"encoder.block0.conv0.kernel": "conv2d/kernel"}


def apply() -> Patch:
    """Make TensorFlow weight loading non-strict (one layer keeps its initial weights)."""
    from ptycho_tf import canonical as tf_canonical

    def make(_original: Callable[..., Any]) -> Callable[..., Any]:
        def set_canonical_weights(model: Any, weights: Mapping[str, Any], spec: Any) -> None:
            for name, variable in tf_canonical._variables_by_canonical_name(model, spec).items():
                key = STALE_NAMES.get(name, name)
                if key in weights:
                    variable.assign(weights[key])

        return set_canonical_weights

    return patch(TARGET, make)

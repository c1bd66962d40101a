"""Mutant: the TensorFlow illumination ignores ``gaussian_smoothing_sigma``.

Upstream PORT-ABLATION-FWD-001 class ("ported arms silently used different defaults"): a
physics option set in the config never reaches the op.  The replacement of
``ptycho_tf.physics.illuminate`` (what the ``probe`` layer calls) always smooths with
``sigma = 0`` (no smoothing), whatever the layer passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_tf.physics:illuminate"


def apply() -> Patch:
    """Drop the smoothing sigma in the TensorFlow illumination."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def illuminate(patches: Any, probe: Any, *, probe_mask: bool, gaussian_smoothing_sigma: float) -> Any:
            del gaussian_smoothing_sigma
            return original(patches, probe, probe_mask=probe_mask, gaussian_smoothing_sigma=0.0)

        return illuminate

    return patch(TARGET, make)

"""Mutant: the TensorFlow physics reads the positions as ``(y, x)`` instead of ``(x, y)``.

Upstream REASSEMBLY-BRIDGE-001 / TORCH-GS2-POSITION-OFFSETS-001: ``coords_offsets`` were
stored ``(row, col)`` while the consumer expected ``(x, y)``, giving a blob lattice at
gridsize > 1.  ``ptycho_tf.physics.positions_to_flat`` (used by ``reassemble_patches`` and
``extract_patches``, so by the model's ``padded_obj`` and ``object_patches`` layers) returns
the offsets with the two coordinates swapped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_tf.physics:positions_to_flat"


def apply() -> Patch:
    """Swap x and y in every flat offset the TensorFlow physics ops use."""
    import tensorflow as tf

    def make(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def positions_to_flat(p: Any) -> Any:
            return tf.reverse(original(p), axis=[1])

        return positions_to_flat

    return patch(TARGET, make)

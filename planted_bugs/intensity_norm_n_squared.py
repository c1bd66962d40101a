"""Mutant: the TensorFlow ``normalize_x_full`` scales patterns to mean energy ``N**2`` instead of ``(N/2)**2``.

Upstream NORMALIZATION-001 / quirk 6 of the TensorFlow reference: TensorFlow normalises
``X_full`` to ``(N/2)**2`` per pattern while the PyTorch port used ``N**2`` (a factor 2 in
amplitude, 4 in photon counts).  The name ``x_full_target_energy`` bound in
``ptycho_tf.physics`` (read by ``tf_helper.normalize_x_full`` at call time) returns ``N**2``;
``ptycho.conventions`` itself is untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_tf.physics:x_full_target_energy"


def apply() -> Patch:
    """Use the ``N**2`` target energy in the TensorFlow normalisation."""

    def make(_original: Callable[[int], float]) -> Callable[[int], float]:
        def x_full_target_energy(N: int) -> float:
            return float(N) ** 2

        return x_full_target_energy

    return patch(TARGET, make)

"""Mutant: the TensorFlow diffraction applies ``tf.signal.ifftshift`` to the exit wave before the FFT.

Conventions (``FFT_IFFTSHIFT_BEFORE = False``; quirk 7 of the TensorFlow reference): no
ifftshift before the FFT.  A port adding the "centred FFT" idiom ``fftshift(fft2(ifftshift(psi)))``
with the spatial axes only would be an *equivalent* mutant for even ``N`` (a circular shift
multiplies the spectrum by a phase ramp, so ``|F|`` is unchanged; ``tests/conformance/
test_mutants.py`` shows it), so no amplitude comparison can or should catch it.  The bug that
does change results is the one such a port makes by calling ``ifftshift`` with its default
``axes=None``: it shifts every axis, so on the ``[B, C, N, N]`` stack inside
``tf_helper._diffract_last2`` sample ``b`` / channel ``c`` is diffracted from the exit wave
of sample ``(b + B//2) % B`` / channel ``(c + C//2) % C``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_tf.physics:_diffract_last2"


def apply() -> Patch:
    """Insert ``tf.signal.ifftshift(psi)`` (all axes) in front of the TensorFlow FFT."""
    import tensorflow as tf

    def make(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def _diffract_last2(psi: Any) -> Any:
            return original(tf.signal.ifftshift(psi))

        return _diffract_last2

    return patch(TARGET, make)

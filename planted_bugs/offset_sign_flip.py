"""Mutant: the PyTorch reassembly merges patches at ``+coords_relative`` instead of ``-coords_relative``.

Upstream TORCH-REASSEMBLY-SIGN-001: torch merged by ``+offset`` where TensorFlow uses
``-offset``; merge -> extract round trips hide it and it is a no-op at gridsize 1 with
centred offsets.  Here ``ptycho_torch.physics`` gets the opposite ``REASSEMBLY_SHIFT_SIGN``
(the shared ``ptycho.conventions`` value, which the reference and TensorFlow read, is untouched).
"""

from __future__ import annotations

from planted_bugs._patch import Patch, patch

#: The name ``ptycho_torch.physics.reassemble_patches`` reads at call time.
TARGET = "ptycho_torch.physics:REASSEMBLY_SHIFT_SIGN"


def apply() -> Patch:
    """Flip the reassembly shift sign of the torch backend."""
    return patch(TARGET, lambda sign: -sign)

"""Mutant: the TensorFlow backend's Adam uses ``beta_2 = 0.99`` instead of the shared 0.999.

A constant that drifts in one backend's copy (upstream's two optimisers were configured in two places):
``ptycho_tf.optim.make_optimizer`` reads ``ADAM_BETA2`` from its module, so replacing that module
constant changes every optimiser the TensorFlow backend builds (the harness's training steps, the
optimizer stage and the workflow).  ``train_k_steps`` hides it under its one-learning-rate tolerance; the
``optimizer`` stage sees the second-moment decay from the second step on.
"""

from __future__ import annotations

from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_tf.optim:ADAM_BETA2"
DRIFTED = 0.99


def apply() -> Patch:
    """Set the TensorFlow backend's Adam beta_2 to 0.99."""

    def make(_original: Any) -> float:
        return DRIFTED

    return patch(TARGET, make)

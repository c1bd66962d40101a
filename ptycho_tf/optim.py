"""The optimizer of the TensorFlow backend: Keras' Adam with the shared constants.

Keras' update formula is the reference (:func:`ptycho.reference.optim.adam_step`); the PyTorch
twin :mod:`ptycho_torch.optim` reimplements it.  Learning rate, ``beta_1``, ``beta_2`` and
``epsilon`` come from :mod:`ptycho.conventions` only.
"""

from __future__ import annotations

import keras

from ptycho.conventions import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, LEARNING_RATE

__all__ = ["make_optimizer"]


def make_optimizer(lr: float = LEARNING_RATE) -> keras.optimizers.Optimizer:
    """Adam with the shared hyper-parameters of :mod:`ptycho.conventions`."""
    return keras.optimizers.Adam(learning_rate=lr, beta_1=ADAM_BETA1, beta_2=ADAM_BETA2, epsilon=ADAM_EPSILON)

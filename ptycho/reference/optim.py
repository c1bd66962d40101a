"""NumPy reference of the optimiser update both backends implement.

The update is Keras 3's Adam (``keras.optimizers.Adam``), written out so the PyTorch
backend can be tested against it step by step::

    t   = step + 1
    m   = beta1 * m + (1 - beta1) * g
    v   = beta2 * v + (1 - beta2) * g**2
    a   = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
    w   = w - a * m / (sqrt(v) + epsilon)

This differs from ``torch.optim.Adam``, which adds ``epsilon`` to ``sqrt(v / (1 - beta2**t))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ptycho.conventions import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, LEARNING_RATE


@dataclass
class AdamState:
    """Per-parameter first and second moments and the number of completed steps."""

    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)
    step: int = 0


def adam_step(
    weights: dict[str, np.ndarray],
    grads: dict[str, np.ndarray],
    state: AdamState,
    *,
    lr: float = LEARNING_RATE,
    beta1: float = ADAM_BETA1,
    beta2: float = ADAM_BETA2,
    epsilon: float = ADAM_EPSILON,
) -> dict[str, np.ndarray]:
    """Return the weights after one Adam step (float64 arithmetic); ``state`` is updated in place.

    Parameters absent from ``grads`` (frozen ones) are returned unchanged and keep no moments.
    """
    t = state.step + 1
    alpha = lr * np.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
    out = {}
    for name, w in weights.items():
        if name not in grads:
            out[name] = w
            continue
        g = np.asarray(grads[name], dtype=np.float64)
        m = beta1 * state.m.get(name, np.zeros_like(g)) + (1.0 - beta1) * g
        v = beta2 * state.v.get(name, np.zeros_like(g)) + (1.0 - beta2) * g * g
        state.m[name], state.v[name] = m, v
        out[name] = (np.asarray(w, dtype=np.float64) - alpha * m / (np.sqrt(v) + epsilon)).astype(w.dtype)
    state.step = t
    return out

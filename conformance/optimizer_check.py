"""The ``optimizer`` stage's inputs: fixed gradients that each side's optimizer steps on alone.

``train_k_steps`` checks Adam only through a whole training step, where float32 noise in the
gradients legitimately moves the weights by up to ~lr; a drifted Adam constant (beta1, beta2,
epsilon, the bias correction, the learning rate reaching the optimizer) hides under that
tolerance.  Here every side steps its own optimizer on *identical* gradients from zero weights
(the TensorFlow backend: ``ptycho_tf.optim.make_optimizer``; PyTorch: ``ptycho_torch.optim.KerasAdam``;
the reference: ``ptycho.reference.optim.adam_step``), so the weights after each step are the
cumulative updates, compared at float32 precision.

Cases (:data:`CASES`), each :data:`N_STEPS` steps of fresh gradients (seeded, see :func:`optimizer_case`):

* ``tiny``: ``|g| ~ 1e-8``, where ``epsilon`` dominates ``sqrt(v)`` (an epsilon drift changes the step 10x);
* ``large``: ``|g| ~ 1e3``, where the update is ``~ lr * m_hat / sqrt(v_hat)`` (beta1/beta2 drift shows
  from the second step on, since the gradients change from step to step);
* ``mixed``: magnitudes from 1e-9 to 1e3 within one tensor (both regimes and the crossover).

The learning rates are the scenario's schedule (``ptycho.training_plan.LearningRateSchedule`` from its
training config and ``Scenario.lr``), one epoch per step, then halved from step 3 on, so a rate that
does not reach the optimizer between steps is seen too.  This module imports neither tensorflow nor torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from conformance.scenarios import Scenario

__all__ = ["CASES", "N_STEPS", "SHAPES", "optimizer_case", "reference_steps"]

#: Gradient regimes of the check.
CASES: tuple[str, ...] = ("tiny", "large", "mixed")
#: Optimizer steps per case.
N_STEPS = 5
#: The weights stepped in every case (two tensors, so per-parameter state is exercised).
SHAPES: dict[str, tuple[int, ...]] = {"kernel": (3, 3, 2, 4), "bias": (16,)}
_SEED = 20260  # fixed: the gradients are the same for every scenario and every side


def _learning_rates(scenario: Scenario) -> list[float]:
    from ptycho.training_plan import LearningRateSchedule

    schedule = LearningRateSchedule.from_config(scenario.training_config(), lr=scenario.lr)
    lrs = []
    for step in range(N_STEPS):
        lr = schedule.lr_for_epoch(step)
        lrs.append(float(lr) * (0.5 if step >= 3 else 1.0))
        schedule.record(1.0)  # a flat loss: ReduceLROnPlateau may reduce, the others ignore it
    return lrs


def optimizer_case(scenario: Scenario, case: str) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]],
                                                            list[float]]:
    """``(weights, grads, lrs)`` of ``case``: zero float32 weights of :data:`SHAPES`, ``N_STEPS`` gradient
    dicts (float32, the same bytes on every side: ``numpy.random.default_rng`` is platform-stable) and
    the learning rate of each step."""
    if case not in CASES:
        raise ValueError(f"unknown optimizer case {case!r}; expected one of {CASES}")
    rng = np.random.default_rng([_SEED, CASES.index(case)])
    weights = {n: np.zeros(s, np.float32) for n, s in SHAPES.items()}
    grads = []
    for _ in range(N_STEPS):
        step = {}
        for n, s in SHAPES.items():
            g = rng.standard_normal(s)
            if case == "tiny":
                g *= 1e-8
            elif case == "large":
                g *= 1e3
            else:
                g *= 10.0 ** rng.uniform(-9.0, 3.0, size=s)
            step[n] = g.astype(np.float32)
        grads.append(step)
    return weights, grads, _learning_rates(scenario)


def reference_steps(weights: Mapping[str, np.ndarray], grads: Sequence[Mapping[str, np.ndarray]],
                    lrs: Sequence[float]) -> dict[str, np.ndarray]:
    """The reference formula (``ptycho.reference.optim.adam_step``, float64 arithmetic, weights rounded to
    float32 after each step): ``{name: float32 [len(grads), *shape]}``, the weights after each step."""
    from ptycho.reference.optim import AdamState, adam_step

    state = AdamState()
    w = {n: np.asarray(v, np.float32) for n, v in weights.items()}
    out: dict[str, list[np.ndarray]] = {n: [] for n in w}
    for g, lr in zip(grads, lrs, strict=True):
        w = adam_step(w, {n: np.asarray(v, np.float64) for n, v in g.items()}, state, lr=float(lr))
        for n in out:
            out[n].append(w[n])
    return {n: np.stack(v).astype(np.float32) for n, v in out.items()}

"""Adam with Keras' update formula, so both backends take the same optimisation steps.

``torch.optim.Adam`` adds ``epsilon`` to ``sqrt(v_hat)`` (the bias-corrected second moment);
Keras 3 adds it to ``sqrt(v)`` and folds both bias corrections into the step size.  For the same
gradients the two differ whenever ``sqrt(v)`` is comparable to ``epsilon``, which is common for
this network.  :class:`KerasAdam` implements ``ptycho.reference.optim.adam_step`` exactly::

    t = step + 1
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g**2
    a = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
    w = w - a * m / (sqrt(v) + epsilon)

Defaults come from :mod:`ptycho.conventions` (``LEARNING_RATE``, ``ADAM_BETA1``, ``ADAM_BETA2``,
``ADAM_EPSILON``).  The arithmetic runs in the parameter dtype (float32), as Keras does; the
scalar step size is computed in float64.  Tested step by step against the reference in
``tests/torch/test_optim.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ptycho.conventions import ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, LEARNING_RATE

__all__ = ["KerasAdam"]


class KerasAdam(torch.optim.Optimizer):
    """Adam (Keras 3 formula).  Frozen parameters (``requires_grad=False`` or no gradient) are skipped.

    Args:
        params: parameters or parameter groups.
        lr: learning rate (may be changed per group between steps, e.g. by a schedule).
        betas: ``(beta1, beta2)``.
        eps: added to ``sqrt(v)``.

    State per parameter: ``step`` (int), ``m``, ``v`` (tensors like the parameter).  A parameter's
    ``step`` counts its own updates, so a parameter that starts receiving gradients later is
    bias-corrected from its first update (as Keras, whose iteration counter is per optimizer but
    whose moments start at zero; the two agree whenever every trainable parameter gets a gradient
    at every step, which is the case in PtychoPINN).
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        lr: float = LEARNING_RATE,
        betas: tuple[float, float] = (ADAM_BETA1, ADAM_BETA2),
        eps: float = ADAM_EPSILON,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr={lr!r} is invalid: expected > 0")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas={betas!r} are invalid: expected each in [0, 1)")
        if not eps >= 0:
            raise ValueError(f"eps={eps!r} is invalid: expected >= 0")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient; returns ``closure()`` if given.

        Parameters that share a step count are updated together with ``torch._foreach_*`` kernels
        (one launch per operation for the whole group instead of one per parameter).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = float(group["lr"]), float(group["eps"])
            by_step: dict[tuple[int, torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("KerasAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                by_step.setdefault((state["step"], p.device, p.dtype), []).append(p)
            for (t, _device, _dtype), ps in by_step.items():
                grads = [p.grad for p in ps]
                ms = [self.state[p]["m"] for p in ps]
                vs = [self.state[p]["v"] for p in ps]
                torch._foreach_mul_(ms, beta1)
                torch._foreach_add_(ms, grads, alpha=1.0 - beta1)
                torch._foreach_mul_(vs, beta2)
                torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
                denom = torch._foreach_sqrt(vs)
                torch._foreach_add_(denom, eps)
                alpha = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                torch._foreach_addcdiv_(ps, ms, denom, value=-alpha)
        return loss

"""Backend-neutral training plan: validation split, batch order and learning-rate schedule.

Both backends draw their batches and learning rates from here, so for the same
config and seed they see the same groups in the same order and step with the
same learning rate.  Nothing here touches numpy's global random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ptycho.conventions import LEARNING_RATE, VALIDATION_FRACTION

SCHEDULERS: tuple[str, ...] = ("Default", "Exponential", "WarmupCosine", "ReduceLROnPlateau")
#: Per-epoch decay of the 'Exponential' schedule.
EXPONENTIAL_GAMMA: float = 0.95


def split_train_val(n: int, val_fraction: float = VALIDATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation groups.

    The validation set is the *last* ``floor(n * val_fraction)`` groups (Keras'
    ``validation_split`` rule); with fewer than ``1 / val_fraction`` groups there is
    no validation set.  Returns two int64 arrays.
    """
    if n < 1:
        raise ValueError(f"cannot split {n} groups: need at least one")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} is invalid: expected 0 <= val_fraction < 1")
    n_val = int(math.floor(n * val_fraction))
    idx = np.arange(n, dtype=np.int64)
    return idx[: n - n_val], idx[n - n_val :]


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Order in which ``n`` training groups are visited in ``epoch`` (0-based).

    A permutation drawn from ``np.random.default_rng([seed, epoch])`` when shuffling,
    else ``arange(n)``: different every epoch, identical for every backend.
    """
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int64)


def batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split an index order into consecutive batches; the last one may be smaller."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid: expected a positive integer")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class LearningRateSchedule:
    """Learning rate per epoch, from a ``TrainingConfig``-like set of fields.

    ``Default`` keeps the rate constant; ``Exponential`` multiplies it by
    ``EXPONENTIAL_GAMMA`` each epoch; ``WarmupCosine`` ramps linearly over
    ``warmup_epochs`` then follows a cosine down to ``min_ratio * lr`` at the last
    epoch; ``ReduceLROnPlateau`` multiplies by ``plateau_factor`` once the monitored
    loss has not improved by more than ``plateau_threshold`` (relative) for
    ``plateau_patience`` epochs, never below ``plateau_min_lr``.  Call
    :meth:`lr_for_epoch` at the start of every epoch, after :meth:`record` has been
    given the previous epoch's monitored loss.
    """

    scheduler: str = "Default"
    lr: float = LEARNING_RATE
    nepochs: int = 1
    warmup_epochs: int = 0
    min_ratio: float = 0.1
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    plateau_min_lr: float = 5e-5
    plateau_threshold: float = 0.0
    _history: list[float] = field(default_factory=list, repr=False)
    _current: float | None = field(default=None, repr=False)
    _best: float = field(default=math.inf, repr=False)
    _bad_epochs: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={self.scheduler!r} is invalid: expected one of {SCHEDULERS}")
        if not self.lr > 0:
            raise ValueError(f"learning rate {self.lr!r} is invalid: expected > 0")

    @classmethod
    def from_config(cls, config: object, *, lr: float | None = None, scheduler: str | None = None):
        """Build from a ``TrainingConfig`` (duck-typed); ``lr``/``scheduler`` override its fields."""
        get = lambda name, default: getattr(config, name, default)  # noqa: E731
        return cls(
            scheduler=scheduler or get("scheduler", "Default"),
            lr=float(lr if lr is not None else get("learning_rate", LEARNING_RATE)),
            nepochs=int(get("nepochs", 1)),
            warmup_epochs=int(get("lr_warmup_epochs", 0)),
            min_ratio=float(get("lr_min_ratio", 0.1)),
            plateau_factor=float(get("plateau_factor", 0.5)),
            plateau_patience=int(get("plateau_patience", 2)),
            plateau_min_lr=float(get("plateau_min_lr", 5e-5)),
            plateau_threshold=float(get("plateau_threshold", 0.0)),
        )

    def record(self, monitored_loss: float) -> None:
        """Feed the monitored loss of the epoch that just ended (validation loss if any)."""
        self._history.append(float(monitored_loss))
        if self.scheduler != "ReduceLROnPlateau":
            return
        current = self._current if self._current is not None else self.lr
        if monitored_loss < self._best * (1.0 - self.plateau_threshold) or self._best == math.inf:
            self._best = float(monitored_loss)
            self._bad_epochs = 0
        else:
            self._bad_epochs += 1
            if self._bad_epochs >= self.plateau_patience:
                self._current = max(current * self.plateau_factor, self.plateau_min_lr)
                self._bad_epochs = 0

    def state_dict(self) -> dict[str, object]:
        """The schedule's running state (plain JSON-able data) for a resumable checkpoint."""
        return {
            "history": [float(v) for v in self._history],
            "current": None if self._current is None else float(self._current),
            "best": None if self._best == math.inf else float(self._best),
            "bad_epochs": int(self._bad_epochs),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned (the configured fields are not part of it).

        Raises ValueError for a malformed state (a checkpoint is untrusted input).
        """
        try:
            history = [float(v) for v in state["history"]]  # type: ignore[union-attr]
            current = state["current"]
            best = state["best"]
            bad = state["bad_epochs"]
            if not isinstance(bad, int) or isinstance(bad, bool) or bad < 0:
                raise TypeError("bad_epochs")
            current_f = None if current is None else float(current)  # type: ignore[arg-type]
            best_f = math.inf if best is None else float(best)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed learning-rate schedule state ({exc}): {state!r}") from None
        self._history, self._current, self._best, self._bad_epochs = history, current_f, best_f, bad

    def lr_for_epoch(self, epoch: int) -> float:
        """Learning rate to use throughout ``epoch`` (0-based)."""
        if self.scheduler == "Default":
            return self.lr
        if self.scheduler == "Exponential":
            return self.lr * EXPONENTIAL_GAMMA**epoch
        if self.scheduler == "WarmupCosine":
            if epoch < self.warmup_epochs:
                return self.lr * (epoch + 1) / (self.warmup_epochs + 1)
            span = max(self.nepochs - 1 - self.warmup_epochs, 1)
            progress = min((epoch - self.warmup_epochs) / span, 1.0)
            floor = self.min_ratio * self.lr
            return floor + 0.5 * (self.lr - floor) * (1.0 + math.cos(math.pi * progress))
        return self._current if self._current is not None else self.lr

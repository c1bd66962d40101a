"""Device, precision and speed options of the PyTorch backend (runtime only, never in params.cfg).

* :func:`resolve_accelerator` turns ``PyTorchExecutionConfig.accelerator`` (``'auto'``, ``'cpu'``,
  ``'gpu'``, ``'cuda'``, ``'mps'``) into the accelerator that exists on this machine;
  :func:`device_for` gives the matching ``torch.device`` (inference after ``fit()`` uses it
  explicitly instead of trusting where Lightning left the parameters).
* :class:`RuntimeOptions` holds the knobs the execution config has no field for: channels-last
  memory format and ``torch.compile`` of the CNN.  ``None`` means automatic: both on for CUDA;
  on CPU channels-last is on (oneDNN's NHWC convolutions are faster here, see
  ``benchmarks/bench_step_time.py``) and compile is off (its compile time is not repaid by
  short CPU runs).
* :func:`autocast_for` is the inference counterpart of Lightning's ``precision`` flag.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from ptycho.errors import ConfigError

__all__ = ["RuntimeOptions", "autocast_for", "device_for", "resolve_accelerator"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_accelerator(accelerator: str) -> str:
    """``'cpu'``, ``'cuda'`` or ``'mps'`` for a requested accelerator.

    ``'auto'`` picks CUDA when available, else MPS, else CPU; ``'gpu'`` means CUDA (or MPS when that
    is the only GPU).  Requesting a GPU that is not present raises ``ConfigError`` with the fix.
    """
    acc = str(accelerator).lower()
    if acc == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if acc == "cpu":
        return "cpu"
    if acc in ("gpu", "cuda"):
        if torch.cuda.is_available():
            return "cuda"
        if acc == "gpu" and _mps_available():
            return "mps"
        raise ConfigError("accelerator", accelerator, "an accelerator present on this machine",
                          fix="no CUDA device is available; use --accelerator cpu (or auto)")
    if acc == "mps":
        if _mps_available():
            return "mps"
        raise ConfigError("accelerator", accelerator, "an accelerator present on this machine",
                          fix="MPS is not available; use --accelerator cpu (or auto)")
    raise ConfigError("accelerator", accelerator, "one of 'auto', 'cpu', 'gpu', 'cuda', 'mps'")


def device_for(accelerator: str) -> torch.device:
    """The ``torch.device`` of a (resolved or unresolved) accelerator name."""
    return torch.device(resolve_accelerator(accelerator))


@dataclass(frozen=True)
class RuntimeOptions:
    """Speed options of the torch model (None = automatic for the device)."""

    channels_last: bool | None = None
    compile: bool | None = None

    def resolved(self, device_type: str) -> tuple[bool, bool]:
        """``(channels_last, compile)`` for ``device_type`` ('cpu', 'cuda', 'mps')."""
        channels_last = True if self.channels_last is None else bool(self.channels_last)
        compile_ = (device_type == "cuda") if self.compile is None else bool(self.compile)
        return channels_last, compile_


def autocast_for(device_type: str, precision: str) -> AbstractContextManager:
    """Autocast context matching a Lightning precision string ('32-true', '16-mixed', 'bf16-mixed')."""
    if precision == "bf16-mixed":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return nullcontext()

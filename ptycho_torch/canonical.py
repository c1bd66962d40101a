"""Native <-> canonical weights of the torch model (``ptycho.canonical_weights`` format).

One mapping, tested by round trip (``tests/torch/test_torch_model.py``):

==================================== ========================================= =================
canonical name (HWIO kernels)        :class:`~ptycho_torch.model.PtychoPINN`   conversion
==================================== ========================================= =================
``<conv layer>.kernel``              ``cnn.<conv layer>.weight`` (OIHW)       ``kernel_hwio_to_oihw``
``<conv layer>.bias``                ``cnn.<conv layer>.bias``                 none
``intensity_scale.log_scale`` (0-d)  ``log_scale``                             none
``probe.real`` / ``probe.imag``      ``probe_real`` / ``probe_imag``           none
==================================== ========================================= =================

Loading is strict: the weight dict is checked against the model's spec with
``ptycho.canonical_weights.validate_canonical_weights`` (missing, extra, mis-shaped or
non-finite parameters raise ``CanonicalWeightsError``) before anything is copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ptycho import conventions
from ptycho.canonical_weights import (
    init_canonical_weights,
    read_canonical_weights,
    validate_canonical_weights,
    write_canonical_weights,
)
from ptycho.network_spec import NetworkSpec, kernel_hwio_to_oihw, kernel_oihw_to_hwio
from ptycho.reference.physics import default_probe, normalize_probe

if TYPE_CHECKING:  # the model module builds models with this one (no run-time import back)
    from ptycho_torch.model import PtychoPINN

__all__ = [
    "canonical_to_native",
    "export_canonical",
    "grads_to_canonical",
    "init_weights",
    "initial_intensity_scale",
    "initial_probe",
    "load_canonical",
    "native_name",
    "read_into",
    "write_from",
]

_PHYSICS = {
    "intensity_scale.log_scale": "log_scale",
    "probe.real": "probe_real",
    "probe.imag": "probe_imag",
}


def native_name(canonical: str) -> str:
    """The ``PtychoPINN`` state-dict key of a canonical parameter name."""
    if canonical in _PHYSICS:
        return _PHYSICS[canonical]
    layer, role = canonical.rsplit(".", 1)
    if role == "kernel":
        return f"cnn.{layer}.weight"
    if role == "bias":
        return f"cnn.{layer}.bias"
    raise KeyError(f"{canonical!r} is not a canonical parameter name")


def _to_canonical_array(name: str, tensor: torch.Tensor) -> np.ndarray:
    arr = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    if name.endswith(".kernel"):
        return kernel_oihw_to_hwio(arr)
    return np.array(arr, dtype=np.float32)


def _parameters(model: PtychoPINN) -> dict[str, torch.nn.Parameter]:
    return dict(model.named_parameters())


def export_canonical(model: PtychoPINN) -> dict[str, np.ndarray]:
    """Every parameter of ``model`` as ``{canonical name: float32 ndarray}`` in spec order."""
    params = _parameters(model)
    return {p.name: _to_canonical_array(p.name, params[native_name(p.name)]) for p in model.spec.params()}


def canonical_to_native(weights: Mapping[str, np.ndarray], spec: NetworkSpec) -> dict[str, torch.Tensor]:
    """Validate canonical ``weights`` against ``spec`` and convert them to native tensors (OIHW kernels)."""
    checked = validate_canonical_weights(weights, spec)
    out: dict[str, torch.Tensor] = {}
    for name, arr in checked.items():
        native = kernel_hwio_to_oihw(arr) if name.endswith(".kernel") else arr
        out[native_name(name)] = torch.from_numpy(np.array(native, dtype=np.float32, order="C"))
    return out


@torch.no_grad()
def load_canonical(model: PtychoPINN, weights: Mapping[str, np.ndarray]) -> PtychoPINN:
    """Copy canonical ``weights`` into ``model`` (strict: every parameter, exact shapes). Returns ``model``."""
    native = canonical_to_native(weights, model.spec)
    params = _parameters(model)
    if set(native) != set(params):  # guards the mapping itself; validate_canonical_weights checked the names
        raise RuntimeError(f"native/canonical mismatch: {sorted(set(native) ^ set(params))}")
    for key, value in native.items():
        p = params[key]
        p.copy_(value.to(device=p.device, dtype=p.dtype))
    return model


def grads_to_canonical(model: PtychoPINN) -> dict[str, np.ndarray]:
    """Gradients of the trainable parameters by canonical name (kernels HWIO); frozen ones are omitted."""
    params = _parameters(model)
    out: dict[str, np.ndarray] = {}
    for p in model.spec.params():
        t = params[native_name(p.name)]
        if t.requires_grad:
            g = t.grad if t.grad is not None else torch.zeros_like(t)
            out[p.name] = _to_canonical_array(p.name, g)
    return out


def init_weights(model: PtychoPINN, *, seed: int, log_scale: float, probe: np.ndarray) -> PtychoPINN:
    """Load ``init_canonical_weights(spec, seed=, log_scale=, probe=)`` (glorot-uniform, zero biases)."""
    return load_canonical(model, init_canonical_weights(model.spec, seed=seed, log_scale=log_scale, probe=probe))


def write_from(model: PtychoPINN, path: str | PathLike, *, metadata: Mapping | None = None) -> Path:
    """Write ``model``'s weights to a canonical HDF5 file (atomic), ``backend='pytorch'``."""
    return write_canonical_weights(path, export_canonical(model), model.spec, backend="pytorch", metadata=metadata)


def read_into(model: PtychoPINN, path: str | PathLike) -> PtychoPINN:
    """Load a canonical HDF5 file into ``model`` (its configuration must equal the model's spec)."""
    weights, _attrs = read_canonical_weights(path, model.spec)
    return load_canonical(model, weights)


def initial_probe(model_config: object, stored: np.ndarray | None = None) -> np.ndarray:
    """The probe a new model starts from, complex64 ``[N, N]``.

    ``stored`` (normally ``params.cfg['probe']``, ``[N, N]`` or ``[N, N, 1]``) when it has this
    ``N``; otherwise the normalised default probe (``normalize_probe(default_probe(N),
    model_config.probe_scale)``), as the TensorFlow backend does.
    """
    N = int(model_config.N)
    if stored is not None:
        probe = np.asarray(stored)
        probe = probe[..., 0] if probe.ndim == 3 else probe
        if probe.shape == (N, N):
            return probe.astype(np.complex64)
    return normalize_probe(default_probe(N), float(model_config.probe_scale))


def initial_intensity_scale(training_config: object, stored: float | None = None) -> float:
    """``stored`` (normally ``params.cfg['intensity_scale']``) when positive, else ``sqrt(nphotons)/(N/2)``."""
    if stored is not None and float(stored) > 0:
        return float(stored)
    return conventions.intensity_scale(float(training_config.nphotons), int(training_config.model.N))

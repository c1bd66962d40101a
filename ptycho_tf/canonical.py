"""Native <-> canonical weights of the Keras model (``ptycho.canonical_weights`` format).

Every Keras variable's path ``<layer>/<weight>`` maps to the canonical name
``<layer>.<weight>`` (``encoder.block0.conv0/kernel`` -> ``encoder.block0.conv0.kernel``,
``intensity_scale/log_scale`` -> ``intensity_scale.log_scale``, ``probe/real`` ->
``probe.real``).  Keras kernels are already HWIO, the canonical layout, so import and export
are a rename, checked strictly against the network spec (a missing or extra name is an
error, never skipped).  The PyTorch twin is :mod:`ptycho_torch.canonical`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from ptycho import conventions
from ptycho import params as _params
from ptycho.canonical_weights import (
    init_canonical_weights,
    read_canonical_weights,
    validate_canonical_weights,
    write_canonical_weights,
)
from ptycho.errors import CanonicalWeightsError
from ptycho.network_spec import NetworkSpec
from ptycho_tf import BACKEND

if TYPE_CHECKING:
    from ptycho_tf.model import PtychoPINNModels

__all__ = [
    "canonical_name",
    "get_canonical_weights",
    "initial_weights",
    "read_weights_into",
    "set_canonical_weights",
    "write_weights",
]


def canonical_name(variable_path: str) -> str:
    """Keras variable path ``<layer>/<weight>`` -> canonical name ``<layer>.<weight>``."""
    layer, _, weight = variable_path.rpartition("/")
    return f"{layer}.{weight}" if layer else weight


def _variables_by_canonical_name(model: keras.Model, spec: NetworkSpec) -> dict[str, Any]:
    """``{canonical name: keras.Variable}`` for every weight of ``model``; strict against ``spec``."""
    out: dict[str, Any] = {}
    for v in model.weights:
        name = canonical_name(v.path)
        if name in out and out[name] is not v:
            raise CanonicalWeightsError("two Keras variables map to this canonical name", field=name)
        out[name] = v
    expected = set(spec.param_names())
    missing = sorted(expected - set(out))
    extra = sorted(set(out) - expected)
    if missing or extra:
        raise CanonicalWeightsError(
            f"the Keras model does not match its network spec (missing {missing[:5]}, extra {extra[:5]})",
            field=(missing or extra)[0],
            fix="build the model with ptycho_tf.model.build_models from the same spec",
        )
    return {p.name: out[p.name] for p in spec.params()}


def get_canonical_weights(model: keras.Model, spec: NetworkSpec) -> dict[str, np.ndarray]:
    """Export every parameter of ``model`` as ``{canonical name: float32 ndarray}`` in spec order.

    Keras kernels are HWIO, the canonical layout, so values are copied unchanged.
    """
    variables = _variables_by_canonical_name(model, spec)
    return validate_canonical_weights({k: np.asarray(v.numpy()) for k, v in variables.items()}, spec)


def set_canonical_weights(model: keras.Model, weights: Mapping[str, Any], spec: NetworkSpec) -> None:
    """Assign canonical ``weights`` (validated strictly against ``spec``) to ``model``'s variables."""
    arrays = validate_canonical_weights(weights, spec)
    variables = _variables_by_canonical_name(model, spec)
    for name, v in variables.items():
        v.assign(arrays[name])


def write_weights(models: PtychoPINNModels, path: str | PathLike, *, metadata: Mapping | None = None) -> Path:
    """Export the models' weights to a canonical weight file (atomic; ``backend='tensorflow'``)."""
    return write_canonical_weights(path, models.canonical_weights(), models.spec, backend=BACKEND, metadata=metadata)


def read_weights_into(models: PtychoPINNModels, path: str | PathLike) -> dict[str, Any]:
    """Import a canonical weight file (written by either backend) into ``models``; returns its attributes."""
    weights, attrs = read_canonical_weights(path, models.spec)
    models.set_canonical_weights(weights)
    return attrs



def initial_weights(spec: NetworkSpec, *, seed: int) -> dict[str, np.ndarray]:
    """Default initial weights: ``init_canonical_weights`` with the log scale and probe from ``params.cfg``.

    ``log_scale = log(params.cfg['intensity_scale'])`` (or, when unset, the closed form
    ``conventions.intensity_scale(nphotons, N)``); the probe is ``params.cfg['probe']`` (the
    normalised probe set by ``ptycho.probe.set_probe_guess``).
    """
    if "probe" not in _params.cfg:
        raise KeyError("params.cfg['probe'] is not set; call ptycho.probe.set_probe_guess(None, probeGuess) first")
    scale = _params.cfg.get("intensity_scale")
    if scale is None:
        scale = conventions.intensity_scale(_params.get("nphotons"), spec.N)
    return init_canonical_weights(spec, seed=seed, log_scale=math.log(float(scale)), probe=_params.cfg["probe"])

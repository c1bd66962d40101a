"""Saving and loading the TensorFlow models as a ``wts.h5.zip`` bundle (``specs/bundle.md``).

The archive itself is written and read by the backend-neutral :mod:`ptycho.bundle`; this
module supplies the TensorFlow payload and rebuilds the models:

* ``autoencoder/model.keras`` and ``diffraction_to_obj/model.keras``: Keras 3 archives written
  and read in memory (Keras' ``saving_lib.save_model`` / ``load_model(..., safe_mode=True,
  compile=False)`` on a buffer; no temporary files).  Before loading, each archive's inner members
  are bounded by the declared network, its ``config.json`` (depth-bounded) is checked against an
  allow-list of layer classes (Keras built-ins and the layers registered by
  :mod:`ptycho_tf.layers`; a ``Lambda`` or any unknown class is refused) and against the model's
  role (judged by its outputs), and its ``model.weights.h5`` must be plain HDF5 (no external
  storage, virtual datasets or links; :func:`ptycho.container_safety.check_plain_hdf5`).
* ``canonical_weights.h5``: every parameter under its canonical name
  (:mod:`ptycho.canonical_weights`), so the other backend can import the weights.  On
  load it must agree bitwise with the Keras payloads.
* ``params.json``: the ``params.cfg`` snapshot (including ``intensity_scale`` and the
  normalised ``probe``), restored into ``params.cfg`` exactly on load, and only once the whole
  bundle is accepted.

Entry points: :func:`save` (Ptychodus: the models of the most recent training),
:meth:`ModelManager.save_multiple_models` / :meth:`ModelManager.load_multiple_models`
(upstream names), and :func:`save_models` / :func:`load_models` (the full
:class:`~ptycho_tf.model.PtychoPINNModels`).
"""

from __future__ import annotations

import io
import math
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any
from unittest import mock

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras.src.saving import saving_lib

from ptycho import bundle, bundle_schema, params
from ptycho.atomic import atomic_temp_dir
from ptycho.canonical_weights import canonical_weights_from_bytes, canonical_weights_to_bytes
from ptycho.container_safety import check_inner_zip, check_plain_hdf5
from ptycho.errors import (
    BundleError,
    BundleFormatError,
    BundleInconsistentError,
    CanonicalWeightsError,
    UnsafeBundleError,
)
from ptycho.network_spec import NetworkSpec, build_network_spec
from ptycho_tf import BACKEND, layers
from ptycho_tf.canonical import canonical_name
from ptycho_tf.layers import PadObject, ReassemblePatches
from ptycho_tf.model import PADDED_NAME, PtychoPINNModels, current_models, models_from_autoencoder

__all__ = [
    "KERAS_PAYLOAD",
    "ModelManager",
    "load_models",
    "save",
    "save_models",
    "spec_from_keras_model",
]

#: File name of the Keras payload inside each model directory of the bundle.
KERAS_PAYLOAD = bundle.PAYLOAD_MEMBERS[BACKEND][0]
#: ``(module, class_name)`` pairs a bundle's ``model.keras`` config may name: the Keras classes
#: ptychopinn's models use and the layers registered by :mod:`ptycho_tf.layers`.  Anything else
#: (a ``Lambda``, an arbitrary module) is refused before Keras deserializes the archive.
ALLOWED_KERAS_CLASSES: frozenset[tuple[str | None, str]] = frozenset(
    {
        (None, "__keras_tensor__"),
        ("keras", "DTypePolicy"),
        ("keras.initializers", "GlorotUniform"),
        ("keras.initializers", "Zeros"),
        ("keras.initializers", "Ones"),
        ("keras.src.models.functional", "Functional"),
        *(
            ("keras.layers", c)
            for c in ("InputLayer", "Conv2D", "MaxPooling2D", "UpSampling2D", "ZeroPadding2D", "Add")
        ),
        *(
            (module, c)
            for c in layers.__all__
            if isinstance(getattr(layers, c), type)
            # ptycho.tf_layers: where the layers lived in bundles written before the ptycho_tf package
            for module in ("ptycho_tf.layers", "ptycho.tf_layers")
        ),
    }
)


# =========================================================================== spec of a Keras model
def spec_from_keras_model(model: keras.Model) -> NetworkSpec:
    """Recover the :class:`NetworkSpec` of an autoencoder (or diffraction_to_obj) from its layers.

    ``N`` and ``C`` come from the input shape, ``n_filters_scale`` from the last encoder conv
    (``128 * nfs`` filters), ``object_big`` from the assembly layer, ``pad_object`` /
    ``probe_big`` from which head layers exist and ``amp_activation`` from the amplitude
    head activation.
    """
    names = {layer.name: layer for layer in model.layers}
    N = int(model.inputs[0].shape[1])
    C = int(model.inputs[0].shape[3])
    gridsize = math.isqrt(C)
    enc = sorted(n for n in names if n.startswith("encoder.block") and n.endswith(".conv1"))
    nfs = int(names[enc[-1]].filters) // 128
    object_big = isinstance(names.get(PADDED_NAME), ReassemblePatches)
    if not object_big and not isinstance(names.get(PADDED_NAME), PadObject):
        raise BundleFormatError("the Keras model has no object assembly layer; it is not a PtychoPINN model")
    pad_object = "decoder_amp.head.center" in names
    probe_big = "decoder_amp.head.border.conv" in names if pad_object else True
    act = names["decoder_amp.head.center_act" if pad_object else "decoder_amp.head.full_act"]
    return build_network_spec(
        N, gridsize, nfs, object_big=object_big, probe_big=probe_big, pad_object=pad_object,
        amp_activation=act.activation,
    )


# =========================================================================== Keras payloads
#: Small members of a Keras 3 archive and their largest sizes (``model.weights.h5`` is bounded by the
#: declared network, see :func:`_check_keras_payload`).
_KERAS_SMALL_MEMBERS = {"metadata.json": 64 << 10, "config.json": bundle_schema.MAX_JSON_BYTES["config.json"]}


def _keras_bytes(model: keras.Model, scratch: Path) -> bytes:
    """The bytes of a Keras 3 ``.keras`` archive of ``model``, written in memory.

    ``saving_lib.save_model`` with a file object writes the archive (weights included) into the
    buffer; the only thing it still puts on disk is the (empty) assets directory of its
    ``DiskIOStore``, which it would create with ``tempfile.mkdtemp()``.  It is created inside
    ``scratch`` instead (an :func:`ptycho.atomic.atomic_temp_dir` next to the bundle), so a
    process killed mid-save leaves nothing that the next save or load does not remove.
    """
    buf = io.BytesIO()
    with mock.patch.object(saving_lib, "get_temp_dir", lambda: tempfile.mkdtemp(dir=scratch)):
        saving_lib.save_model(model, buf)
    return buf.getvalue()


def _check_keras_payload(data: bytes, member: str, location: Path, role: str, weights_limit: int) -> None:
    """Refuse a Keras archive before Keras opens it.

    Checks: only ``metadata.json``, ``config.json`` and ``model.weights.h5`` inside, each within
    its size bound (the weights within ``weights_limit``); ``config.json`` size- and
    depth-bounded JSON naming only classes of the allow-list (no ``Lambda``, no foreign module)
    and the model ``role``; ``model.weights.h5`` a plain HDF5 file (no external storage, virtual
    datasets or links; :func:`ptycho.container_safety.check_plain_hdf5`).
    """
    limits = {**_KERAS_SMALL_MEMBERS, "model.weights.h5": weights_limit}
    infos = check_inner_zip(data, member=member, limits=limits, total=sum(limits.values()), file=location)
    for required in ("config.json", "model.weights.h5"):
        if required not in infos:
            raise BundleFormatError(f"is not a Keras 3 archive (no {required})", file=location, member=member)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            raw_config = zf.read(infos["config.json"])
            weights = zf.read(infos["model.weights.h5"])
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise BundleFormatError(f"is a corrupt Keras archive ({exc})", file=location, member=member) from None
    config = bundle_schema.load_json(raw_config, f"{member}:config.json", location)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            cls = node.get("class_name")
            if isinstance(cls, str) and (node.get("module"), cls) not in ALLOWED_KERAS_CLASSES:
                raise UnsafeBundleError(
                    f"member '{member}' names the class {node.get('module')}.{cls}, which is not one of "
                    "ptychopinn's layers; refusing to deserialize it",
                    file=location,
                    fix="load only bundles written by ptychopinn",
                )
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)  # depth bounded by load_json
    found = _role_of(config)
    if found != role:
        raise BundleInconsistentError(
            f"holds {'a ' + repr(found) if found else 'no PtychoPINN'} model (judged by its outputs), but this "
            f"member is the {role!r} role", file=location, member=member, field="config.output_layers",
            fix="re-save the bundle with ptychopinn",
        )
    try:
        with h5py.File(io.BytesIO(weights), "r") as h5:
            check_plain_hdf5(h5, file=location, member=f"{member}:model.weights.h5")
    except OSError as exc:
        raise BundleFormatError(f"model.weights.h5 is not a readable HDF5 file ({exc})", file=location,
                                member=member) from None


def _role_of(config: Any) -> str | None:
    """The model role a Keras ``config.json`` describes, from its outputs: the autoencoder has three
    (object, intensity scale, predicted intensity), ``diffraction_to_obj`` one (the object)."""
    outputs = config.get("config", {}).get("output_layers") if isinstance(config, dict) else None
    if not isinstance(outputs, list) or not outputs:
        return None
    n_outputs = 1 if isinstance(outputs[0], str) else len(outputs)
    return {3: "autoencoder", 1: "diffraction_to_obj"}.get(n_outputs)


def _load_keras(data: bytes, member: str, location: Path) -> keras.Model:
    """Deserialize one checked Keras payload in memory with ``safe_mode=True`` (no code from the archive runs)."""
    try:
        return saving_lib.load_model(io.BytesIO(data), safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - whatever Keras raises for a bad archive is a bad bundle
        raise BundleFormatError(f"cannot be loaded by Keras ({type(exc).__name__}: {str(exc)[:300]})",
                                file=location, member=member) from None


# =========================================================================== save
def _params_snapshot(models: PtychoPINNModels, snapshot: Mapping[str, Any] | None) -> dict[str, Any]:
    """The params snapshot to store; ``intensity_scale``/``probe`` filled from the weights if absent."""
    snap = dict(params.snapshot() if snapshot is None else snapshot)
    weights = models.canonical_weights()
    if snap.get("intensity_scale") is None:
        snap["intensity_scale"] = float(math.exp(float(weights["intensity_scale.log_scale"])))
    if snap.get("probe") is None:
        snap["probe"] = (weights["probe.real"] + 1j * weights["probe.imag"]).astype(np.complex64)[..., None]
    return snap


def save_models(
    models: PtychoPINNModels, location: str | PathLike, *, params_snapshot: Mapping[str, Any] | None = None
) -> Path:
    """Write ``models`` as a bundle at ``location`` (a directory, ``.../wts.h5`` or ``.../wts.h5.zip``).

    The write is atomic (``ptycho.bundle.write_bundle``): an error at any point leaves a
    previous bundle untouched.  ``params_snapshot`` defaults to ``ptycho.params.snapshot()``.
    Returns the path of the zip.
    """
    spec = models.spec
    weights = models.canonical_weights()
    target = bundle.bundle_path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_temp_dir(target) as scratch:
        payloads = {name: {KERAS_PAYLOAD: _keras_bytes(model, scratch)} for name, model in models.as_dict().items()}
    snapshot = _params_snapshot(models, params_snapshot)
    log_scale = float(weights["intensity_scale.log_scale"])
    return bundle.write_bundle(
        location,
        backend=BACKEND,
        model_payloads=payloads,
        params_snapshot=snapshot,
        canonical_weights=canonical_weights_to_bytes(weights, spec, backend=BACKEND),
        network=spec.config(),
        intensity_scale=math.exp(log_scale),
        framework={"tensorflow": tf.__version__, "keras": keras.__version__},
        physics={
            "canvas_size": models.canvas_size,
            "probe_mask": models.probe_mask,
            "gaussian_smoothing_sigma": models.gaussian_smoothing_sigma,
        },
    )


def save(out_prefix: str | PathLike) -> Path:
    """Save the models of the most recent training in this process to ``{out_prefix}/wts.h5.zip``.

    As Ptychodus calls it after ``run_cdi_example``.  ``out_prefix`` is the output directory
    (created if needed).
    """
    out = Path(out_prefix)
    out.mkdir(parents=True, exist_ok=True)
    return save_models(current_models(), out / bundle.BUNDLE_FILENAME)


# =========================================================================== load
def _check_against_canonical(
    model: keras.Model, weights: Mapping[str, np.ndarray], member: str, location: Path
) -> None:
    """Every weight of a loaded Keras model must equal the canonical weight of the same name, bitwise."""
    for v in model.weights:
        name = canonical_name(v.path)
        if name not in weights or not np.array_equal(np.asarray(v.numpy()), weights[name]):
            raise BundleFormatError(
                f"the weights of '{member}' do not match canonical_weights.h5 at '{name}'",
                file=location,
                fix="re-save the bundle with ptycho_tf.model_manager",
            )


def _read(location: str | PathLike, names: Iterable[str] | None):
    """Read, validate and deserialize a TensorFlow bundle; restores ``params.cfg`` only once all is accepted."""
    wanted = list(bundle.MODEL_NAMES if names is None else names)
    unknown = sorted(set(wanted) - set(bundle.MODEL_NAMES))
    if unknown:
        raise ValueError(f"unknown model name(s) {unknown}; a bundle holds {list(bundle.MODEL_NAMES)}")
    b = bundle.read_bundle(location, expected_backend=BACKEND)
    try:
        spec = build_network_spec(**b.manifest["network"])
        weights, _attrs = canonical_weights_from_bytes(
            b.canonical_weights, spec, source=f"{b.path}:canonical_weights.h5"
        )
    except BundleError:
        raise
    except (TypeError, CanonicalWeightsError, ValueError) as exc:
        raise BundleFormatError(f"the network or canonical weights are invalid ({exc})", file=b.path) from None
    weights_limit = bundle_schema.member_size_limits(b.manifest["network"], b.path)["weights"]
    for name in bundle.MODEL_NAMES:  # every payload is checked, also those not deserialized now
        _check_keras_payload(b.payloads[name][KERAS_PAYLOAD], f"{name}/{KERAS_PAYLOAD}", b.path, name, weights_limit)
    models: dict[str, keras.Model] = {}
    for name in wanted:
        member = f"{name}/{KERAS_PAYLOAD}"
        model = _load_keras(b.payloads[name][KERAS_PAYLOAD], member, b.path)
        _check_against_canonical(model, weights, member, b.path)
        if name == "autoencoder" and spec_from_keras_model(model).config() != spec.config():
            raise BundleInconsistentError("the autoencoder payload does not match the manifest's network",
                                          file=b.path, member=member)
        models[name] = model
    bundle.restore_params(params.cfg, b.params)  # only now: the whole bundle is accepted
    return b, spec, models


def load_models(location: str | PathLike) -> tuple[PtychoPINNModels, dict[str, Any]]:
    """Load a TensorFlow bundle into :class:`PtychoPINNModels` and restore ``params.cfg``.

    The returned models are rewired from the loaded autoencoder (so all three share its
    weights).  Returns ``(models, params_snapshot)``.  Raises the ``ptycho.errors.Bundle*``
    errors of :func:`ptycho.bundle.read_bundle` and ``BundleFormatError`` for payloads that
    do not deserialize or disagree with the canonical weights; ``params.cfg`` is untouched
    when anything is refused.
    """
    b, spec, loaded = _read(location, ["autoencoder"])
    return models_from_autoencoder(loaded["autoencoder"], spec), dict(b.params)


class ModelManager:
    """Upstream-compatible entry points (static methods)."""

    @staticmethod
    def save_multiple_models(
        models_dict: Mapping[str, keras.Model],
        base_path: str | PathLike,
        custom_objects: Mapping[str, Any] | None = None,
        intensity_scale: float | None = None,
    ) -> Path:
        """Save ``{'autoencoder': ..., 'diffraction_to_obj': ...}`` to ``{base_path}.zip``.

        ``base_path`` is upstream's ``.../wts.h5`` (a directory or the ``.zip`` path work too).
        ``custom_objects`` is accepted for upstream compatibility and ignored: ptychopinn's
        layers are registered, and no code is ever stored in the bundle.  ``intensity_scale``,
        when given, is written to the params snapshot's ``intensity_scale``.
        """
        if sorted(models_dict) != sorted(bundle.MODEL_NAMES):
            raise ValueError(f"expected the models {list(bundle.MODEL_NAMES)}, got {sorted(models_dict)}")
        autoencoder = models_dict["autoencoder"]
        models = models_from_autoencoder(autoencoder, spec_from_keras_model(autoencoder))
        models.diffraction_to_obj = models_dict["diffraction_to_obj"]
        snapshot = params.snapshot()
        if intensity_scale is not None:
            snapshot["intensity_scale"] = float(intensity_scale)
        return save_models(models, base_path, params_snapshot=snapshot)

    @staticmethod
    def load_multiple_models(
        base_path: str | PathLike, model_names: Iterable[str] | None = None
    ) -> dict[str, keras.Model]:
        """Load the named models (default both) from a bundle; restores ``params.cfg`` exactly."""
        _b, _spec, models = _read(base_path, model_names)
        return models


"""The canonical weight file: one HDF5 file both backends read and write.

A canonical weight file holds every parameter of one PtychoPINN network under
its canonical name (:mod:`ptycho.network_spec`), in the canonical layout
(convolution kernels ``HWIO = [kh, kw, in, out]``), as float32.  Weights
trained by one backend are transplanted into the other by writing this file
with one and reading it with the other.  ``specs/canonical-weights.md`` is the
prose version.

Layout of the file (HDF5, written with h5py):

* one dataset per parameter **at the root**, named by the dotted canonical name
  (``/encoder.block0.conv0.kernel``, ``/intensity_scale.log_scale``,
  ``/probe.real`` ...); no groups.  dtype float32, shape as in the spec
  (``intensity_scale.log_scale`` is a scalar dataset, shape ``()``), no
  compression or filters;
* root attributes: ``format`` (``'ptychopinn-canonical-weights'``),
  ``format_version`` (1), ``kernel_layout`` (``'HWIO'``), the network
  configuration ``N``, ``gridsize``, ``n_filters_scale``, ``object_big``,
  ``probe_big``, ``pad_object``, ``amp_activation``, ``backend`` (who wrote it)
  and ``metadata`` (a JSON object as text, ``'{}'`` when none was given).

Writing is atomic (a temporary file in the same directory, then
:func:`os.replace`); :func:`canonical_weights_to_bytes` /
:func:`canonical_weights_from_bytes` do the same in memory (for the
``canonical_weights.h5`` member of a ``wts.h5.zip`` bundle).  Reading is strict (every mismatch raises
:class:`~ptycho.errors.CanonicalWeightsError` naming the parameter or attribute,
what was expected and what was found).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptycho.atomic import atomic_path
from ptycho.container_safety import check_plain_hdf5
from ptycho.errors import CanonicalWeightsError, ConfigError
from ptycho.network_spec import CANONICAL_KERNEL_LAYOUT, NetworkSpec, build_network_spec

__all__ = [
    "CONFIG_ATTRS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "canonical_weights_from_bytes",
    "canonical_weights_to_bytes",
    "init_canonical_weights",
    "read_canonical_weights",
    "spec_from_attrs",
    "validate_canonical_weights",
    "write_canonical_weights",
]

#: Value of the ``format`` root attribute.
FORMAT_NAME: str = "ptychopinn-canonical-weights"
#: Value of the ``format_version`` root attribute written by this code (the only one it reads).
FORMAT_VERSION: int = 1
#: Root attributes that hold the network configuration (the arguments of ``build_network_spec``).
CONFIG_ATTRS: tuple[str, ...] = (
    "N",
    "gridsize",
    "n_filters_scale",
    "object_big",
    "probe_big",
    "pad_object",
    "amp_activation",
)
_BOOL_ATTRS = ("object_big", "probe_big", "pad_object")

_FIX_REWRITE = "re-export the weights with write_canonical_weights from a network built for this spec"


# ---------------------------------------------------------------------- validation
def _check_names(names: Mapping[str, Any], spec: NetworkSpec, file: str | PathLike | None) -> None:
    """Raise CanonicalWeightsError unless the keys of ``names`` are exactly the spec's parameters."""
    expected = spec.param_names()
    missing = [n for n in expected if n not in names]
    if missing:
        raise CanonicalWeightsError(
            f"{len(missing)} parameter(s) missing: {missing}",
            file=file,
            field=missing[0],
            fix=_FIX_REWRITE,
        )
    extra = sorted(str(n) for n in set(names) - set(expected))
    if extra:
        raise CanonicalWeightsError(
            f"{len(extra)} unexpected parameter(s) not in the network spec: {extra}",
            file=file,
            field=extra[0],
            fix="the weights belong to a different network configuration; build the spec from the same "
            "config (N, gridsize, n_filters_scale, object_big, probe_big, pad_object)",
        )


def validate_canonical_weights(
    weights: Mapping[str, Any], spec: NetworkSpec, *, file: str | PathLike | None = None
) -> dict[str, np.ndarray]:
    """Check a weight dict against ``spec`` and return it as canonical float32 arrays.

    Args:
        weights: ``{canonical name: array-like}``; values must be real floating point
            (float16/32/64 or a Python float) and are cast to float32.
        spec: the network the weights belong to.
        file: named in error messages when the weights came from a file.

    Returns:
        ``{name: C-contiguous float32 ndarray}`` in the order of ``spec.params()``.

    Raises:
        CanonicalWeightsError: a missing or extra name, a shape mismatch (names the parameter,
            the expected and the found shape), a non-floating dtype, or a NaN/inf value.
    """
    if not isinstance(weights, Mapping):
        raise CanonicalWeightsError(
            f"weights must be a mapping of canonical name -> array, got {type(weights).__name__}", file=file
        )
    _check_names(weights, spec, file)
    out: dict[str, np.ndarray] = {}
    for p in spec.params():
        arr = np.asarray(weights[p.name])
        if arr.dtype.kind != "f":
            raise CanonicalWeightsError(
                f"dtype {arr.dtype} is not real floating point (expected {p.dtype})",
                file=file,
                field=p.name,
                fix="store real float32 values (split complex values into .real/.imag parameters)",
            )
        if tuple(arr.shape) != p.shape:
            raise CanonicalWeightsError(
                f"shape mismatch: expected {p.shape}, found {tuple(arr.shape)}",
                file=file,
                field=p.name,
                fix=(
                    "convolution kernels are HWIO [kh, kw, in, out]; transpose torch OIHW weights with "
                    ".transpose(2, 3, 1, 0) before writing"
                    if p.role == "kernel"
                    else "build the weights for the same network configuration as the spec"
                ),
            )
        arr = np.array(arr, dtype=np.dtype(p.dtype), order="C")  # a copy; keeps 0-d arrays 0-d
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise CanonicalWeightsError(
                f"{bad} non-finite value(s) (NaN or inf) after conversion to {p.dtype}",
                file=file,
                field=p.name,
                fix="the training diverged or the weights are corrupt; use an earlier checkpoint",
            )
        out[p.name] = arr
    return out


def spec_from_attrs(attrs: Mapping[str, Any], *, file: str | PathLike | None = None) -> NetworkSpec:
    """Rebuild the :class:`NetworkSpec` recorded in a file's attributes.

    Args:
        attrs: a mapping with the :data:`CONFIG_ATTRS` keys (the ``attrs`` returned by
            :func:`read_canonical_weights`, or the raw HDF5 attributes).
        file: named in error messages.

    Raises:
        CanonicalWeightsError: an attribute is missing or holds a value ``build_network_spec``
            rejects.
    """
    missing = [k for k in CONFIG_ATTRS if k not in attrs]
    if missing:
        raise CanonicalWeightsError(
            f"configuration attribute(s) missing: {missing}", file=file, field=missing[0], fix=_FIX_REWRITE
        )
    values = {k: _plain(attrs[k]) for k in CONFIG_ATTRS}
    try:
        return build_network_spec(**values)
    except ConfigError as exc:
        raise CanonicalWeightsError(
            f"attribute {exc.field}={exc.value!r} is invalid: expected {exc.allowed}",
            file=file,
            field=exc.field,
            fix=_FIX_REWRITE,
        ) from exc


def _plain(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (str, int, float, bool)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.shape == ():
        return value.item()
    return value


# ---------------------------------------------------------------------- write
def _write_dataset(h5: h5py.File, name: str, array: np.ndarray) -> None:
    """Write one parameter dataset (a separate function so tests can inject a failure)."""
    h5.create_dataset(name, data=array)


def _prepare(
    weights: Mapping[str, Any],
    spec: NetworkSpec,
    backend: str,
    metadata: Mapping[str, Any] | None,
    file: str | PathLike | None,
) -> tuple[dict[str, np.ndarray], str]:
    """Validate everything a write needs; return the float32 arrays and the metadata JSON."""
    if not isinstance(backend, str) or not backend:
        raise ValueError(f"backend={backend!r} is invalid: expected a non-empty string naming the writer")
    arrays = validate_canonical_weights(weights, spec)
    try:
        metadata_json = json.dumps(dict(metadata or {}), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CanonicalWeightsError(
            f"metadata is not JSON-serialisable: {exc}",
            file=file,
            field="metadata",
            fix="pass only str/int/float/bool/None, lists and dicts",
        ) from exc
    return arrays, metadata_json


def _write_h5(
    target: str | io.BytesIO, arrays: Mapping[str, np.ndarray], spec: NetworkSpec, backend: str, meta: str
) -> None:
    """Write the attributes and datasets of a canonical weight file to ``target``."""
    with h5py.File(target, "w") as h5:
        h5.attrs["format"] = FORMAT_NAME
        h5.attrs["format_version"] = np.int64(FORMAT_VERSION)
        h5.attrs["kernel_layout"] = CANONICAL_KERNEL_LAYOUT
        for key, value in spec.config().items():
            if key in _BOOL_ATTRS:
                h5.attrs[key] = np.bool_(value)
            elif isinstance(value, str):
                h5.attrs[key] = value
            else:
                h5.attrs[key] = np.int64(value)
        h5.attrs["backend"] = backend
        h5.attrs["metadata"] = meta
        for name, arr in arrays.items():
            _write_dataset(h5, name, arr)


def write_canonical_weights(
    path: str | PathLike,
    weights: Mapping[str, Any],
    spec: NetworkSpec,
    *,
    backend: str,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``weights`` of the network ``spec`` to a canonical weight file, atomically.

    The file is first written to a temporary file in the same directory, flushed to disk
    and then renamed over ``path`` (:func:`os.replace`), so a failure at any point leaves
    a previous file at ``path`` intact and no temporary file behind.

    Args:
        path: destination ``.h5`` file; its directory must exist.
        weights: ``{canonical name: array}`` exactly the names of ``spec.params()``, shapes in
            the canonical layout (kernels HWIO), real floating point (cast to float32).
        spec: the network the weights belong to; its configuration becomes file attributes.
        backend: who wrote the file (``'tensorflow'``, ``'pytorch'``, ``'reference'`` ...).
        metadata: optional JSON-serialisable mapping stored as the ``metadata`` attribute.

    Returns:
        The path written.

    Raises:
        CanonicalWeightsError: the weights do not match ``spec`` (see
            :func:`validate_canonical_weights`) or the metadata is not JSON-serialisable.
        ValueError: ``backend`` is not a non-empty string.
        FileNotFoundError: the destination directory does not exist.
    """
    path = Path(path)
    arrays, meta = _prepare(weights, spec, backend, metadata, path)
    with atomic_path(path) as tmp:
        _write_h5(str(tmp), arrays, spec, backend, meta)
    return path


def canonical_weights_to_bytes(
    weights: Mapping[str, Any],
    spec: NetworkSpec,
    *,
    backend: str,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """The bytes of the canonical weight file :func:`write_canonical_weights` would write.

    For embedding the file in a ``wts.h5.zip`` bundle (member ``canonical_weights.h5``).
    Same arguments, validation and errors as :func:`write_canonical_weights`.
    """
    arrays, meta = _prepare(weights, spec, backend, metadata, None)
    buf = io.BytesIO()
    _write_h5(buf, arrays, spec, backend, meta)
    return buf.getvalue()


# ---------------------------------------------------------------------- read
def read_canonical_weights(
    path: str | PathLike, spec: NetworkSpec | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a canonical weight file, strictly.

    Args:
        path: the ``.h5`` file.
        spec: the network the caller will load the weights into.  When given, the file's
            configuration attributes must equal ``spec.config()``; when None the spec is
            rebuilt from the attributes (:func:`spec_from_attrs`).

    Returns:
        ``(weights, attrs)``: ``weights`` is ``{canonical name: float32 ndarray}`` in spec order;
        ``attrs`` holds the root attributes as plain Python values (``metadata`` decoded to a
        dict).

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeBundleError: a dataset with external raw storage, a virtual dataset, a soft or
            external link, a filter, or a non-numeric dtype (``ptycho.container_safety``); checked
            before any dataset is read.
        CanonicalWeightsError: not an HDF5 file; wrong ``format`` or ``format_version``;
            a kernel layout other than HWIO; a configuration attribute missing, invalid or
            different from ``spec``; a group where a dataset belongs; a missing or extra
            parameter; a shape mismatch (names the parameter, expected and found shapes);
            a dtype other than float32; a NaN/inf value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: canonical weight file not found")
    return _read(str(path), path, spec)


def canonical_weights_from_bytes(
    data: bytes, spec: NetworkSpec | None = None, *, source: str = "<bytes>"
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`read_canonical_weights` for the bytes of a canonical weight file.

    ``source`` names the origin in error messages (e.g. ``'wts.h5.zip:canonical_weights.h5'``).
    """
    return _read(io.BytesIO(bytes(data)), source, spec)


def _read(
    target: str | io.BytesIO, label: str | PathLike, spec: NetworkSpec | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    try:
        h5 = h5py.File(target, "r")
    except OSError as exc:
        raise CanonicalWeightsError(
            f"not a readable HDF5 file ({exc})",
            file=label,
            fix="pass a file written by write_canonical_weights",
        ) from exc
    with h5:
        check_plain_hdf5(h5, file=label)  # no external storage, virtual datasets, links, filters, odd dtypes
        attrs = _check_attrs({k: _plain(v) for k, v in h5.attrs.items()}, label)
        file_spec = spec_from_attrs(attrs, file=label)
        if spec is not None:
            for key, want in spec.config().items():
                if attrs[key] != want:
                    raise CanonicalWeightsError(
                        f"attribute {key}={attrs[key]!r} but the network expects {key}={want!r}",
                        file=label,
                        field=key,
                        fix="build the network from the configuration the weights were trained with "
                        "(spec_from_attrs(attrs))",
                    )
        else:
            spec = file_spec
        items = dict(h5.items())
        for name, item in items.items():
            if not isinstance(item, h5py.Dataset):
                raise CanonicalWeightsError(
                    "is a group; every parameter is a dataset at the root",
                    file=label,
                    field=name,
                    fix=_FIX_REWRITE,
                )
        _check_names(items, spec, label)
        found: dict[str, np.ndarray] = {}
        for p in spec.params():
            ds = items[p.name]
            if tuple(ds.shape) != p.shape:
                raise CanonicalWeightsError(
                    f"shape mismatch: expected {p.shape}, found {tuple(ds.shape)}",
                    file=label,
                    field=p.name,
                    fix=_FIX_REWRITE,
                )
            if ds.dtype != np.dtype(p.dtype):
                raise CanonicalWeightsError(
                    f"dtype mismatch: expected {p.dtype}, found {ds.dtype}",
                    file=label,
                    field=p.name,
                    fix=_FIX_REWRITE,
                )
            found[p.name] = np.asarray(ds[()])
    weights = validate_canonical_weights(found, spec, file=label)
    return weights, attrs


def _check_attrs(attrs: dict[str, Any], path: str | PathLike) -> dict[str, Any]:
    """Check the format attributes and decode ``metadata``; return the plain attribute dict."""
    fmt = attrs.get("format")
    if fmt != FORMAT_NAME:
        raise CanonicalWeightsError(
            f"format attribute is {fmt!r}, expected {FORMAT_NAME!r}",
            file=path,
            field="format",
            fix="this is not a ptychopinn canonical weight file; backend-native checkpoints "
            "(model.keras, .pt) are read by their backend",
        )
    version = attrs.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int | np.integer):
        raise CanonicalWeightsError(
            f"format_version attribute is {version!r}, expected the integer {FORMAT_VERSION}",
            file=path,
            field="format_version",
            fix=_FIX_REWRITE,
        )
    if int(version) != FORMAT_VERSION:
        newer = int(version) > FORMAT_VERSION
        raise CanonicalWeightsError(
            f"format_version is {int(version)}, this code reads version {FORMAT_VERSION}",
            file=path,
            field="format_version",
            fix="upgrade ptychopinn to read this newer file" if newer else _FIX_REWRITE,
        )
    layout = attrs.get("kernel_layout")
    if layout != CANONICAL_KERNEL_LAYOUT:
        raise CanonicalWeightsError(
            f"kernel_layout attribute is {layout!r}, expected {CANONICAL_KERNEL_LAYOUT!r}",
            file=path,
            field="kernel_layout",
            fix=_FIX_REWRITE,
        )
    out = dict(attrs)
    out["format_version"] = int(version)
    for key in _BOOL_ATTRS:
        if key in out and isinstance(out[key], np.bool_ | bool):
            out[key] = bool(out[key])
    raw_meta = out.get("metadata", "{}")
    try:
        meta = json.loads(raw_meta) if isinstance(raw_meta, str) else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise CanonicalWeightsError(
            f"metadata attribute is not a JSON object: {raw_meta!r}",
            file=path,
            field="metadata",
            fix=_FIX_REWRITE,
        )
    out["metadata"] = meta
    return out


# ---------------------------------------------------------------------- init
def init_canonical_weights(
    spec: NetworkSpec, *, seed: int, log_scale: float, probe: np.ndarray
) -> dict[str, np.ndarray]:
    """Fresh weights for ``spec``, deterministic for ``seed`` (Keras' default initialisers).

    Kernels are glorot-uniform: ``U(-limit, limit)`` with
    ``limit = sqrt(6 / (fan_in + fan_out))``, ``fan_in = kh*kw*in``, ``fan_out = kh*kw*out``
    (as Keras computes them).  Biases are zero.  Draws come from one
    ``np.random.default_rng(seed)`` in the order of ``spec.params()`` (never numpy's global RNG).

    Args:
        spec: the network.
        seed: RNG seed.
        log_scale: initial ``intensity_scale.log_scale`` = ``log(intensity_scale)``.
        probe: the normalised complex probe, ``[N, N]`` (or ``[N, N, 1]``, as in
            ``params.cfg['probe']``); stored as ``probe.real`` / ``probe.imag``.

    Returns:
        ``{canonical name: float32 ndarray}`` in spec order; it passes
        :func:`validate_canonical_weights`.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for p in spec.conv_params():
        if p.role == "kernel":
            kh, kw, cin, cout = p.shape
            limit = math.sqrt(6.0 / (kh * kw * cin + kh * kw * cout))
            out[p.name] = rng.uniform(-limit, limit, size=p.shape).astype(np.float32)
        else:
            out[p.name] = np.zeros(p.shape, dtype=np.float32)
    probe = np.asarray(probe)
    if probe.ndim == 3 and probe.shape[-1] == 1:
        probe = probe[..., 0]
    if probe.shape != (spec.N, spec.N):
        raise CanonicalWeightsError(
            f"probe shape {probe.shape} does not match N={spec.N} (expected ({spec.N}, {spec.N}))",
            field="probe",
            fix="pass the normalised probe of the same patch size as the network",
        )
    out["intensity_scale.log_scale"] = np.asarray(log_scale, dtype=np.float32).reshape(())
    out["probe.real"] = np.ascontiguousarray(probe.real, dtype=np.float32)
    out["probe.imag"] = np.ascontiguousarray(
        probe.imag if np.iscomplexobj(probe) else np.zeros_like(probe.real), dtype=np.float32
    )
    return validate_canonical_weights(out, spec)

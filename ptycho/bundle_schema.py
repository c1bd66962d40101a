"""What a ``wts.h5.zip`` bundle may declare: JSON schemas, bounds and cross-checks.

A bundle is untrusted input.  Everything it declares is checked here before anything is
allocated, imported or written to global state (``specs/bundle.md``, "Validation"):

* :func:`load_json` refuses oversized or too deeply nested JSON *before* parsing it (a bounded
  pre-scan, so ``json`` never recurses deeply), and non-finite numbers (``NaN``, ``Infinity``);
* :data:`MANIFEST_SCHEMA` / :data:`PARAMS_SCHEMA` (JSON Schema 2020-12, checked with the
  ``jsonschema`` library) fix every type, allowed value and bound: the network dimensions, the
  physics settings, member names and sizes, and the structure of the tagged ``params.json``
  values;
* :func:`decode_ndarray` turns an ``__ndarray__`` entry into an array only after its dtype is on
  the allow-list, its shape is small enough and its base64 payload has exactly the declared size;
* :func:`check_params` runs the ``params.cfg`` rules of every known key on the decoded values and
  cross-checks them against the manifest (``N``, ``gridsize``, ... and the probe shape);
* :func:`member_size_limits` bounds each member by what the declared network needs.

Every refusal is a :class:`~ptycho.errors.BundleError` subclass naming the member, the field (a
dotted JSON path) and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np

from ptycho.conventions import AMP_ACTIVATIONS, SUPPORTED_N
from ptycho.errors import BundleInconsistentError, BundleSchemaError, BundleTooLargeError, ConfigError

__all__ = [
    "MANIFEST_SCHEMA",
    "MAX_ARRAY_BYTES",
    "MAX_CANVAS_SIZE",
    "MAX_GRIDSIZE",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_N_FILTERS_SCALE",
    "MAX_PARAMETER_BYTES",
    "NETWORK_PARAM_KEYS",
    "NDARRAY_DTYPES",
    "PARAMS_SCHEMA",
    "check_params",
    "decode_ndarray",
    "json_depth",
    "load_json",
    "member_size_limits",
    "validate",
]

# --------------------------------------------------------------------------- bounds
#: Largest ``n_filters_scale`` a bundle may declare (upstream default 2).
MAX_N_FILTERS_SCALE: int = 16
#: Largest ``gridsize`` a bundle may declare (``C = gridsize**2`` channels).
MAX_GRIDSIZE: int = 8
#: Largest canvas side ``P`` (pixels) a bundle may declare.
MAX_CANVAS_SIZE: int = 2048
#: Largest ``gaussian_smoothing_sigma`` (pixels).
MAX_SMOOTHING_SIGMA: float = 64.0
#: Largest total size of the network's float32 parameters (1 GiB, about 268 M parameters).
MAX_PARAMETER_BYTES: int = 1024**3
#: Largest nesting depth of any JSON document in a bundle (objects and arrays; a real manifest
#: nests 3 deep, a params.json 5 deep, a Keras config about 10).
MAX_JSON_DEPTH: int = 32
#: Largest ``manifest.json`` / ``params.json`` / Keras ``config.json``.
MAX_JSON_BYTES: dict[str, int] = {"manifest.json": 1 << 20, "params.json": 32 << 20, "config.json": 8 << 20}
#: Largest array one ``__ndarray__`` entry of params.json may hold (bytes) and its largest rank.
MAX_ARRAY_BYTES: int = 16 << 20
MAX_ARRAY_NDIM: int = 8
#: Largest number of keys in params.json, of items in one list, and of characters in one string.
MAX_PARAMS_KEYS: int = 1000
MAX_LIST_ITEMS: int = 10_000
MAX_STRING_CHARS: int = 4096
#: Bytes a member may hold beyond the weights it stores (HDF5/zip/pickle headers, Keras config).
MEMBER_OVERHEAD_BYTES: int = 16 << 20

#: dtype strings (``numpy.dtype.str``) an ``__ndarray__`` entry may declare: plain numbers only.
NDARRAY_DTYPES: tuple[str, ...] = tuple(
    ["|b1", "|i1", "|u1"]
    + [f"{order}{kind}{size}" for order in "<>" for kind in "iu" for size in (2, 4, 8)]
    + [f"{order}f{size}" for order in "<>" for size in (2, 4, 8)]
    + [f"{order}c{size}" for order in "<>" for size in (8, 16)]
)

_FIX = "re-save the bundle with ptychopinn; do not load bundles from untrusted sources"

# --------------------------------------------------------------------------- schemas
_INT = {"type": "integer"}
_NETWORK = {
    "type": "object",
    "description": "the network architecture",
    "required": ["N", "gridsize", "n_filters_scale", "object_big", "probe_big", "pad_object", "amp_activation"],
    "additionalProperties": False,
    "properties": {
        "N": {"enum": list(SUPPORTED_N)},
        "gridsize": {**_INT, "minimum": 1, "maximum": MAX_GRIDSIZE},
        "n_filters_scale": {**_INT, "minimum": 1, "maximum": MAX_N_FILTERS_SCALE},
        "object_big": {"type": "boolean"},
        "probe_big": {"type": "boolean"},
        "pad_object": {"type": "boolean"},
        "amp_activation": {"enum": list(AMP_ACTIVATIONS)},
    },
}

#: JSON Schema of ``manifest.json`` (member names are checked against the backend's allow-list
#: by the reader; here only their form).
MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["format", "version", "backend", "models", "members", "network", "canvas_size", "probe_mask",
                 "gaussian_smoothing_sigma"],
    "maxProperties": 64,
    "properties": {
        "format": {"const": "ptychopinn.wts.h5.zip"},
        "version": {"type": "string", "pattern": r"^[0-9]{1,4}\.[0-9]{1,4}(-[a-z]{1,16})?$"},
        "backend": {"enum": ["tensorflow", "pytorch"]},
        "models": {
            "type": "array", "minItems": 2, "maxItems": 2, "uniqueItems": True,
            "items": {"enum": ["autoencoder", "diffraction_to_obj"]},
        },
        "created_by": {"type": "string", "maxLength": 200},
        "framework": {
            "type": "object", "maxProperties": 16,
            "additionalProperties": {"type": "string", "maxLength": 100},
        },
        "network": _NETWORK,
        "canvas_size": {**_INT, "minimum": min(SUPPORTED_N), "maximum": MAX_CANVAS_SIZE},
        "probe_mask": {"type": "boolean"},
        "gaussian_smoothing_sigma": {"type": "number", "minimum": 0, "maximum": MAX_SMOOTHING_SIGMA},
        "intensity_scale": {"type": "number", "exclusiveMinimum": 0},
        "members": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 16,
            "propertyNames": {"pattern": r"^[a-z_]{1,32}(/[a-z_]{1,32})?\.[a-z0-9]{1,8}$"},
            "additionalProperties": {
                "type": "object",
                "required": ["sha256", "size"],
                "additionalProperties": False,
                "properties": {
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "size": {**_INT, "minimum": 0, "maximum": 4 * 1024**3},
                },
            },
        },
    },
}

_NDARRAY = {
    "type": "object",
    "required": ["__ndarray__"],
    "additionalProperties": False,
    "properties": {
        "__ndarray__": {
            "type": "object",
            "required": ["dtype", "shape", "data"],
            "additionalProperties": False,
            "properties": {
                "dtype": {"enum": list(NDARRAY_DTYPES)},
                "shape": {"type": "array", "maxItems": MAX_ARRAY_NDIM, "items": {**_INT, "minimum": 0}},
                "data": {"type": "string", "maxLength": 4 * (MAX_ARRAY_BYTES // 3 + 1)},
            },
        }
    },
}


def _tagged(tag: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [tag], "additionalProperties": False, "properties": {tag: body}}


_VALUE = {
    "description": "null, a bool, a finite number, a string, a list, or one tagged object (__ndarray__, __tuple__, "
    "__complex__, __float__, __dict__)",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        {"type": "string", "maxLength": MAX_STRING_CHARS},
        {"type": "array", "maxItems": MAX_LIST_ITEMS, "items": {"$ref": "#/$defs/value"}},
        {"$ref": "#/$defs/ndarray"},
        _tagged("__tuple__", {"type": "array", "maxItems": MAX_LIST_ITEMS, "items": {"$ref": "#/$defs/value"}}),
        _tagged("__complex__", {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}),
        _tagged("__float__", {"enum": ["nan", "inf", "-inf"]}),
        _tagged("__dict__", {"type": "object", "maxProperties": MAX_PARAMS_KEYS,
                             "additionalProperties": {"$ref": "#/$defs/value"}}),
    ],
}

#: JSON Schema of ``params.json``.  Keys that size or shape the model are constrained here; every
#: other known key is checked by its ``params.cfg`` rule after decoding (:func:`check_params`).
PARAMS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"value": _VALUE, "ndarray": _NDARRAY},
    "type": "object",
    "required": ["version", "params"],
    "additionalProperties": False,
    "properties": {
        "version": {"const": 1},
        "params": {
            "type": "object",
            "maxProperties": MAX_PARAMS_KEYS,
            "propertyNames": {"maxLength": 100},
            "additionalProperties": {"$ref": "#/$defs/value"},
            "properties": {
                "N": {"enum": list(SUPPORTED_N)},
                "gridsize": {**_INT, "minimum": 1, "maximum": MAX_GRIDSIZE},
                "n_filters_scale": {**_INT, "minimum": 1, "maximum": MAX_N_FILTERS_SCALE},
                "intensity_scale": {"type": ["number", "null"], "exclusiveMinimum": 0},
                "probe": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/ndarray"}]},
                "object.big": {"type": "boolean"},
                "probe.big": {"type": "boolean"},
                "pad_object": {"type": "boolean"},
                "probe.mask": {"type": "boolean"},
                "amp_activation": {"enum": list(AMP_ACTIVATIONS)},
                "offset": {**_INT, "minimum": 0, "maximum": MAX_CANVAS_SIZE},
                "max_position_jitter": {**_INT, "minimum": 0, "maximum": MAX_CANVAS_SIZE},
                "gaussian_smoothing_sigma": {"type": "number", "minimum": 0, "maximum": MAX_SMOOTHING_SIGMA},
            },
        },
    },
}

_VALIDATORS: dict[str, Any] = {}


def _validator(schema_name: str) -> Any:
    """A compiled Draft 2020-12 validator whose ``integer`` excludes bools and integral floats."""
    if schema_name not in _VALIDATORS:
        from jsonschema import Draft202012Validator, validators

        checker = Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
        )
        cls = validators.extend(Draft202012Validator, type_checker=checker)
        schema = {"manifest.json": MANIFEST_SCHEMA, "params.json": PARAMS_SCHEMA}[schema_name]
        _VALIDATORS[schema_name] = cls(schema)
    return _VALIDATORS[schema_name]


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def validate(doc: Any, member: str, file: str | PathLike | None) -> None:
    """Check ``doc`` (the parsed ``manifest.json`` or ``params.json``) against its schema.

    Raises:
        BundleSchemaError: naming the member, the offending field (dotted path) and what the
            schema expects there.
    """
    from jsonschema.exceptions import best_match

    error = best_match(_validator(member).iter_errors(doc))
    if error is None:
        return
    # an anyOf failure says nothing useful by itself; name what the value may be
    expected = error.schema.get("description") if error.validator == "anyOf" else None
    if expected is None:
        detail = error.message if len(error.message) <= 240 else error.message[:237] + "..."
        message = f"{detail} (found {_short(error.instance)})"
    else:
        message = f"found {_short(error.instance)}; expected {expected}"
    raise BundleSchemaError(message, file=file, member=member, field=_field(error.absolute_path), fix=_FIX)


# --------------------------------------------------------------------------- JSON parsing
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(data: bytes) -> int:
    """Largest nesting depth of ``[``/``{`` in the JSON text ``data`` (strings skipped), without parsing."""
    stripped = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    step = (np.isin(stripped, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(stripped, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(step).max(initial=0))


def _no_constant(name: str) -> Any:
    raise ValueError(f"the non-finite number {name} is not allowed")


def load_json(data: bytes, member: str, file: str | PathLike | None, *, max_bytes: int | None = None) -> Any:
    """Parse the JSON member ``member`` after bounding its size and nesting depth.

    Raises:
        BundleTooLargeError: more than ``max_bytes`` (default ``MAX_JSON_BYTES[member]``).
        BundleSchemaError: nested deeper than :data:`MAX_JSON_DEPTH`.
        BundleSchemaError: not UTF-8 JSON, or holds ``NaN`` / ``Infinity`` / an integer of more than 4300 digits.
    """
    limit = max_bytes if max_bytes is not None else MAX_JSON_BYTES[re.split("[/:]", member)[-1]]
    if len(data) > limit:
        raise BundleTooLargeError(f"holds {len(data)} bytes, more than the {limit} allowed", file=file,
                                  member=member, fix=_FIX)
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise BundleSchemaError(f"nests {depth} levels deep, more than the {MAX_JSON_DEPTH} allowed", file=file,
                                member=member, fix=_FIX)
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleSchemaError(f"is not valid JSON ({_short(str(exc), 160)})", file=file, member=member,
                                fix=_FIX) from None


# --------------------------------------------------------------------------- arrays
def decode_ndarray(spec: Mapping[str, Any], member: str, field: str, file: str | PathLike | None) -> np.ndarray:
    """The array of a schema-valid ``{"dtype", "shape", "data"}`` entry, strictly.

    The dtype must be on :data:`NDARRAY_DTYPES`, ``prod(shape) * itemsize`` at most
    :data:`MAX_ARRAY_BYTES` and equal to the decoded size of ``data`` (strict base64).
    """
    dtype_str = spec.get("dtype")
    if dtype_str not in NDARRAY_DTYPES:
        raise BundleSchemaError(f"dtype {_short(dtype_str)} is not one of {list(NDARRAY_DTYPES)}", file=file,
                                member=member, field=f"{field}.dtype", fix=_FIX)
    dtype = np.dtype(dtype_str)
    shape = spec.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_ARRAY_NDIM or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise BundleSchemaError(f"shape {_short(shape)} is not a list of at most {MAX_ARRAY_NDIM} integers >= 0",
                                file=file, member=member, field=f"{field}.shape", fix=_FIX)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise BundleTooLargeError(f"shape {shape} of {dtype_str} needs {nbytes} bytes, more than the "
                                  f"{MAX_ARRAY_BYTES} allowed", file=file, member=member, field=f"{field}.shape",
                                  fix=_FIX)
    data = spec.get("data")
    if not isinstance(data, str) or len(data) != 4 * math.ceil(nbytes / 3):
        raise BundleSchemaError(f"data is not the base64 of {nbytes} bytes (shape {shape}, dtype {dtype_str})",
                                file=file, member=member, field=f"{field}.data", fix=_FIX)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleSchemaError(f"data is not valid base64 ({exc})", file=file, member=member,
                                field=f"{field}.data", fix=_FIX) from None
    if len(raw) != nbytes:
        raise BundleSchemaError(f"data holds {len(raw)} bytes but shape {shape} of {dtype_str} needs {nbytes}",
                                file=file, member=member, field=f"{field}.data", fix=_FIX)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


# --------------------------------------------------------------------------- cross-checks
#: params.json keys that must equal the manifest's network entry when present (params key -> network key).
NETWORK_PARAM_KEYS: dict[str, str] = {
    "N": "N",
    "gridsize": "gridsize",
    "n_filters_scale": "n_filters_scale",
    "object.big": "object_big",
    "probe.big": "probe_big",
    "pad_object": "pad_object",
    "amp_activation": "amp_activation",
}


def check_params(params: Mapping[str, Any], manifest: Mapping[str, Any], file: str | PathLike | None) -> None:
    """Check decoded params against the ``params.cfg`` rules and against the manifest.

    Raises:
        BundleSchemaError: a known key holds a value its ``params.cfg`` rule refuses (e.g. a string
            where an int belongs), naming ``params.<key>``.
        BundleInconsistentError: a network key (``N``, ``gridsize``, ``n_filters_scale``, ...)
            differs from the manifest's ``network``, or the probe is not ``[N, N, 1]``.
    """
    from ptycho.params import check_value

    for key, value in params.items():
        try:
            check_value(key, value)
        except ConfigError as exc:
            raise BundleSchemaError(f"{_short(exc.value)} is invalid: expected {exc.allowed}", file=file,
                                    member="params.json", field=f"params.{key}", fix=_FIX) from None
    network = manifest["network"]
    for key, net_key in NETWORK_PARAM_KEYS.items():
        if key in params and params[key] is not None and params[key] != network[net_key]:
            raise BundleInconsistentError(
                f"{key}={_short(params[key])} contradicts the manifest's network.{net_key}={network[net_key]!r}",
                file=file, member="params.json", field=f"params.{key}", fix=_FIX,
            )
    probe = params.get("probe")
    N = network["N"]
    if probe is not None and tuple(np.shape(probe)) != (N, N, 1):
        raise BundleInconsistentError(f"probe has shape {tuple(np.shape(probe))}, expected [N, N, 1] = "
                                      f"[{N}, {N}, 1] for the manifest's N", file=file, member="params.json",
                                      field="params.probe", fix=_FIX)


def parameter_bytes(network: Mapping[str, Any], file: str | PathLike | None = None) -> int:
    """Bytes of the float32 parameters of the (schema-valid) ``network``; refuses more than the bound."""
    from ptycho.network_spec import build_network_spec

    try:
        spec = build_network_spec(**network)
    except ConfigError as exc:
        raise BundleSchemaError(f"{_short(exc.value)} is invalid: expected {exc.allowed}", file=file,
                                member="manifest.json", field=f"network.{exc.field}", fix=_FIX) from None
    nbytes = 4 * sum(p.size for p in spec.params())
    if nbytes > MAX_PARAMETER_BYTES:
        raise BundleTooLargeError(
            f"the declared network ({network}) has {nbytes} bytes of parameters, more than the "
            f"{MAX_PARAMETER_BYTES} allowed", file=file, member="manifest.json", field="network", fix=_FIX,
        )
    return nbytes


def member_size_limits(network: Mapping[str, Any], file: str | PathLike | None = None) -> dict[str, int]:
    """Largest size (bytes) of each kind of member for the declared ``network``.

    JSON members have fixed limits (:data:`MAX_JSON_BYTES`); ``canonical_weights.h5`` and each
    model payload hold the float32 parameters once plus :data:`MEMBER_OVERHEAD_BYTES`.
    """
    weights = parameter_bytes(network, file)
    return {
        "manifest.json": MAX_JSON_BYTES["manifest.json"],
        "manifest.dill": MAX_JSON_BYTES["manifest.json"],
        "params.json": MAX_JSON_BYTES["params.json"],
        "weights": weights + MEMBER_OVERHEAD_BYTES,
    }

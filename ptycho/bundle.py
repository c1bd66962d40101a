"""The ``wts.h5.zip`` model bundle: one backend-neutral reader and writer.

Both backends write and read bundles through this module; they only supply their
per-model payload bytes (a Keras archive, a torch state dict).  ``specs/bundle.md``
is the contract.  Layout::

    wts.h5.zip
    ├── manifest.json          read first; format, version, backend, models, checksums
    ├── manifest.dill          the same manifest as a plain-data pickle (upstream tools read it)
    ├── params.json            the params.cfg snapshot (typed JSON, arrays included)
    ├── canonical_weights.h5   the canonical weight file (ptycho.canonical_weights)
    └── <model>/<payload>      per-model backend payload, e.g. autoencoder/model.keras

Safety: nothing in a bundle is ever executed.  Members are read into memory, never
extracted by their archive names; names are checked against an allow-list; the
only pickles are the manifest and the optional upstream-compatible params, and
they are read with an unpickler that refuses every global (so only dict, list,
str, numbers, bool and None can come out).  Writes go to a temporary file in the
target directory and are renamed into place, so a crash never leaves a
half-written bundle behind nor destroys the previous one.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Any
from zlib import error as zlib_error

import numpy as np

from ptycho import bundle_schema
from ptycho.atomic import atomic_path, remove_stale_temps
from ptycho.errors import (
    BundleBackendMismatchError,
    BundleFormatError,
    BundleInconsistentError,
    BundleSchemaError,
    BundleTooLargeError,
    BundleVersionError,
    UnsafeBundleError,
)

BUNDLE_FILENAME = "wts.h5.zip"
FORMAT_NAME = "ptychopinn.wts.h5.zip"
#: Bundle format version written by this code, ``"major.minor"``.  A reader accepts
#: any minor version of a major it knows and refuses a newer major.
FORMAT_VERSION = "2.0"
SUPPORTED_MAJOR = 2
MODEL_NAMES: tuple[str, ...] = ("autoencoder", "diffraction_to_obj")
BACKENDS: tuple[str, ...] = ("tensorflow", "pytorch")
#: Files each backend may put in a model directory; the first one is required.
PAYLOAD_MEMBERS: dict[str, tuple[str, ...]] = {
    "tensorflow": ("model.keras",),
    "pytorch": ("model.pt", "lightning.ckpt"),
}
#: Model settings outside the network spec that change the forward physics; every bundle's
#: manifest carries them at top level so a loader of either backend rebuilds the same model.
PHYSICS_MANIFEST_KEYS: tuple[str, ...] = ("canvas_size", "probe_mask", "gaussian_smoothing_sigma")
TOP_LEVEL_MEMBERS: tuple[str, ...] = (
    "manifest.json",
    "manifest.dill",
    "params.json",
    "canonical_weights.h5",
)
#: Refuse archives whose members would inflate beyond this many bytes in total.
MAX_UNCOMPRESSED_BYTES = 4 * 1024**3

_FRAMEWORK_HINT = {
    "tensorflow": "ptycho_tf.workflows.components.load_inference_bundle (or --backend tensorflow)",
    "pytorch": "ptycho_torch.model_manager.load_torch_bundle (or --backend pytorch)",
}


# --------------------------------------------------------------------------- paths


def bundle_path(location: str | PathLike) -> Path:
    """Resolve a bundle location to the ``.zip`` file.

    Accepts a directory (``<dir>/wts.h5.zip``; it need not exist yet, so a model directory
    can be named before it is created), the zip itself (``*.zip``), or the upstream base
    path ``<dir>/<name>.h5`` (the ``.zip`` is appended).
    """
    p = Path(location)
    if p.suffix == ".zip":
        return p
    if p.suffix == ".h5" and not p.is_dir():
        return p.with_name(p.name + ".zip")
    return p / BUNDLE_FILENAME


# --------------------------------------------------------------------------- plain-data pickles


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that can only build plain containers and scalars."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        raise UnsafeBundleError(
            f"pickle payload references {module}.{name}; only plain data (dict, list, str, numbers, "
            "bool, None) is accepted, nothing that would import or execute code",
            fix="re-save the bundle with ptychopinn, which writes plain-data pickles only",
        )


def load_plain_pickle(data: bytes, *, member: str = "pickle") -> Any:
    """Unpickle ``data`` allowing only plain data; any class or function reference raises."""
    try:
        return _PlainDataUnpickler(io.BytesIO(data)).load()
    except UnsafeBundleError as exc:
        raise UnsafeBundleError(f"{member}: {exc}") from None
    except Exception as exc:  # truncated or garbage pickle
        raise BundleFormatError(f"{member} is not a readable pickle ({exc})") from None


def _check_plain(obj: Any, where: str = "value") -> None:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a string")
            _check_plain(v, f"{where}.{k}")
        return
    raise TypeError(f"{where} has type {type(obj).__name__}, which is not plain data")


def dump_plain_pickle(obj: Any) -> bytes:
    """Pickle plain data (checked) with protocol 4, readable by ``pickle`` and ``dill``."""
    _check_plain(obj)
    return pickle.dumps(obj, protocol=4)


# --------------------------------------------------------------------------- params.cfg codec


def _encode(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if np.isfinite(f) else {"__float__": repr(f)}
    if isinstance(value, (complex, np.complexfloating)):
        return {"__complex__": [float(value.real), float(value.imag)]}
    if isinstance(value, PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.hasobject:
            raise TypeError(f"params['{key}'] is an object array, which cannot be stored safely")
        return {
            "__ndarray__": {
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "data": base64.b64encode(arr.tobytes()).decode("ascii"),
            }
        }
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, key) for v in value]}
    if isinstance(value, list):
        return [_encode(v, key) for v in value]
    if isinstance(value, dict):
        return {"__dict__": {str(k): _encode(v, key) for k, v in value.items()}}
    if hasattr(value, "numpy") and callable(value.numpy):  # a framework tensor
        return _encode(np.asarray(value.numpy()), key)
    raise TypeError(f"params['{key}'] has type {type(value).__name__}, which the bundle cannot store")


def _decode(value: Any, field: str, file: str | PathLike | None) -> Any:
    """The Python value of one schema-valid params.json value (``field`` names it in errors)."""
    if isinstance(value, list):
        return [_decode(v, f"{field}.{i}", file) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return bundle_schema.decode_ndarray(value["__ndarray__"], "params.json", f"{field}.__ndarray__", file)
    if "__tuple__" in value:
        return tuple(_decode(v, f"{field}.__tuple__.{i}", file) for i, v in enumerate(value["__tuple__"]))
    if "__complex__" in value:
        re_, im_ = value["__complex__"]
        return complex(re_, im_)
    if "__float__" in value:
        return float(value["__float__"])
    if "__dict__" in value:
        return {k: _decode(v, f"{field}.__dict__.{k}", file) for k, v in value["__dict__"].items()}
    raise BundleSchemaError(f"unknown encoded value {sorted(value)[:5]}", file=file, member="params.json",
                            field=field)


def encode_params(params: Mapping[str, Any]) -> bytes:
    """Encode a params.cfg snapshot as typed JSON: ints, floats, bools, str, tuples, arrays survive."""
    body = {str(k): _encode(v, str(k)) for k, v in params.items()}
    return json.dumps({"version": 1, "params": body}, indent=1, sort_keys=True).encode()


def decode_params(data: bytes, *, file: str | PathLike | None = None) -> dict[str, Any]:
    """Inverse of :func:`encode_params`, for untrusted bytes.

    The text is size- and depth-bounded before parsing and checked against
    :data:`ptycho.bundle_schema.PARAMS_SCHEMA`; arrays are decoded strictly
    (:func:`ptycho.bundle_schema.decode_ndarray`).  Raises a ``BundleError`` subclass naming
    ``params.json`` and the field.
    """
    doc = bundle_schema.load_json(data, "params.json", file)
    bundle_schema.validate(doc, "params.json", file)
    return {k: _decode(v, f"params.{k}", file) for k, v in doc["params"].items()}


# --------------------------------------------------------------------------- writing


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Members holding float weights barely compress (~7 %) but deflate costs ~1.5 s per
#: 40 MB; they are stored. Text and small members are deflated.
_STORED_SUFFIXES = (".h5", ".keras", ".pt", ".ckpt", ".npz")


def _compression(member: str) -> int:
    """The zip compression for ``member``: stored for binary weight payloads, deflate otherwise."""
    return zipfile.ZIP_STORED if member.endswith(_STORED_SUFFIXES) else zipfile.ZIP_DEFLATED


def write_bundle(
    location: str | PathLike,
    *,
    backend: str,
    model_payloads: Mapping[str, Mapping[str, bytes]],
    params_snapshot: Mapping[str, Any],
    canonical_weights: bytes,
    network: Mapping[str, Any],
    physics: Mapping[str, Any],
    intensity_scale: float,
    framework: Mapping[str, str],
    extra_manifest: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle atomically and return its path.

    ``model_payloads`` maps each model name (``MODEL_NAMES``) to ``{filename: bytes}``
    with filenames from ``PAYLOAD_MEMBERS[backend]``.  ``network`` holds the
    architecture fields (N, gridsize, n_filters_scale, object_big, probe_big,
    pad_object, amp_activation) and ``physics`` the settings of
    :data:`PHYSICS_MANIFEST_KEYS` (canvas size ``P`` in pixels, probe disk mask on/off,
    exit-wave smoothing sigma), so a loader can rebuild the model without reading anything else.
    The snapshot's network keys (``N``, ``gridsize``, ``n_filters_scale``, ``object.big``, ...;
    :data:`ptycho.bundle_schema.NETWORK_PARAM_KEYS`) are set from ``network``, which a loader
    requires them to equal.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is invalid: expected one of {BACKENDS}")
    if tuple(sorted(model_payloads)) != tuple(sorted(MODEL_NAMES)):
        raise ValueError(f"a bundle holds exactly the models {MODEL_NAMES}, got {sorted(model_payloads)}")
    if set(physics) != set(PHYSICS_MANIFEST_KEYS):
        raise ValueError(f"physics must have exactly the keys {PHYSICS_MANIFEST_KEYS}, got {sorted(physics)}")
    allowed = PAYLOAD_MEMBERS[backend]
    # the saved network is the truth: a params snapshot taken from a stale params.cfg (another N or
    # gridsize than the model's) would otherwise make the bundle inconsistent, and it is refused on load
    snapshot = dict(params_snapshot)
    for key, net_key in bundle_schema.NETWORK_PARAM_KEYS.items():
        if net_key in network and key in snapshot:
            snapshot[key] = network[net_key]
    members: dict[str, bytes] = {
        "params.json": encode_params(snapshot),
        "canonical_weights.h5": bytes(canonical_weights),
    }
    for model in MODEL_NAMES:
        files = model_payloads[model]
        if allowed[0] not in files:
            raise ValueError(f"model '{model}' lacks its required payload {allowed[0]!r}")
        for name, data in files.items():
            if name not in allowed:
                raise ValueError(f"'{name}' is not an allowed {backend} payload file (allowed: {allowed})")
            members[f"{model}/{name}"] = bytes(data)

    from ptycho import __version__ as ptycho_version

    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "backend": backend,
        "models": list(MODEL_NAMES),
        "created_by": f"ptychopinn {ptycho_version}",
        "framework": dict(framework),
        "network": dict(network),
        "canvas_size": int(physics["canvas_size"]),
        "probe_mask": bool(physics["probe_mask"]),
        "gaussian_smoothing_sigma": float(physics["gaussian_smoothing_sigma"]),
        "intensity_scale": float(intensity_scale),
        "members": {name: {"sha256": _sha256(data), "size": len(data)} for name, data in members.items()},
    }
    if extra_manifest:
        clash = set(extra_manifest) & set(manifest)
        if clash:
            raise ValueError(f"extra_manifest may not override {sorted(clash)}")
        manifest.update(extra_manifest)
    _check_plain(manifest, "manifest")

    target = bundle_path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        zf.writestr("manifest.dill", dump_plain_pickle(manifest))
        for name, data in members.items():
            zf.writestr(name, data, compress_type=_compression(name))
    return target


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Bundle:
    """A bundle read into memory and fully validated."""

    path: Path
    manifest: dict[str, Any]
    params: dict[str, Any]
    canonical_weights: bytes
    payloads: dict[str, dict[str, bytes]]

    @property
    def backend(self) -> str:
        return self.manifest["backend"]


def _check_member_name(name: str, path: Path) -> None:
    pure = PurePosixPath(name)
    if name.startswith(("/", "\\")) or pure.is_absolute() or ".." in pure.parts or "\\" in name or ":" in name:
        raise UnsafeBundleError(
            f"member '{name}' would escape the bundle directory", file=path, fix="do not load this file"
        )


def _parse_version(text: Any, path: Path) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in str(text).split("-")[0].split("."))
    except ValueError:
        raise BundleFormatError(f"manifest version {_short(text)} is not 'major.minor'", file=path) from None
    return major, minor


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    """The inflated bytes of one member, refusing more than ``limit`` bytes before inflating.

    ``zipfile`` stops inflating at the size the archive declares (``info.file_size``) and checks the
    CRC, so at most ``limit`` bytes are ever allocated, in one buffer (no chunk list, no copy).
    """
    if info.file_size > limit:
        raise BundleTooLargeError(
            f"inflates to {info.file_size} bytes, more than the {limit} this bundle may hold there",
            file=path, member=info.filename, fix="do not load this file",
        )
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size)
            if fh.read(1):
                raise zipfile.BadZipFile("more data than the archive declares")
    except (zipfile.BadZipFile, zlib_error, EOFError, OSError, NotImplementedError) as exc:
        raise BundleFormatError(
            f"is corrupt ({exc})", file=path, member=info.filename, fix="re-save the bundle"
        ) from None
    if len(data) != info.file_size:
        raise BundleFormatError("is truncated", file=path, member=info.filename, fix="re-save the bundle")
    return data


def _check_archive(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """Structural checks of the archive itself; returns ``{name: ZipInfo}``."""
    infos = zf.infolist()
    if len(infos) > 64:
        raise UnsafeBundleError(f"archive holds {len(infos)} members; a bundle has at most 8", file=path)
    names = [i.filename for i in infos]
    for info in infos:
        _check_member_name(info.filename, path)
        mode = (info.external_attr >> 16) & 0o170000
        if mode == 0o120000:
            raise UnsafeBundleError(f"member '{info.filename}' is a symbolic link", file=path)
    if len(set(names)) != len(names):
        raise UnsafeBundleError("archive holds duplicate member names", file=path)
    if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED_BYTES:
        raise BundleTooLargeError("archive would inflate beyond the size limit "
                                  f"({MAX_UNCOMPRESSED_BYTES} bytes)", file=path)
    return {i.filename: i for i in infos}


def _check_manifest_head(manifest: Any, path: Path, expected_backend: str | None) -> None:
    """Format, version and backend, checked before the full schema (so each gets its own error)."""
    if not isinstance(manifest, dict):
        raise BundleSchemaError(f"is a {type(manifest).__name__}, expected a JSON object", file=path,
                                member="manifest.json", fix="re-save the bundle")
    for key in ("format", "version", "backend"):
        if key not in manifest:
            raise BundleFormatError(f"manifest.json lacks the key '{key}'", file=path, fix="re-save the bundle")
    if manifest["format"] != FORMAT_NAME:
        raise BundleFormatError(f"manifest format {_short(manifest['format'])} is not {FORMAT_NAME!r}", file=path)
    major, _minor = _parse_version(manifest["version"], path)
    if major > SUPPORTED_MAJOR:
        raise BundleVersionError(
            f"bundle format version {manifest['version']} is newer than this ptychopinn understands "
            f"(up to {SUPPORTED_MAJOR}.x)",
            file=path,
            fix="upgrade ptychopinn",
        )
    if major < SUPPORTED_MAJOR:
        raise BundleFormatError(
            f"bundle format version {manifest['version']} predates this format", file=path,
            fix="retrain with this ptychopinn",
        )
    backend = manifest["backend"]
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise BundleFormatError(f"manifest backend {_short(backend)} is not one of {BACKENDS}", file=path)
    if expected_backend is not None and backend != expected_backend:
        raise BundleBackendMismatchError(
            f"this bundle was written by the {backend} backend, but the {expected_backend} loader was "
            f"called",
            file=path,
            fix=f"load it with {_FRAMEWORK_HINT[backend]}",
        )


def read_bundle(location: str | PathLike, *, expected_backend: str | None = None) -> Bundle:
    """Read and validate a bundle without executing anything from it.

    Everything the bundle declares is checked before anything else is read or allocated
    (``specs/bundle.md``, "Validation"): the manifest against
    :data:`ptycho.bundle_schema.MANIFEST_SCHEMA` (types, allowed values, network bounds), each
    member's size against what the declared network needs, then each member is inflated into
    one buffer of at most that size and checked against its sha256, and ``params.json`` is
    checked against :data:`ptycho.bundle_schema.PARAMS_SCHEMA`, the ``params.cfg`` rules and the
    manifest.  Nothing global is changed.

    Raises (all subclasses of :class:`ptycho.errors.BundleError`):
    ``BundleFormatError`` for a missing, truncated or non-zip file, a missing member, a
    checksum mismatch, or a legacy upstream archive; ``BundleSchemaError`` (a
    ``BundleFormatError``) for a manifest or params value of the wrong type, outside its
    allowed values or bounds, or nested too deeply; ``BundleInconsistentError`` when
    params.json contradicts the manifest or a member's size differs from the declared one;
    ``UnsafeBundleError`` for members escaping the directory, unexpected members (such as
    ``custom_objects.dill``), symlinks; ``BundleTooLargeError`` (an ``UnsafeBundleError``)
    for members or networks larger than allowed; ``BundleVersionError`` for a newer format
    major version; ``BundleBackendMismatchError`` when ``expected_backend`` differs from the
    manifest's.
    """
    path = bundle_path(location)
    remove_stale_temps(path)  # leftovers of saves killed mid-write (never a live concurrent save's)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no model bundle here. Fix: pass the directory that holds {BUNDLE_FILENAME}")
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise BundleFormatError(
            "not a zip archive (truncated or corrupt)", file=path, fix="re-save the model bundle"
        )
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BundleFormatError(f"cannot open the archive ({exc})", file=path) from None
    with zf:
        infos = _check_archive(zf, path)
        if "manifest.json" not in infos:
            if "manifest.dill" in infos:
                raise BundleFormatError(
                    "legacy upstream PtychoPINN archive (manifest.dill and custom_objects.dill, no "
                    "manifest.json); loading it would require unpickling code from the archive, which "
                    "ptychopinn never does",
                    file=path,
                    fix="retrain with ptychopinn, or export the weights with upstream PtychoPINN in a "
                    "trusted environment into the canonical weight format (specs/canonical-weights.md)",
                )
            raise BundleFormatError("missing member 'manifest.json'", file=path, fix="re-save the bundle")

        raw = _read_member(zf, infos["manifest.json"], bundle_schema.MAX_JSON_BYTES["manifest.json"], path)
        manifest = bundle_schema.load_json(raw, "manifest.json", path)
        _check_manifest_head(manifest, path, expected_backend)
        bundle_schema.validate(manifest, "manifest.json", path)
        backend = manifest["backend"]
        limits = bundle_schema.member_size_limits(manifest["network"], path)

        allowed = set(TOP_LEVEL_MEMBERS) | {f"{m}/{f}" for m in MODEL_NAMES for f in PAYLOAD_MEMBERS[backend]}
        unexpected = sorted(set(infos) - allowed - {n for n in infos if n.endswith("/")})
        if unexpected:
            raise UnsafeBundleError(
                f"unexpected members {unexpected}; a {backend} bundle may hold only {sorted(allowed)}",
                file=path,
                fix="do not load archives from untrusted sources; re-save the bundle with ptychopinn",
            )
        declared: dict[str, dict[str, Any]] = manifest["members"]
        for name, meta in declared.items():  # every size is checked before any member is inflated
            if name not in allowed or name in ("manifest.json", "manifest.dill"):
                raise UnsafeBundleError(f"manifest declares the unexpected member '{name}'", file=path)
            limit = limits.get(name, limits["weights"])
            if meta["size"] > limit:
                raise BundleTooLargeError(
                    f"declared size {meta['size']} exceeds the {limit} bytes this member may hold for the "
                    f"declared network", file=path, member="manifest.json", field=f"members.{name}.size",
                    fix="do not load this file",
                )
            if name in infos and infos[name].file_size != meta["size"]:
                raise BundleInconsistentError(
                    f"the archive says member '{name}' holds {infos[name].file_size} bytes, the manifest "
                    f"declares {meta['size']}", file=path, member="manifest.json", field=f"members.{name}.size",
                    fix="re-save the bundle",
                )
        for required in ("params.json", "canonical_weights.h5",
                         *(f"{m}/{PAYLOAD_MEMBERS[backend][0]}" for m in MODEL_NAMES)):
            if required not in declared or required not in infos:
                raise BundleFormatError(f"missing member '{required}'", file=path, fix="re-save the bundle")

        contents: dict[str, bytes] = {}
        for name, meta in declared.items():
            if name not in infos:
                raise BundleFormatError(f"missing member '{name}'", file=path, fix="re-save the bundle")
            data = _read_member(zf, infos[name], meta["size"], path)
            if _sha256(data) != meta["sha256"]:
                raise BundleFormatError(
                    f"member '{name}' does not match its checksum (corrupt or edited)", file=path,
                    fix="re-save the bundle",
                )
            contents[name] = data
        params = decode_params(contents.pop("params.json"), file=path)
        bundle_schema.check_params(params, manifest, path)
        payloads: dict[str, dict[str, bytes]] = {m: {} for m in MODEL_NAMES}
        for model in MODEL_NAMES:
            for fname in PAYLOAD_MEMBERS[backend]:
                key = f"{model}/{fname}"
                if key in contents:
                    payloads[model][fname] = contents.pop(key)
    return Bundle(
        path=path,
        manifest=manifest,
        params=params,
        canonical_weights=contents["canonical_weights.h5"],
        payloads=payloads,
    )


def restore_params(cfg: dict[str, Any], snapshot: Mapping[str, Any]) -> None:
    """Restore a params snapshot into ``cfg`` in place: every snapshot key gets its exact value.

    Keys absent from the snapshot are left as they are (as upstream's
    ``params.cfg.update``); arrays are copied so the bundle object stays immutable.
    """
    for key, value in snapshot.items():
        cfg[key] = value.copy() if isinstance(value, np.ndarray) else value

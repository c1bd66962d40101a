"""Records: what one worker wrote for one scenario and phase, as plain files.

``seconds`` are wall-clock, ``cpu_seconds`` the process CPU time (``time.process_time``; with one
thread per worker it is what the wall time would be on an otherwise idle core).

Layout (``RUN`` = the run directory)::

    RUN/<sid>/<backend>/<phase>.json   the record (schema :data:`SCHEMA`)
    RUN/<sid>/<backend>/<phase>.npz    its arrays, keyed '<stage>/<tensor>'

The JSON (``plan: HARNESS.md``, "Record JSON")::

    {"schema": SCHEMA, "scenario": sid, "backend": B, "phase": "produce"|"consume", "mutant": name|null,
     "versions": {...}, "device": "cpu"|"cuda:0", "seconds": float, "cpu_seconds": float,
     "stages": {stage: {"status": "ok"|"error", "seconds": float, "cpu_seconds": float,
                        "error": {"type", "message", "traceback"}|null,
                        "arrays": [npz keys], "values": {JSON values}}},
     "params_cfg": {point: {key: {"type", "value", "shape", "dtype"}}},
     "bundle_layout": {"members", "manifest", "manifest_keys", "backend", "weights", "read_error"}|null}

``params_cfg`` entries are typed (:func:`encode_params_cfg`): ``type`` is the Python type name
(``'int'``, ``'float'``, ``'str'``, ``'bool'``, ``'NoneType'``, ``'list'``, ``'tuple'``, ``'dict'``,
``'complex'``, ``'ndarray'``; NumPy scalars as ``'numpy.float64'`` ...), ``value`` its JSON form
(non-finite floats as the strings ``'nan'``/``'inf'``/``'-inf'``, complex as ``[re, im]``), and an
ndarray's value lives in the npz under ``params_cfg/<point>/<key>`` (``value`` null, ``shape`` and
``dtype`` given).  Every file is written atomically (:mod:`ptycho.atomic`); npz files are written
byte-deterministically (fixed zip timestamps, sorted keys), so identical arrays give identical bytes.
Nothing here imports tensorflow or torch.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.atomic import atomic_path, atomic_write_bytes

__all__ = [
    "SCHEMA",
    "LazyArrays",
    "Record",
    "decode_params_cfg",
    "encode_params_cfg",
    "load_record",
    "record_paths",
    "write_npz",
    "write_record",
]

SCHEMA = "ptychopinn.conformance.record/1"
#: Zip timestamp of every npz member (the zip epoch), so npz bytes depend on the arrays only.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- npz
def write_npz(path: str | PathLike, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` (``np.load`` reads it) atomically and deterministically.

    Keys may contain ``/``.  Members are sorted by key and carry a fixed timestamp, so the same
    arrays always give the same bytes.  Object arrays are refused (no pickles).
    """
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            arr = np.asarray(arrays[key])
            if arr.dtype.hasobject:
                raise TypeError(f"array '{key}' has dtype object, which an npz cannot hold without pickling")
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    return path


class LazyArrays(Mapping[str, np.ndarray]):
    """Read-only mapping over an npz file, loading each array on first access (and caching it).

    A missing file is an empty mapping.  The file is opened per access, so no handle stays open.
    """

    def __init__(self, path: str | PathLike) -> None:
        self.path = Path(path)
        self._cache: dict[str, np.ndarray] = {}
        self._keys: list[str] | None = None

    def _files(self) -> list[str]:
        if self._keys is None:
            if not self.path.exists():
                self._keys = []
            else:
                with np.load(self.path, allow_pickle=False) as npz:
                    self._keys = list(npz.files)
        return self._keys

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._cache:
            if key not in self._files():
                raise KeyError(f"{key!r} is not in {self.path}")
            with np.load(self.path, allow_pickle=False) as npz:
                self._cache[key] = npz[key]
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._files())

    def __len__(self) -> int:
        return len(self._files())

    def __contains__(self, key: object) -> bool:
        return key in self._files()


# --------------------------------------------------------------------------- params.cfg snapshots
def _type_name(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "ndarray"
    t = type(value)
    if t.__module__ == "builtins":
        return t.__name__
    if isinstance(value, np.generic):
        return f"numpy.{t.__name__}"
    return f"{t.__module__}.{t.__qualname__}"


def _jsonable(value: Any) -> Any:
    """The JSON form of a params value (see the module docstring); unknown objects become their repr."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, complex):
        return [_jsonable(value.real), _jsonable(value.imag)]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, PathLike):
        return str(value)
    return repr(value)


def encode_params_cfg(cfg: Mapping[str, Any], point: str) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Encode one ``params.cfg`` snapshot: ``({key: typed entry}, {npz key: array})`` (module docstring)."""
    entries: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    for key in sorted(cfg, key=str):
        value = cfg[key]
        entry: dict[str, Any] = {"type": _type_name(value), "value": None, "shape": None, "dtype": None}
        if isinstance(value, np.ndarray):
            entry["shape"] = list(value.shape)
            entry["dtype"] = value.dtype.name
            arrays[f"params_cfg/{point}/{key}"] = value
        else:
            entry["value"] = _jsonable(value)
        entries[str(key)] = entry
    return entries, arrays


def _decode_value(entry: Mapping[str, Any]) -> Any:
    kind, value = entry["type"], entry["value"]
    if kind in ("float", "numpy.float64", "numpy.float32") and isinstance(value, str):
        return float(value)
    if kind == "tuple":
        return tuple(value)
    if kind == "complex":
        return complex(float(value[0]), float(value[1]))
    return value


def decode_params_cfg(
    entries: Mapping[str, Mapping[str, Any]], arrays: Mapping[str, np.ndarray], point: str
) -> dict[str, Any]:
    """Inverse of :func:`encode_params_cfg` for the JSON types (NumPy scalars come back as Python numbers)."""
    out: dict[str, Any] = {}
    for key, entry in entries.items():
        out[key] = arrays[f"params_cfg/{point}/{key}"] if entry["type"] == "ndarray" else _decode_value(entry)
    return out


# --------------------------------------------------------------------------- records
def record_paths(run_dir: str | PathLike, sid: str, backend: str, phase: str) -> tuple[Path, Path]:
    """``(RUN/<sid>/<backend>/<phase>.json, .../<phase>.npz)``."""
    base = Path(run_dir) / sid / backend
    return base / f"{phase}.json", base / f"{phase}.npz"


def write_record(
    run_dir: str | PathLike, sid: str, backend: str, phase: str, doc: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
) -> Path:
    """Write ``<phase>.npz`` then ``<phase>.json`` (the JSON last: its presence means the record is complete).

    ``doc`` holds every field of the module docstring but ``schema``; values are made JSON-safe
    (non-finite floats become ``'nan'``/``'inf'``/``'-inf'``, NumPy scalars Python numbers).
    """
    json_path, npz_path = record_paths(run_dir, sid, backend, phase)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_npz(npz_path, arrays)
    body = _jsonable({"schema": SCHEMA, **doc})  # NaN/inf and NumPy scalars anywhere in the doc stay valid JSON
    atomic_write_bytes(json_path, (json.dumps(body, indent=1, sort_keys=True, allow_nan=False) + "\n").encode())
    return json_path


@dataclass
class Record:
    """One record read back: the JSON fields plus :attr:`arrays` (lazy)."""

    path: Path
    scenario: str
    backend: str
    phase: str
    mutant: str | None
    versions: dict[str, str]
    device: str
    #: stage -> ``{"status", "seconds", "error", "arrays", "values"}`` (the JSON form)
    stages: dict[str, dict[str, Any]]
    #: point -> key -> typed entry (the JSON form; :meth:`params` decodes one point)
    params_cfg: dict[str, dict[str, dict[str, Any]]]
    bundle_layout: dict[str, Any] | None
    arrays: LazyArrays
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def params(self, point: str) -> dict[str, Any]:
        """The decoded params.cfg snapshot at ``point`` (``KeyError`` when not recorded)."""
        return decode_params_cfg(self.params_cfg[point], self.arrays, point)

    def ok(self, stage: str) -> bool:
        """True when ``stage`` was recorded with status ``'ok'``."""
        return (self.stages.get(stage) or {}).get("status") == "ok"


def load_record(run_dir: str | PathLike, sid: str, backend: str, phase: str) -> Record:
    """Read ``RUN/<sid>/<backend>/<phase>.json`` (+ its npz, lazily).

    Raises ``FileNotFoundError`` when the JSON is absent and ``ValueError`` for another schema.
    """
    json_path, npz_path = record_paths(run_dir, sid, backend, phase)
    doc = json.loads(json_path.read_text())
    schema = doc.get("schema")
    if schema != SCHEMA:
        raise ValueError(f"{json_path}: schema {schema!r}, expected {SCHEMA!r}")
    return Record(
        path=json_path,
        scenario=doc["scenario"],
        backend=doc["backend"],
        phase=doc["phase"],
        mutant=doc.get("mutant"),
        versions=dict(doc.get("versions") or {}),
        device=doc.get("device", "cpu"),
        stages=dict(doc.get("stages") or {}),
        params_cfg=dict(doc.get("params_cfg") or {}),
        bundle_layout=doc.get("bundle_layout"),
        arrays=LazyArrays(npz_path),
        raw=doc,
    )

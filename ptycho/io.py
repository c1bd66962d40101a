"""Readers (and fixture writers) of the HDF5 formats users have: CXI and Ptychodus' training files.

Both become a :class:`~ptycho.raw_data.RawData`: ``RawData.from_file`` (and so both CLIs'
data-file options) dispatches here for HDF5 files (:func:`read_hdf5_fields` returns the
constructor arguments, so this module never imports ``raw_data``), and ``ptycho_convert``
writes any of them as the NPZ contract.  Formats (``specs/data.md``, "Other input formats"):

CXI (Coherent X-ray Imaging, cxidb.org, spec 1.6)
    ``/entry_1/data_1/data`` (or ``/entry_1/instrument_1/detector_1/data``) ``[M, N, N]``
    detector frames (intensity: integer counts or float), ``/entry_1/sample_1/geometry_1/translation``
    (or ``/entry_1/data_1/translation``) ``[M, 3]`` probe positions on the sample in metres
    (x, y, z; z ignored), ``detector_1/distance`` (m), ``detector_1/x_pixel_size`` /
    ``y_pixel_size`` (m), ``source_1/wavelength`` (m) or ``source_1/energy`` (J), optional
    ``detector_1/mask`` (non-zero = bad pixel), optional probe ``/entry_1/image_1/data`` (or
    ``source_1/illumination``) and object ``/entry_1/image_2/data`` (layer 0).  Frames are read
    as intensity unless ``diffraction_is`` says otherwise.  Without a probe the default probe
    (:func:`ptycho.probe.get_default_probe`) is used and a warning is logged.

Ptychodus training data (``ptychodus.api.io.save_training_data``)
    ``patterns`` ``[M, N, N]`` (the detector's dtype), ``bad_pixels`` ``[N, N]`` bool, ``probe``
    ``[modes, N, N]``, ``object`` ``[H, W]``, ``probe_position_x_px`` / ``probe_position_y_px``
    ``[M]`` object pixels, scalars ``object_pixel_width_m``, ``object_pixel_height_m``,
    ``detector_object_distance_m``, ``photon_energy_eV``.

Positions are converted to object pixels in ONE place, :func:`translations_to_pixels`, with the
object-plane pixel size of :func:`object_pixel_size`, ``wavelength * distance / (N * detector_pixel)``.
With an object image the translation origin is the object's centre (pixel ``(W - 1) / 2``, as
Ptychodus maps positions); without one the smallest translation is placed at pixel ``N / 2``.

Untrusted input: external links, external raw storage and virtual datasets are refused (they
would make h5py open other files); every dataset's shape and dtype is checked before its data
is read; errors are :class:`~ptycho.errors.DataContractError` naming file, field and fix.
"""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptycho.errors import DataContractError

if TYPE_CHECKING:
    from ptycho.raw_data import DiffractionKind, RawData

__all__ = [
    "HDF5_SUFFIXES",
    "is_hdf5",
    "object_pixel_size",
    "read_hdf5_fields",
    "translations_to_pixels",
    "wavelength_from_energy_J",
    "write_cxi",
    "write_ptychodus_training",
]

logger = logging.getLogger(__name__)

#: File suffixes read as HDF5 regardless of their first bytes.
HDF5_SUFFIXES: tuple[str, ...] = (".cxi", ".h5", ".hdf5", ".hdf", ".nxs")
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Planck constant times the speed of light, J*m (CODATA 2018, exact).
HC_JM = 6.62607015e-34 * 299792458.0
#: Joules per electronvolt (exact).
EV_J = 1.602176634e-19

# CXI paths
_CXI_DATA = ("/entry_1/data_1/data", "/entry_1/instrument_1/detector_1/data")
_CXI_TRANSLATION = ("/entry_1/sample_1/geometry_1/translation", "/entry_1/data_1/translation")
_CXI_DETECTOR = "/entry_1/instrument_1/detector_1"
_CXI_SOURCE = "/entry_1/instrument_1/source_1"
_CXI_PROBE = ("/entry_1/image_1/data", "/entry_1/instrument_1/source_1/illumination")
_CXI_OBJECT = ("/entry_1/image_2/data",)
# Ptychodus training-file keys (ptychodus.api.io.TrainingDataFileKeys)
_PTD_KEYS = ("patterns", "probe", "probe_position_x_px", "probe_position_y_px")

_CXI_FIX = "write the file to the CXI 1.6 layout (see specs/data.md, 'Other input formats')"


# --------------------------------------------------------------------------- geometry (the one place)
def wavelength_from_energy_J(energy_J: float) -> float:
    """Photon wavelength in metres, ``h c / E``."""
    return HC_JM / float(energy_J)


def object_pixel_size(wavelength_m: float, distance_m: float, N: int, detector_pixel_m: float) -> float:
    """Pixel size in the object plane (m) of an ``N x N`` far-field pattern: ``lambda z / (N p)``."""
    return float(wavelength_m) * float(distance_m) / (int(N) * float(detector_pixel_m))


def translations_to_pixels(translation_m: np.ndarray, pixel_m: float, origin_px: float | None, N: int) -> np.ndarray:
    """Probe positions in metres ``[M]`` (one axis) -> object pixels, float64 ``[M]``.

    ``origin_px`` is the pixel of translation 0 (the object's centre ``(W - 1) / 2`` when an
    object image defines the frame); None places the smallest translation at pixel ``N / 2``.
    """
    t = np.asarray(translation_m, dtype=np.float64) / float(pixel_m)
    if origin_px is None:
        return t - t.min() + N / 2.0
    return t + float(origin_px)


# --------------------------------------------------------------------------- safety
def is_hdf5(path: str | PathLike) -> bool:
    """True for a suffix of :data:`HDF5_SUFFIXES` or the HDF5 signature at byte 0."""
    p = Path(path)
    if p.suffix.lower() in HDF5_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            return fh.read(8) == _SIGNATURE
    except OSError:
        return False


def _open(path: Path) -> Any:
    import h5py

    file = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataContractError(
            f"cannot be read as an HDF5 file ({exc})", file=file,
            fix="pass an NPZ archive of the data contract, a CXI file or a Ptychodus training file",
        ) from exc
    try:
        _refuse_external(f, file)
    except BaseException:
        f.close()
        raise
    return f


def _refuse_external(f: Any, file: str) -> None:
    """Refuse external links, external raw storage and virtual datasets anywhere in the file."""
    import h5py

    found: list[str] = []

    def visit(name: str, link: Any) -> None:
        if isinstance(link, h5py.ExternalLink):
            found.append(f"'{name}' is an external link to {link.filename}:{link.path}")
        elif isinstance(link, h5py.HardLink):
            obj = f.get(name, getlink=False)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    found.append(f"'{name}' is a virtual dataset")
                elif obj.external:
                    found.append(f"'{name}' keeps its data in external file(s)")

    f.visititems_links(visit)
    if found:
        raise DataContractError(
            f"refers to data outside the file ({'; '.join(found[:3])}), which is never followed",
            file=file,
            field=found[0].split("'")[1],
            fix="copy the data into the file (e.g. h5py's copy of the target datasets) and pass that file",
        )


def _dataset(f: Any, paths: tuple[str, ...], file: str, *, required: bool, fix: str = _CXI_FIX) -> Any:
    import h5py

    for p in paths:
        obj = f.get(p)
        if obj is None:
            continue
        if not isinstance(obj, h5py.Dataset):
            raise DataContractError(f"is a {type(obj).__name__}, expected a dataset", file=file, field=p, fix=fix)
        return obj
    if required:
        raise DataContractError(
            "is missing" + (f" (also looked at {', '.join(paths[1:])})" if len(paths) > 1 else ""),
            file=file, field=paths[0], fix=fix,
        )
    return None


def _read(ds: Any, file: str, kinds: str, shape: tuple[int | None, ...] | None, what: str, fix: str) -> np.ndarray:
    """Check dtype kind and shape (None = any size on that axis) BEFORE reading, then read."""
    dt = ds.dtype
    if dt.kind not in kinds:
        raise DataContractError(f"has dtype {dt}, expected {what}", file=file, field=ds.name, fix=fix)
    if shape is not None and (
        len(ds.shape) != len(shape) or any(s is not None and s != d for s, d in zip(shape, ds.shape, strict=True))
    ):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise DataContractError(f"has shape {ds.shape}, expected {want} ({what})", file=file, field=ds.name, fix=fix)
    return np.asarray(ds[()])


def _scalar(f: Any, paths: tuple[str, ...], file: str, what: str, fix: str, *, required: bool = True) -> float | None:
    ds = _dataset(f, paths, file, required=required, fix=fix)
    if ds is None:
        return None
    arr = _read(ds, file, "iuf", None, what, fix)
    if arr.size != 1:
        raise DataContractError(f"has shape {arr.shape}, expected a scalar ({what})", file=file, field=ds.name,
                                fix=fix)
    v = float(arr.reshape(()))
    if not (np.isfinite(v) and v > 0):
        raise DataContractError(f"is {v!r}, expected a positive number ({what})", file=file, field=ds.name, fix=fix)
    return v


# --------------------------------------------------------------------------- readers
def read_hdf5_fields(path: str | PathLike, *, diffraction_is: DiffractionKind = "auto") -> dict[str, Any]:
    """Read a CXI file or a Ptychodus training file (dispatch on the layout).

    Returns the keyword arguments of ``RawData(...)`` (``xcoords``, ``ycoords``,
    ``xcoords_start``, ``ycoords_start``, ``diff3d``, ``probeGuess``, ``scan_index``,
    ``objectGuess``, ``metadata``, ``diffraction_is``, ``bad_pixels``, ``source``);
    ``RawData.from_file`` validates them.
    """
    path = Path(path)
    with _open(path) as f:
        if "entry_1" in f:
            return _read_cxi_open(f, str(path), diffraction_is)
        if all(k in f for k in _PTD_KEYS):
            return _read_ptd_open(f, str(path), diffraction_is)
        keys = sorted(f.keys())[:12]
    raise DataContractError(
        f"is an HDF5 file of unknown layout (top-level keys: {keys}): neither CXI (/entry_1) nor a Ptychodus "
        f"training file ({', '.join(_PTD_KEYS)}); a Ptychodus product file holds no diffraction patterns",
        file=str(path),
        fix="export the scan from Ptychodus as training data (NPZ or HDF5) or write it as CXI",
    )


def _fields(x: np.ndarray, y: np.ndarray, frames: np.ndarray, probe: np.ndarray, obj: np.ndarray | None,
            meta: dict[str, Any], diffraction_is: DiffractionKind, bad: np.ndarray | None, file: str) -> dict[str, Any]:
    return {"xcoords": x, "ycoords": y, "xcoords_start": x, "ycoords_start": y, "diff3d": frames, "probeGuess": probe,
            "scan_index": None, "objectGuess": obj, "metadata": meta, "diffraction_is": _units(diffraction_is),
            "bad_pixels": bad, "source": file}


def _units(diffraction_is: DiffractionKind) -> DiffractionKind:
    """Detector frames are intensity unless the caller says otherwise."""
    return "intensity" if diffraction_is == "auto" else diffraction_is


def _read_cxi_open(f: Any, file: str, diffraction_is: DiffractionKind) -> dict[str, Any]:
    data_ds = _dataset(f, _CXI_DATA, file, required=True)
    if data_ds.ndim != 3 or data_ds.shape[1] != data_ds.shape[2]:
        raise DataContractError(
            f"has shape {data_ds.shape}, expected [M, N, N] square frames", file=file, field=data_ds.name,
            fix="crop the frames to a square N x N around the beam centre before writing the CXI file",
        )
    M, N = int(data_ds.shape[0]), int(data_ds.shape[1])
    tr_ds = _dataset(f, _CXI_TRANSLATION, file, required=True)
    translation = _read(tr_ds, file, "iuf", (M, None), "probe translations [M, 3] in metres", _CXI_FIX)
    if translation.shape[1] < 2:
        raise DataContractError(f"has shape {translation.shape}, expected [M, 3] (x, y, z) in metres", file=file,
                                field=tr_ds.name, fix=_CXI_FIX)
    if not np.isfinite(translation[:, :2]).all():
        raise DataContractError("contains NaN/inf translations", file=file, field=tr_ds.name,
                                fix="drop or repair the non-finite positions")
    distance = _scalar(f, (f"{_CXI_DETECTOR}/distance",), file, "detector distance in metres", _CXI_FIX)
    px = _scalar(f, (f"{_CXI_DETECTOR}/x_pixel_size",), file, "detector pixel width in metres", _CXI_FIX)
    py = _scalar(f, (f"{_CXI_DETECTOR}/y_pixel_size",), file, "detector pixel height in metres", _CXI_FIX,
                 required=False) or px
    wavelength = _scalar(f, (f"{_CXI_SOURCE}/wavelength",), file, "wavelength in metres", _CXI_FIX, required=False)
    if wavelength is None:
        energy = _scalar(f, (f"{_CXI_SOURCE}/energy",), file, "photon energy in joules",
                         f"store {_CXI_SOURCE}/wavelength (m) or {_CXI_SOURCE}/energy (J)")
        wavelength = wavelength_from_energy_J(energy)
    mask_ds = _dataset(f, (f"{_CXI_DETECTOR}/mask",), file, required=False)
    bad = None
    if mask_ds is not None:
        bad = _read(mask_ds, file, "biu", (N, N), "an integer/bool detector mask [N, N] (non-zero = bad)",
                    "store the mask as uint32 [N, N] with 0 for good pixels") != 0
    probe_ds = _dataset(f, _CXI_PROBE, file, required=False)
    probe = None
    if probe_ds is not None:
        probe = _read(probe_ds, file, "iufc", None, "a complex probe", "store the probe as complex [N, N]")
    obj_ds = _dataset(f, _CXI_OBJECT, file, required=False)
    obj = None
    if obj_ds is not None:
        obj = _read(obj_ds, file, "iufc", None, "a complex object", "store the object as complex [H, W]")
        if obj.ndim == 3:
            obj = obj[0]  # layer 0, as Ptychodus' exporters take it
    frames = _read(data_ds, file, "iuf", (M, N, N), "detector frames (counts or intensity)", _CXI_FIX)
    dx = object_pixel_size(wavelength, distance, N, px)
    dy = object_pixel_size(wavelength, distance, N, py)
    ox = oy = None
    if obj is not None and obj.ndim == 2:
        ox, oy = (obj.shape[1] - 1) / 2.0, (obj.shape[0] - 1) / 2.0
    x = translations_to_pixels(translation[:, 0], dx, ox, N)
    y = translations_to_pixels(translation[:, 1], dy, oy, N)
    if probe is None:
        from ptycho.probe import get_default_probe

        logger.warning("%s: no probe image (%s); using the default probe", file, " or ".join(_CXI_PROBE))
        probe = get_default_probe(N)
    meta = {"source_format": "cxi", "wavelength_m": wavelength, "detector_distance_m": distance,
            "detector_pixel_m": [px, py], "object_pixel_m": [dx, dy]}
    return _fields(x, y, frames, probe, obj, meta, diffraction_is, bad, file)


def _read_ptd_open(f: Any, file: str, diffraction_is: DiffractionKind) -> dict[str, Any]:
    fix = "write the file with ptychodus.api.io.save_training_data"
    pat_ds = _dataset(f, ("/patterns",), file, required=True, fix=fix)
    if pat_ds.ndim != 3 or pat_ds.shape[1] != pat_ds.shape[2]:
        raise DataContractError(f"has shape {pat_ds.shape}, expected [M, N, N] square patterns", file=file,
                                field="patterns", fix="crop the patterns to square N x N in Ptychodus first")
    M, N = int(pat_ds.shape[0]), int(pat_ds.shape[1])
    x = _read(_dataset(f, ("/probe_position_x_px",), file, required=True, fix=fix), file, "iuf", (M,),
              "one x position per pattern (object pixels)", fix)
    y = _read(_dataset(f, ("/probe_position_y_px",), file, required=True, fix=fix), file, "iuf", (M,),
              "one y position per pattern (object pixels)", fix)
    probe = _read(_dataset(f, ("/probe",), file, required=True, fix=fix), file, "iufc", None, "a complex probe", fix)
    bad_ds = _dataset(f, ("/bad_pixels",), file, required=False)
    bad = None if bad_ds is None else _read(bad_ds, file, "biu", (N, N), "a bool mask [N, N]", fix)
    obj_ds = _dataset(f, ("/object",), file, required=False)
    obj = None if obj_ds is None else _read(obj_ds, file, "iufc", None, "a complex object", fix)
    if obj is not None and obj.ndim == 3:
        obj = obj[0]
    patterns = _read(pat_ds, file, "iuf", (M, N, N), "diffraction patterns (counts or intensity)", fix)
    meta: dict[str, Any] = {"source_format": "ptychodus_training"}
    for key in ("object_pixel_width_m", "object_pixel_height_m", "detector_object_distance_m", "photon_energy_eV"):
        v = _scalar(f, (f"/{key}",), file, key, fix, required=False)
        if v is not None:
            meta[key] = v
    return _fields(x, y, patterns, probe, obj, meta, diffraction_is, bad, file)


# --------------------------------------------------------------------------- writers (fixtures, round trips)
def write_cxi(
    raw: RawData, path: str | PathLike, *, wavelength_m: float, distance_m: float, detector_pixel_m: float
) -> Path:
    """Write ``raw`` as a CXI file: frames as uint32 counts ``rint(diff3d**2)``, positions in metres.

    Inverse of the CXI reader up to the count rounding: translations are
    ``(pos_px - (W - 1) / 2) * object_pixel_size(...)`` when ``raw`` has an object (written as
    ``image_2``), else ``pos_px * object_pixel_size(...)``.  The probe is written as ``image_1``,
    ``bad_pixels`` as ``detector_1/mask`` (1 = bad), ``data_1/data`` is a soft link to the detector data.
    """
    import h5py

    path = Path(path)
    N = raw.N
    dx = object_pixel_size(wavelength_m, distance_m, N, detector_pixel_m)
    if raw.objectGuess is not None:
        ox, oy = (raw.objectGuess.shape[1] - 1) / 2.0, (raw.objectGuess.shape[0] - 1) / 2.0
    else:
        ox = oy = 0.0
    t = np.zeros((raw.n_points, 3))
    t[:, 0] = (raw.xcoords - ox) * dx
    t[:, 1] = (raw.ycoords - oy) * dx
    counts = np.rint(raw.diff3d.astype(np.float64) ** 2).astype(np.uint32)
    with h5py.File(path, "w") as f:
        f.create_dataset("cxi_version", data=160)
        det = f.create_group(_CXI_DETECTOR)
        det.create_dataset("data", data=counts, compression="gzip", shuffle=True)
        det.create_dataset("distance", data=float(distance_m))
        det.create_dataset("x_pixel_size", data=float(detector_pixel_m))
        det.create_dataset("y_pixel_size", data=float(detector_pixel_m))
        if raw.bad_pixels is not None:
            det.create_dataset("mask", data=raw.bad_pixels.astype(np.uint32))
        src = f.create_group(_CXI_SOURCE)
        src.create_dataset("wavelength", data=float(wavelength_m))
        src.create_dataset("energy", data=HC_JM / float(wavelength_m))
        f.create_group("/entry_1/data_1")["data"] = h5py.SoftLink(f"{_CXI_DETECTOR}/data")
        f.create_group("/entry_1/sample_1/geometry_1").create_dataset("translation", data=t)
        f.create_group("/entry_1/image_1").create_dataset("data", data=raw.probeGuess[None])
        if raw.objectGuess is not None:
            f.create_group("/entry_1/image_2").create_dataset("data", data=raw.objectGuess[None],
                                                              compression="gzip")
    return path


def write_ptychodus_training(raw: RawData, path: str | PathLike, *, photon_energy_eV: float = 10000.0,
                             detector_distance_m: float = 1.0, object_pixel_m: float = 1e-8) -> Path:
    """Write ``raw`` in Ptychodus' HDF5 training layout (``save_training_data``): uint32 counts, bool mask.

    The geometry scalars are written as given (Ptychodus stores them; the reader keeps them as
    metadata, the positions are already object pixels).
    """
    import h5py

    path = Path(path)
    bad = raw.bad_pixels if raw.bad_pixels is not None else np.zeros((raw.N, raw.N), bool)
    with h5py.File(path, "w") as f:
        f.create_dataset("patterns", data=np.rint(raw.diff3d.astype(np.float64) ** 2).astype(np.uint32),
                         compression="lzf")
        f.create_dataset("bad_pixels", data=bad, compression="lzf")
        f.create_dataset("probe", data=raw.probeGuess[None], compression="lzf")
        if raw.objectGuess is not None:
            f.create_dataset("object", data=raw.objectGuess, compression="lzf")
        f.create_dataset("probe_position_x_px", data=raw.xcoords)
        f.create_dataset("probe_position_y_px", data=raw.ycoords)
        f.create_dataset("object_pixel_width_m", data=float(object_pixel_m))
        f.create_dataset("object_pixel_height_m", data=float(object_pixel_m))
        f.create_dataset("detector_object_distance_m", data=float(detector_distance_m))
        f.create_dataset("photon_energy_eV", data=float(photon_energy_eV))
    return path

"""Scan data in the NPZ data contract (``RawData``) and its grouping into network samples.

The contract (``specs/data.md``) for one dataset of ``M`` scan positions and
``N x N`` diffraction patterns:

================ =========== =========== ======================================================
key              shape       dtype       meaning
================ =========== =========== ======================================================
xcoords          [M]         float64     true scan position x (object-canvas column), pixels
ycoords          [M]         float64     true scan position y (object-canvas row), pixels
xcoords_start    [M]         float64     nominal x, pixels (optional; default xcoords)
ycoords_start    [M]         float64     nominal y, pixels (optional; default ycoords)
diff3d           [M, N, N]   float32     diffraction AMPLITUDE sqrt(counts), zero frequency at
                                         pixel (N//2, N//2) (the conventions FFT convention)
probeGuess       [N, N]      complex64   probe (a one-mode stack [1, N, N] is accepted)
bad_pixels       [N, N]      bool        optional detector mask, True = not measured (Ptychodus)
diff3d_units     ()          str         optional "amplitude" | "intensity" (what diff3d holds)
scan_index       [M]         int64       optional, default zeros
objectGuess      [H, W]      complex64   optional object (ground truth of simulations)
Y                [M, N, N]   complex64   optional per-position object patches
norm_Y_I         ()          float64     optional scalar carried through unchanged
_metadata        ()          str         optional JSON object (plain unicode array, never pickled)
================ =========== =========== ======================================================

Intensity vs amplitude is decided in one place, :func:`diffraction_to_amplitude`:
integer-typed ``diff3d`` is photon counts and is converted to ``sqrt(counts)``
(one log line says so); floating data is amplitude unless ``diff3d_units`` (file)
or ``diffraction_is`` (caller, CLI ``--diff3d_units``) says ``'intensity'``.

``RawData`` validates every array on construction and raises
:class:`~ptycho.errors.DataContractError` naming the file, the field and the
fix (``specs/bad-input.md``).  Arrays are stored with the contract dtypes.

This module is backend-neutral: NumPy, SciPy (through :mod:`ptycho.grouping`)
and the NumPy physics reference only.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from ptycho import conventions
from ptycho.atomic import atomic_path
from ptycho.errors import DataContractError
from ptycho.grouping import group_neighbors
from ptycho.npz_safety import check_npz_headers
from ptycho.reference import physics

__all__ = [
    "DIFF3D_UNITS",
    "RawData",
    "DiffractionKind",
    "REQUIRED_KEYS",
    "OPTIONAL_KEYS",
    "GROUPED_KEYS",
    "get_relative_coords",
    "diffraction_to_amplitude",
    "looks_like_intensity",
    "check_object_guess",
    "read_npz_member",
    "key_coords_offsets",
    "key_coords_relative",
    "local_offset_sign",
]

#: Upstream name of the relative-offset sign (defined in :mod:`ptycho.conventions`).
local_offset_sign: int = conventions.LOCAL_OFFSET_SIGN
#: Keys of the grouped dict that the loader feeds to the model (upstream constants).
key_coords_offsets: str = "coords_start_offsets"
key_coords_relative: str = "coords_start_relative"

#: NPZ keys that must be present.  ``diffraction`` is accepted as an alias of ``diff3d``.
REQUIRED_KEYS: tuple[str, ...] = ("xcoords", "ycoords", "diff3d", "probeGuess")
#: NPZ keys that may be present.
OPTIONAL_KEYS: tuple[str, ...] = (
    "xcoords_start",
    "ycoords_start",
    "bad_pixels",
    "diff3d_units",
    "scan_index",
    "objectGuess",
    "Y",
    "norm_Y_I",
    "_metadata",
)
#: Keys of the dict returned by :meth:`RawData.generate_grouped_data` (plus ``sample_indices`` when set).
GROUPED_KEYS: tuple[str, ...] = (
    "diffraction",
    "X_full",
    "X_full_norm",
    "Y",
    "coords_nn",
    "coords_offsets",
    "coords_relative",
    "coords_start_nn",
    "coords_start_offsets",
    "coords_start_relative",
    "nn_indices",
    "objectGuess",
    "bad_pixels",
)

#: What ``diff3d`` holds: ``'auto'`` reads integer dtypes as counts and checks that floating
#: data does not look like intensity, ``'amplitude'`` skips that check, ``'intensity'``
#: converts with ``np.sqrt``.
DiffractionKind = Literal["auto", "amplitude", "intensity"]
_DIFFRACTION_KINDS: tuple[str, ...] = ("auto", "amplitude", "intensity")
#: Values of the optional NPZ key ``diff3d_units`` (and of the CLIs' ``--diff3d_units`` besides ``auto``).
DIFF3D_UNITS: tuple[str, ...] = ("amplitude", "intensity")

logger = logging.getLogger(__name__)

#: Elements examined per chunk when scanning diff3d (bounds temporary memory).
_SCAN_CHUNK_ELEMENTS = 1 << 22
#: Patch pixels cut from objectGuess per physics.object_patches call (bounds temporary memory).
_PATCH_CHUNK_ELEMENTS = 1 << 22

_INTENSITY_FIX = (
    "store the amplitude np.sqrt(counts).astype(np.float32) as diff3d, or declare the units: "
    "add the NPZ key diff3d_units='intensity' (or pass --diff3d_units intensity to the CLIs, "
    "diffraction_is='intensity' to RawData) to convert on load; if these really are amplitudes, "
    "use diff3d_units='amplitude' (--diff3d_units amplitude, diffraction_is='amplitude')"
)


# --------------------------------------------------------------------------- helpers


def _fmt_indices(idx: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (", ..." if len(idx) > limit else "")


def _as_numeric(
    value: ArrayLike, field: str, kinds: str, file: str | None, what: str, fix: str
) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in kinds:
        raise DataContractError(f"has dtype {arr.dtype}, expected {what}", file=file, field=field, fix=fix)
    return arr


def _check_finite(arr: np.ndarray, field: str, file: str | None, fix: str) -> None:
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            where = np.argwhere(bad)[:5].tolist()
            raise DataContractError(
                f"contains {int(bad.sum())} NaN/inf value(s) (first at index {where})",
                file=file,
                field=field,
                fix=fix,
            )


def check_object_guess(objectGuess: ArrayLike, file: str | None) -> np.ndarray:
    """``objectGuess`` validated (a finite 2-D numeric ``[H, W]`` image) as complex64; else DataContractError."""
    o = _as_numeric(objectGuess, "objectGuess", "iufc", file, "a complex object", "store it as complex64")
    if o.ndim != 2 or min(o.shape) == 0:
        raise DataContractError(
            f"has shape {o.shape}, expected a 2-D [H, W] image",
            file=file,
            field="objectGuess",
            fix="store the object as a 2-D complex array (drop singleton axes with np.squeeze)",
        )
    _check_finite(o, "objectGuess", file, "replace NaN/inf object pixels")
    return o.astype(np.complex64, copy=False)


def read_npz_member(
    archive: Any, key: str, required: bool, file: str, keys: set[str] | None = None
) -> np.ndarray | None:
    """``archive[key]`` of an open ``np.load`` NPZ (``allow_pickle=False``), refused or skipped by the data contract.

    A missing key is None, or a DataContractError when ``required``; a pickled object array is never
    loaded: refused when ``required``, else ignored with a ``UserWarning`` (upstream wrote
    ``objectGuess=None`` that way).  ``keys`` defaults to ``archive.files``.
    """
    keys = set(archive.files) if keys is None else keys
    if key not in keys:
        if required:
            raise DataContractError(
                f"required key is missing (found keys: {sorted(keys)})",
                file=file,
                field=key,
                fix=f"add '{key}' to the NPZ file (required keys: {', '.join(REQUIRED_KEYS)})",
            )
        return None
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise DataContractError(
                f"cannot be read ({exc})", file=file, field=key, fix="re-save the array"
            ) from exc
        if required:
            raise DataContractError(
                "is stored as a pickled object array, which is never loaded (unsafe)",
                file=file,
                field=key,
                fix=f"re-save '{key}' as a plain numeric array",
            ) from exc
        warnings.warn(
            f"{file}: field '{key}' is a pickled object array and was ignored "
            "(pickles are never loaded); re-save it as a plain array or drop it",
            UserWarning,
            stacklevel=4,
        )
        return None


def looks_like_intensity(diff3d: np.ndarray) -> bool:
    """Heuristic: does ``diff3d`` hold photon counts (intensity) rather than amplitudes?

    Rule: **every value is an integer and the maximum is >= 2.**

    Measured photon counts are integers; their amplitudes ``sqrt(k)`` are
    integers only where ``k`` is a perfect square, so an amplitude array in which
    *every* value is an integer essentially never occurs once counts of 2 or 3
    appear.  When all values are in ``{0, 1}`` the two readings coincide
    (``sqrt`` is the identity there), so such data is accepted.  Integer dtypes
    follow the same rule.  The heuristic cannot detect non-integer intensities
    (e.g. noiseless simulated ``|F|**2``); pass ``diffraction_is='intensity'``
    for those.  Scans the array in chunks (bounded temporary memory).
    """
    d = np.asarray(diff3d)
    if d.size == 0:
        return False
    if d.dtype.kind in "iu":
        return bool(d.max() >= 2)
    step = max(1, _SCAN_CHUNK_ELEMENTS // max(1, d[0].size)) if d.ndim else 1
    for s in range(0, len(d) if d.ndim else 1, step):
        blk = d[s : s + step] if d.ndim else d
        if not np.array_equal(blk, np.rint(blk)):
            return False
    return bool(np.nanmax(d) >= 2)


def diffraction_to_amplitude(d: np.ndarray, diffraction_is: DiffractionKind, file: str | None) -> np.ndarray:
    """The one place that decides whether ``diff3d`` holds intensity and converts it to amplitude.

    ``d`` is a validated real ``[M, N, N]`` stack (finite, non-negative).  Returns float32
    amplitudes ``[M, N, N]``:

    ============== ================ ==================================================
    diffraction_is dtype of ``d``   result
    ============== ================ ==================================================
    'intensity'    any              ``sqrt(d)``, one INFO log line
    'amplitude'    any              ``d`` unchanged
    'auto'         int / uint       photon counts: ``sqrt(d)``, one INFO log line
    'auto'         float            ``d`` unless :func:`looks_like_intensity` (then
                                    ``DataContractError`` naming ``diff3d_units`` /
                                    ``--diff3d_units``)
    ============== ================ ==================================================
    """
    if diffraction_is == "intensity":
        logger.info("%s: diff3d declared intensity (dtype %s): converted to the amplitude sqrt(intensity)",
                    file or "diff3d", d.dtype)
        return np.sqrt(d, dtype=np.float32)
    if diffraction_is == "auto" and d.dtype.kind in "iu":
        logger.info(
            "%s: diff3d has integer dtype %s: read as photon counts (intensity) and converted to the "
            "amplitude sqrt(counts)", file or "diff3d", d.dtype,
        )
        return np.sqrt(d, dtype=np.float32)
    if diffraction_is == "auto" and looks_like_intensity(d):
        raise DataContractError(
            f"looks like intensity (photon counts), not amplitude: every value is an integer and "
            f"the maximum is {float(d.max()):g} >= 2, and no diff3d_units says what it holds",
            file=file,
            field="diff3d",
            fix=_INTENSITY_FIX,
        )
    return np.asarray(d, dtype=np.float32)


def check_bad_pixels(bad_pixels: ArrayLike | None, N: int, file: str | None) -> np.ndarray | None:
    """Validate a detector bad-pixel mask; bool ``[N, N]`` (True = not measured), or None.

    Accepted: bool or integer 0/1 ``[N, N]`` (one mask shared by every pattern, as Ptychodus
    writes it).  An all-False mask is returned as ``None`` (nothing is masked).  Every pixel
    bad raises: no signal would remain.
    """
    if bad_pixels is None:
        return None
    m = np.asarray(bad_pixels)
    fix = f"store bad_pixels as a bool [{N}, {N}] array (True = pixel not measured), or omit it"
    if m.dtype.kind not in "biu" or (m.dtype.kind != "b" and m.size and not np.isin(m, (0, 1)).all()):
        raise DataContractError(
            f"has dtype {m.dtype}, expected bool (or integers 0/1)", file=file, field="bad_pixels", fix=fix
        )
    if m.shape != (N, N):
        raise DataContractError(
            f"has shape {m.shape}, expected [{N}, {N}] (one mask for every {N} x {N} pattern)",
            file=file,
            field="bad_pixels",
            fix=fix,
        )
    m = m.astype(bool)
    if m.all():
        raise DataContractError(
            "marks every detector pixel bad, so no measured signal remains",
            file=file,
            field="bad_pixels",
            fix="mark only the pixels that were not measured (True = bad)",
        )
    return m if m.any() else None


def _scan_diffraction(d: np.ndarray, file: str | None) -> None:
    """Finite and non-negative checks of a real ``[M, N, N]`` stack, chunked over patterns."""
    step = max(1, _SCAN_CHUNK_ELEMENTS // max(1, d[0].size))
    nonfinite: list[np.ndarray] = []
    negative: list[np.ndarray] = []
    lowest = np.inf
    for s in range(0, len(d), step):
        blk = d[s : s + step]
        if d.dtype.kind == "f":
            bad = ~np.isfinite(blk).all(axis=(1, 2))
            if bad.any():
                nonfinite.append(np.flatnonzero(bad) + s)
                continue
        neg = (blk < 0).any(axis=(1, 2))
        if neg.any():
            negative.append(np.flatnonzero(neg) + s)
            lowest = min(lowest, float(blk.min()))
    if nonfinite:
        idx = np.concatenate(nonfinite)
        raise DataContractError(
            f"{len(idx)} diffraction pattern(s) contain NaN or inf (pattern index {_fmt_indices(idx)})",
            file=file,
            field="diff3d",
            fix="drop those patterns (and their coordinates) or repair them before loading",
        )
    if negative:
        idx = np.concatenate(negative)
        raise DataContractError(
            f"{len(idx)} diffraction pattern(s) contain negative values (minimum {lowest:g}; pattern "
            f"index {_fmt_indices(idx)}); an amplitude sqrt(counts) is never negative",
            file=file,
            field="diff3d",
            fix="clip background-subtracted data with np.clip(d, 0, None) before storing the amplitude",
        )


def get_relative_coords(coords_nn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group centroids and relative offsets of grouped positions.

    Parameters
    ----------
    coords_nn: float64 ``[B, 1, 2, C]`` positions in pixels, ``(x, y)`` on axis 2.

    Returns
    -------
    coords_offsets: float64 ``[B, 1, 2, 1]``, the centroid (mean over the C channels).
    coords_relative: float64 ``[B, 1, 2, C]`` =
        ``conventions.LOCAL_OFFSET_SIGN * (coords_nn - coords_offsets)``; it sums to
        zero over channels and points from each position to the centroid.
    """
    coords_nn = np.asarray(coords_nn, dtype=np.float64)
    if coords_nn.ndim != 4 or coords_nn.shape[1:3] != (1, 2):
        raise ValueError(f"coords_nn must have shape [B, 1, 2, C], got {coords_nn.shape}")
    coords_offsets = coords_nn.mean(axis=3, keepdims=True)
    coords_relative = conventions.LOCAL_OFFSET_SIGN * (coords_nn - coords_offsets)
    return coords_offsets, coords_relative


def _group_positions(x: np.ndarray, y: np.ndarray, nn_indices: np.ndarray) -> np.ndarray:
    """``[B, 1, 2, C]`` float64 positions of the grouped indices, ``(x, y)`` on axis 2."""
    out = np.empty((nn_indices.shape[0], 1, 2, nn_indices.shape[1]), dtype=np.float64)
    out[:, 0, conventions.X_INDEX, :] = x[nn_indices]
    out[:, 0, conventions.Y_INDEX, :] = y[nn_indices]
    return out


# --------------------------------------------------------------------------- RawData


class RawData:
    """One ptychography scan in the NPZ data contract (see the module docstring).

    Parameters
    ----------
    xcoords, ycoords:
        ``[M]`` true scan positions in object-canvas pixels (x = columns, y = rows).
    xcoords_start, ycoords_start:
        ``[M]`` nominal scan positions in pixels (equal to the true ones when there
        is no position correction).
    diff3d:
        ``[M, N, N]`` real diffraction amplitude ``sqrt(counts)``, zero frequency at
        pixel ``(N//2, N//2)``; stored as float32.
    probeGuess:
        ``[N, N]`` probe, same ``N`` as diff3d; stored as complex64.
    scan_index:
        ``[M]`` integer scan id per position, or ``None`` for zeros; stored as int64.
    objectGuess:
        optional ``[H, W]`` object in the same pixel frame as the coordinates; complex64.
    Y:
        optional ``[M, N, N]`` (or ``[M, N, N, 1]``) per-position object patches;
        complex64 ``[M, N, N]``.  When present, grouping uses it for ``Y`` instead
        of cutting patches from ``objectGuess``.
    norm_Y_I:
        optional scalar carried through unchanged (upstream compatibility).
    metadata:
        optional JSON-serialisable dict, written as ``_metadata``.
    diffraction_is:
        ``'auto'`` (default) reads integer dtypes as photon counts (``np.sqrt``, logged) and
        rejects floating data that looks like intensity (:func:`looks_like_intensity`);
        ``'amplitude'`` skips that check; ``'intensity'`` declares photon counts /
        intensities and stores ``np.sqrt`` (:func:`diffraction_to_amplitude`).
    bad_pixels:
        optional bool ``[N, N]`` detector mask, True = not measured (shared by every
        pattern).  Those pixels are left out of the ``X_full`` normalisation and of the
        diffraction losses (``specs/physics.md``); an all-False mask is stored as None.
    source:
        file the data came from; used in error messages.

    Attributes besides the parameters: ``sample_indices`` and ``subsample_seed``
    (``None``; set by subsampling workflows, passed through to the grouped dict),
    ``source`` (str or None).

    Raises
    ------
    DataContractError
        for every violation listed in ``specs/bad-input.md``.
    """

    def __init__(
        self,
        xcoords: ArrayLike,
        ycoords: ArrayLike,
        xcoords_start: ArrayLike,
        ycoords_start: ArrayLike,
        diff3d: ArrayLike,
        probeGuess: ArrayLike,
        scan_index: ArrayLike | None,
        objectGuess: ArrayLike | None = None,
        Y: ArrayLike | None = None,
        norm_Y_I: Any = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        diffraction_is: DiffractionKind = "auto",
        bad_pixels: ArrayLike | None = None,
        source: str | PathLike | None = None,
    ) -> None:
        file = None if source is None else str(source)
        self.source = file
        if diffraction_is not in _DIFFRACTION_KINDS:
            raise DataContractError(
                f"diffraction_is={diffraction_is!r} is invalid: expected one of {_DIFFRACTION_KINDS}",
                file=file,
                field="diffraction_is",
                fix="pass 'auto', 'amplitude' or 'intensity'",
            )

        # ---- coordinates
        coords = {}
        for name, value in (
            ("xcoords", xcoords),
            ("ycoords", ycoords),
            ("xcoords_start", xcoords_start),
            ("ycoords_start", ycoords_start),
        ):
            arr = _as_numeric(
                value, name, "iuf", file, "real numbers (pixels)", f"store {name} as a float64 array"
            )
            if arr.ndim != 1:
                raise DataContractError(
                    f"has shape {arr.shape}, expected a 1-D array [M]",
                    file=file,
                    field=name,
                    fix=f"store {name} as a flat array, e.g. np.ravel({name})",
                )
            arr = arr.astype(np.float64, copy=False)
            _check_finite(arr, name, file, "drop or repair the non-finite scan positions")
            coords[name] = arr
        M = coords["xcoords"].shape[0]
        if M == 0:
            raise DataContractError(
                "is empty: the dataset has no scan positions",
                file=file,
                field="xcoords",
                fix="provide at least one scan position",
            )
        for name, arr in coords.items():
            if arr.shape[0] != M:
                raise DataContractError(
                    f"has {arr.shape[0]} entries but xcoords has {M}",
                    file=file,
                    field=name,
                    fix="give xcoords, ycoords, xcoords_start, ycoords_start and diff3d one entry per "
                    "scan position",
                )

        # ---- diffraction
        d = _as_numeric(
            diff3d,
            "diff3d",
            "iuf",
            file,
            "a real amplitude",
            "store the real amplitude np.abs(F) (or np.sqrt(counts)) as float32",
        )
        if d.ndim != 3 or d.shape[1] != d.shape[2]:
            raise DataContractError(
                f"has shape {d.shape}, expected [M, N, N] (3-D, square patterns)",
                file=file,
                field="diff3d",
                fix="store patterns as [M, N, N]; move a trailing pattern axis first with "
                "np.moveaxis(d, -1, 0), drop a singleton channel with d[..., 0], crop or pad to square",
            )
        if d.shape[0] != M:
            raise DataContractError(
                f"has {d.shape[0]} patterns but xcoords has {M} positions",
                file=file,
                field="diff3d",
                fix="give diff3d and every coordinate array one entry per scan position",
            )
        N = d.shape[1]
        _scan_diffraction(d, file)
        self.diff3d = diffraction_to_amplitude(d, diffraction_is, file)
        self.bad_pixels = check_bad_pixels(bad_pixels, N, file)

        # ---- probe
        if probeGuess is None:
            raise DataContractError(
                "is missing", file=file, field="probeGuess", fix="provide the [N, N] complex probe"
            )
        p = _as_numeric(
            probeGuess, "probeGuess", "iufc", file, "a complex probe", "store the probe as complex64"
        )
        if p.ndim == 3 and p.shape[0] == 1:
            p = p[0]  # a one-mode stack [1, N, N] (Ptychodus' probe modes) is that mode
        elif p.ndim == 3 and p.shape[1:] == (N, N):
            raise DataContractError(
                f"has shape {p.shape}: {p.shape[0]} probe modes, but PtychoPINN models one coherent probe",
                file=file,
                field="probeGuess",
                fix="store one mode, e.g. probeGuess[0] (the dominant mode), as a [N, N] probe",
            )
        if p.shape != (N, N):
            raise DataContractError(
                f"has shape {p.shape}, expected [{N}, {N}] to match diff3d patterns of {N} x {N}",
                file=file,
                field="probeGuess",
                fix=f"give a 2-D [{N}, {N}] probe sampled on the same grid as the diffraction patterns",
            )
        _check_finite(p, "probeGuess", file, "replace NaN/inf probe pixels (e.g. np.nan_to_num)")
        self.probeGuess = p.astype(np.complex64, copy=False)

        # ---- scan index
        if scan_index is None:
            si = np.zeros(M, dtype=np.int64)
        else:
            si = _as_numeric(scan_index, "scan_index", "iuf", file, "integers", "store scan_index as int64")
            _check_finite(si, "scan_index", file, "store scan_index as int64")
            if si.shape != (M,) or (si.dtype.kind == "f" and not np.array_equal(si, np.rint(si))):
                raise DataContractError(
                    f"has shape {si.shape} and dtype {si.dtype}, expected [{M}] integers",
                    file=file,
                    field="scan_index",
                    fix="store one integer per scan position, or omit it (defaults to zeros)",
                )
        self.scan_index = si.astype(np.int64, copy=False)

        # ---- object
        self.objectGuess = None if objectGuess is None else check_object_guess(objectGuess, file)

        # ---- per-position patches
        if Y is None:
            self.Y = None
        else:
            y = _as_numeric(Y, "Y", "iufc", file, "complex patches", "store Y as complex64")
            if y.ndim == 4 and y.shape[-1] == 1:
                y = y[..., 0]
            if y.shape != (M, N, N):
                raise DataContractError(
                    f"has shape {np.shape(Y)}, expected [{M}, {N}, {N}] (one N x N patch per position)",
                    file=file,
                    field="Y",
                    fix="store one complex N x N object patch per scan position, or omit Y",
                )
            _check_finite(y, "Y", file, "replace NaN/inf values or omit Y")
            self.Y = y.astype(np.complex64, copy=False)

        self.xcoords = coords["xcoords"]
        self.ycoords = coords["ycoords"]
        self.xcoords_start = coords["xcoords_start"]
        self.ycoords_start = coords["ycoords_start"]
        self.norm_Y_I = norm_Y_I
        self.metadata = None if metadata is None else dict(metadata)
        self.sample_indices: np.ndarray | None = None
        self.subsample_seed: int | None = None

    # ------------------------------------------------------------------ basic properties

    @property
    def n_points(self) -> int:
        """Number of scan positions ``M``."""
        return int(self.xcoords.shape[0])

    @property
    def N(self) -> int:
        """Diffraction pattern size ``N`` in pixels."""
        return int(self.diff3d.shape[1])

    def __len__(self) -> int:
        return self.n_points

    def __repr__(self) -> str:
        obj = None if self.objectGuess is None else self.objectGuess.shape
        return (
            f"RawData(M={self.n_points}, N={self.N}, objectGuess={obj}, "
            f"Y={'set' if self.Y is not None else None}, source={self.source!r})"
        )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_coords_without_pc(
        cls,
        xcoords: ArrayLike,
        ycoords: ArrayLike,
        diff3d: ArrayLike,
        probeGuess: ArrayLike,
        scan_index: ArrayLike | None,
        objectGuess: ArrayLike | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        diffraction_is: DiffractionKind = "auto",
        bad_pixels: ArrayLike | None = None,
    ) -> RawData:
        """RawData without position correction: the start coordinates equal the true ones."""
        return cls(
            xcoords,
            ycoords,
            xcoords,
            ycoords,
            diff3d,
            probeGuess,
            scan_index,
            objectGuess,
            metadata=metadata,
            diffraction_is=diffraction_is,
            bad_pixels=bad_pixels,
        )

    @classmethod
    def from_file(cls, path: str | PathLike, *, diffraction_is: DiffractionKind = "auto") -> RawData:
        """Load a dataset: the NPZ contract, or a CXI / Ptychodus HDF5 file (:mod:`ptycho.io`).

        Files that are not NPZ archives (HDF5 signature, or a ``.cxi`` / ``.h5`` / ``.hdf5``
        suffix) are read by :func:`ptycho.io.read_dataset`.  For NPZ files:

        Never unpickles: the file is opened with ``np.load(allow_pickle=False)``.
        A required key stored as a pickled object array raises; an optional one
        (e.g. upstream's ``objectGuess=None``) is ignored with a ``UserWarning``.
        ``diffraction`` is accepted as an alias of ``diff3d``.  Missing
        ``xcoords_start``/``ycoords_start`` default to ``xcoords``/``ycoords``,
        a missing ``scan_index`` to zeros.  ``_metadata`` is parsed as a JSON
        object when stored as a plain string array.  ``diff3d_units`` (``'amplitude'`` /
        ``'intensity'``) says what ``diff3d`` holds; an explicit ``diffraction_is`` other
        than ``'auto'`` overrides it.  ``bad_pixels`` is the detector mask.  Other keys
        are ignored.

        Raises
        ------
        FileNotFoundError: ``path`` does not exist.
        DataContractError: the file is not an NPZ archive or violates the contract.
        """
        path = Path(path)
        file = str(path)
        from ptycho import io as ptycho_io  # lazy: h5py is needed only for HDF5 inputs

        if path.is_file() and ptycho_io.is_hdf5(path):
            return cls(**ptycho_io.read_hdf5_fields(path, diffraction_is=diffraction_is))
        try:
            archive = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except Exception as exc:  # zipfile.BadZipFile, pickle refusal, truncated data ...
            raise DataContractError(
                f"cannot be read as an NPZ archive ({type(exc).__name__}: {exc})",
                file=file,
                fix="write the dataset with RawData.to_file or np.savez(path, xcoords=..., ...)",
            ) from exc
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataContractError(
                "holds a single .npy array, not an NPZ archive of named arrays",
                file=file,
                fix="write the dataset with RawData.to_file or np.savez(path, xcoords=..., ...)",
            )
        with archive:
            keys = set(archive.files)
            check_npz_headers(path, (*REQUIRED_KEYS, *OPTIONAL_KEYS, "diffraction"))  # before any array is read

            def read(key: str, required: bool) -> np.ndarray | None:
                return read_npz_member(archive, key, required, file, keys)

            diff_key = "diff3d" if "diff3d" in keys or "diffraction" not in keys else "diffraction"
            xcoords = read("xcoords", True)
            ycoords = read("ycoords", True)
            diff3d = read(diff_key, True)
            probe = read("probeGuess", True)
            xstart = read("xcoords_start", False)
            ystart = read("ycoords_start", False)
            scan_index = read("scan_index", False)
            obj = read("objectGuess", False)
            Y = read("Y", False)
            norm = read("norm_Y_I", False)
            meta_arr = read("_metadata", False)
            bad_pixels = read("bad_pixels", False)
            units_arr = read("diff3d_units", False)
        metadata = _parse_metadata(meta_arr, file)
        diffraction_is = resolve_units(diffraction_is, _parse_units(units_arr, file), file)
        if norm is not None:
            norm = norm.item() if norm.size == 1 else norm
        return cls(
            xcoords,
            ycoords,
            xcoords if xstart is None else xstart,
            ycoords if ystart is None else ystart,
            diff3d,
            probe,
            scan_index,
            obj,
            Y=Y,
            norm_Y_I=norm,
            metadata=metadata,
            diffraction_is=diffraction_is,
            bad_pixels=bad_pixels,
            source=file,
        )

    # ------------------------------------------------------------------ writing

    def to_file(self, path: str | PathLike) -> Path:
        """Write the NPZ contract atomically; returns the path written.

        As ``np.savez``, ``.npz`` is appended when ``path`` has another suffix.
        The archive is written to a temporary file in the same directory, synced,
        and moved over ``path`` with ``os.replace``: a failed write leaves an
        existing file untouched and no temporary file behind.  ``None`` fields
        are omitted (never pickled); ``metadata`` is stored as the JSON string
        ``_metadata``; ``diff3d_units='amplitude'`` is always written (diff3d holds
        amplitudes), ``bad_pixels`` when set.  Uncompressed (like upstream).

        Raises
        ------
        DataContractError: ``metadata`` or ``norm_Y_I`` cannot be stored without pickling.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays: dict[str, np.ndarray] = {
            "xcoords": self.xcoords,
            "ycoords": self.ycoords,
            "xcoords_start": self.xcoords_start,
            "ycoords_start": self.ycoords_start,
            "diff3d": self.diff3d,
            "probeGuess": self.probeGuess,
            "scan_index": self.scan_index,
            "diff3d_units": np.array("amplitude"),
        }
        if self.bad_pixels is not None:
            arrays["bad_pixels"] = self.bad_pixels
        if self.objectGuess is not None:
            arrays["objectGuess"] = self.objectGuess
        if self.Y is not None:
            arrays["Y"] = self.Y
        if self.norm_Y_I is not None:
            norm = np.asarray(self.norm_Y_I)
            if norm.dtype.kind not in "iufc":
                raise DataContractError(
                    f"has dtype {norm.dtype} and cannot be stored without pickling",
                    file=str(path),
                    field="norm_Y_I",
                    fix="set norm_Y_I to a number or numeric array, or to None",
                )
            arrays["norm_Y_I"] = norm
        if self.metadata is not None:
            try:
                arrays["_metadata"] = np.array(json.dumps(self.metadata))
            except (TypeError, ValueError) as exc:
                raise DataContractError(
                    f"is not JSON-serialisable ({exc})",
                    file=str(path),
                    field="metadata",
                    fix="keep metadata to str/int/float/bool/None/list/dict values",
                ) from exc
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    # ------------------------------------------------------------------ grouping

    def generate_grouped_data(
        self,
        N: int,
        K: int = 4,
        nsamples: int = 1,
        dataset_path: str | PathLike | None = None,
        seed: int | None = None,
        sequential_sampling: bool = False,
        gridsize: int | None = None,
        enable_oversampling: bool = False,
        neighbor_pool_size: int | None = None,
    ) -> dict[str, Any]:
        """Group scan positions into samples of ``C = gridsize**2`` channels and assemble the arrays.

        Grouping follows :func:`ptycho.grouping.group_neighbors` (seed = channel 0
        plus ``C - 1`` of its ``K`` nearest other points, deterministic for an
        integer ``seed``; ``specs/data.md``).

        Parameters
        ----------
        N: patch size; must equal the diff3d pattern size.
        K: neighbourhood size (``K >= C - 1``).
        nsamples: number of groups requested (int >= 1); see ``group_neighbors``.
        dataset_path: used only in error messages (defaults to the file the data came from).
        seed: integer seed of ``np.random.default_rng`` (``None`` = fresh entropy).
        sequential_sampling: seeds are the first ``nsamples`` positions in order.
        gridsize: ``None`` reads ``ptycho.params.cfg['gridsize']`` (via ``params.get``; default 1).
        enable_oversampling, neighbor_pool_size: allow ``nsamples > M`` for gridsize > 1.

        Returns
        -------
        dict with ``B`` groups (see :meth:`grouped_data_from_indices` for every key).
        """
        if gridsize is None:
            from ptycho import params  # lazy: the legacy global dict is only needed on this path

            gridsize = params.get("gridsize", 1)
        file = self.source if dataset_path is None else str(dataset_path)
        self._check_N(N, file)
        xy = np.empty((self.n_points, 2), dtype=np.float64)
        xy[:, conventions.X_INDEX] = self.xcoords
        xy[:, conventions.Y_INDEX] = self.ycoords
        nn_indices = group_neighbors(
            xy,
            gridsize,
            K,
            nsamples,
            seed,
            sequential_sampling=sequential_sampling,
            enable_oversampling=enable_oversampling,
            neighbor_pool_size=neighbor_pool_size,
            file=file,
        )
        return self.grouped_data_from_indices(nn_indices, N, dataset_path=file)

    def grouped_data_from_indices(
        self, nn_indices: ArrayLike, N: int, *, dataset_path: str | PathLike | None = None
    ) -> dict[str, Any]:
        """Assemble the grouped arrays for given groups of scan indices.

        Parameters
        ----------
        nn_indices: int ``[B, C]`` scan indices, channel ``c`` of group ``b``.
        N: patch size; must equal the diff3d pattern size.

        Returns
        -------
        dict (``B`` groups, ``C`` channels, positions in object-canvas pixels):

        ===================== ================ ========== =============================================
        key                   shape            dtype      meaning
        ===================== ================ ========== =============================================
        diffraction           [B, N, N, C]     float32    diff3d of the group members (amplitude)
        X_full                [B, N, N, C]     float32    ``X_full_norm * diffraction``;
                                                          mean over (b, c) of sum over the good
                                                          pixels of ``X_full**2`` is ``(N/2)**2``
        X_full_norm           scalar           float      the normalisation factor (physics.normalize_x_full)
        Y                     [B, N, N, C]     complex64  object patches centred on the TRUE positions
                                                          (from ``Y`` if set, else ``objectGuess`` via
                                                          physics.object_patches), or None
        coords_nn             [B, 1, 2, C]     float64    true positions, (x, y) on axis 2
        coords_offsets        [B, 1, 2, 1]     float64    group centroid of coords_nn
        coords_relative       [B, 1, 2, C]     float64    LOCAL_OFFSET_SIGN * (coords_nn - centroid)
        coords_start_nn       [B, 1, 2, C]     float64    nominal (start) positions
        coords_start_offsets  [B, 1, 2, 1]     float64    centroid of coords_start_nn
        coords_start_relative [B, 1, 2, C]     float64    LOCAL_OFFSET_SIGN * (start - start centroid)
        nn_indices            [B, C]           int64      scan indices; column 0 is the group seed
        objectGuess           [H, W]           complex64  passed through (or None)
        bad_pixels            [N, N]           bool       detector mask (True = not measured), or None
        sample_indices        as set           as set     only when ``self.sample_indices`` is set
        ===================== ================ ========== =============================================
        """
        file = self.source if dataset_path is None else str(dataset_path)
        self._check_N(N, file)
        nn = np.asarray(nn_indices)
        if nn.ndim != 2 or nn.dtype.kind not in "iu" or nn.shape[0] == 0:
            raise DataContractError(
                f"has shape {nn.shape} and dtype {nn.dtype}, expected non-empty int [B, C]",
                file=file,
                field="nn_indices",
                fix="pass the output of ptycho.grouping.group_neighbors",
            )
        if nn.min() < 0 or nn.max() >= self.n_points:
            raise DataContractError(
                f"holds indices outside [0, {self.n_points})",
                file=file,
                field="nn_indices",
                fix="index scan positions of this dataset only",
            )
        nn = nn.astype(np.int64, copy=False)
        C = nn.shape[1]
        diffraction = np.ascontiguousarray(np.moveaxis(self.diff3d[nn], 1, -1))
        good = slice(None) if self.bad_pixels is None else ~self.bad_pixels
        if not diffraction[:, good].any():
            raise DataContractError(
                "every selected diffraction pattern is zero (on the good detector pixels), so X_full "
                "cannot be normalised",
                file=file,
                field="diff3d",
                fix="check that the dataset holds measured or simulated amplitudes",
            )
        X_full, norm = physics.normalize_x_full(diffraction, self.bad_pixels)

        coords_nn = _group_positions(self.xcoords, self.ycoords, nn)
        coords_offsets, coords_relative = get_relative_coords(coords_nn)
        coords_start_nn = _group_positions(self.xcoords_start, self.ycoords_start, nn)
        coords_start_offsets, coords_start_relative = get_relative_coords(coords_start_nn)

        if self.Y is not None:
            Y = np.ascontiguousarray(np.moveaxis(self.Y[nn], 1, -1))
        elif self.objectGuess is not None:
            flat_xy = conventions.positions_to_flat(coords_nn)
            flat = np.empty((flat_xy.shape[0], N, N), dtype=np.complex64)
            step = max(1, _PATCH_CHUNK_ELEMENTS // (N * N))  # bounds the float64 temporaries
            for s in range(0, flat_xy.shape[0], step):
                flat[s : s + step] = physics.object_patches(self.objectGuess, flat_xy[s : s + step], N)
            Y = conventions.flat_to_channels(flat, C)
        else:
            Y = None

        out: dict[str, Any] = {
            "diffraction": diffraction,
            "X_full": X_full,
            "X_full_norm": float(norm),
            "Y": Y,
            "coords_nn": coords_nn,
            "coords_offsets": coords_offsets,
            "coords_relative": coords_relative,
            "coords_start_nn": coords_start_nn,
            "coords_start_offsets": coords_start_offsets,
            "coords_start_relative": coords_start_relative,
            "nn_indices": nn,
            "objectGuess": self.objectGuess,
            "bad_pixels": self.bad_pixels,
        }
        if self.sample_indices is not None:
            out["sample_indices"] = self.sample_indices
        return out

    def _check_N(self, N: object, file: str | None) -> None:
        if isinstance(N, bool) or not isinstance(N, int | np.integer) or int(N) != self.N:
            raise DataContractError(
                f"N={N!r} does not match the diffraction patterns, which are {self.N} x {self.N}",
                file=file,
                field="N",
                fix=f"pass N={self.N} (or resample the data to the requested N)",
            )


def _parse_metadata(arr: np.ndarray | None, file: str) -> dict[str, Any] | None:
    """``_metadata`` stored as a plain string array -> dict; anything else is ignored with a warning."""
    if arr is None:
        return None
    if arr.dtype.kind in "US" and arr.size == 1:
        text = arr.item()
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            warnings.warn(f"{file}: field '_metadata' is not valid JSON ({exc}); ignored", stacklevel=3)
            return None
        if isinstance(value, dict):
            return value
        warnings.warn(
            f"{file}: field '_metadata' is JSON {type(value).__name__}, not an object; ignored",
            stacklevel=3,
        )
        return None
    warnings.warn(
        f"{file}: field '_metadata' has dtype {arr.dtype} and shape {arr.shape}, expected a JSON string; "
        "ignored",
        stacklevel=3,
    )
    return None


def _parse_units(arr: np.ndarray | None, file: str | None) -> str | None:
    """The NPZ key ``diff3d_units`` as ``'amplitude'`` / ``'intensity'`` (None when absent)."""
    if arr is None:
        return None
    text = arr.item() if arr.dtype.kind in "US" and arr.size == 1 else None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text not in DIFF3D_UNITS:
        shown = repr(text) if text is not None else f"an array of dtype {arr.dtype} and shape {arr.shape}"
        raise DataContractError(
            f"is {shown}, expected one of {DIFF3D_UNITS}",
            file=file,
            field="diff3d_units",
            fix="store diff3d_units=np.array('amplitude') or np.array('intensity'), or omit the key",
        )
    return text


def resolve_units(diffraction_is: str, file_units: str | None, file: str | None) -> DiffractionKind:
    """What ``diff3d`` holds: the caller's explicit value, else the file's ``diff3d_units``, else ``'auto'``."""
    if diffraction_is not in _DIFFRACTION_KINDS:
        raise DataContractError(
            f"diffraction_is={diffraction_is!r} is invalid: expected one of {_DIFFRACTION_KINDS}",
            file=file,
            field="diffraction_is",
            fix="pass 'auto', 'amplitude' or 'intensity'",
        )
    if diffraction_is != "auto":
        if file_units is not None and file_units != diffraction_is:
            logger.warning(
                "%s: diff3d_units=%r in the file is overridden by diffraction_is=%r", file, file_units, diffraction_is
            )
        return diffraction_is  # type: ignore[return-value]
    return "auto" if file_units is None else file_units  # type: ignore[return-value]

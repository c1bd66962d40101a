"""Data larger than memory: diffraction patterns read from disk per batch, grouping on positions only.

On-disk format (chosen here): the data-contract NPZ itself, written *uncompressed* (``np.savez``,
which stores members with ``ZIP_STORED``).  The bytes of an uncompressed member are contiguous in
the file, so ``diff3d`` is read in place (:func:`npz_member_location`: the member's local zip
header and ``.npy`` header give the byte offset), while the small arrays (positions, probe) are
read normally.  ``np.load(mmap_mode='r')`` cannot do this itself (it ignores ``mmap_mode`` inside a
zip).  A compressed NPZ (``np.savez_compressed``) cannot be read in place: convert its member once
with :func:`convert_npz_member_to_npy` (chunked: never holds the array) and pass the ``.npy`` as
``patterns=``.

Reads are ``os.pread`` calls (:class:`PatternFile`), not a memory map: pages of a mapping that a
process has touched count in its resident set until the kernel drops them, so streaming one epoch
through a 3 GB memmap shows a 3 GB peak RSS; data read with ``pread`` goes through the page cache,
which is not charged to the process.

:func:`open_streaming` -> :class:`StreamingRawData` (positions and probe in memory, ``diff3d`` a
:class:`PatternFile` ``[M, N, N]``).  :meth:`StreamingRawData.group` groups with
``ptycho.grouping.group_neighbors`` on the positions alone (the same call and seed as
``RawData.generate_grouped_data``, so the groups are identical) and computes ``X_full_norm`` from
per-pattern energies read in chunks; the result, :class:`StreamingContainer`, holds positions and
indices only and assembles ``X = float32(X_full_norm * diff3d[nn_indices])`` (channels-last
``[b, N, N, C]``) for the groups a batch asks for (:meth:`StreamingContainer.gather_X`).
For the same data the gathered batches equal the in-memory container's ``X`` rows to float32
rounding (the energy sums run in another order, so ``X_full_norm`` may differ in the last bits; tested).

Limits: ``diff3d`` must hold amplitudes (a file whose ``diff3d_units`` says otherwise is refused),
no ground-truth object patches (``Y_I`` is ones, so the real-space loss is refused), no
subsampling (``n_subsample``) or oversampling.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ptycho import conventions
from ptycho.errors import DataContractError
from ptycho.grouping import group_neighbors
from ptycho.npz_safety import check_npz_headers
from ptycho.raw_data import _group_positions, check_bad_pixels, check_object_guess, get_relative_coords, read_npz_member
from ptycho.reference.physics import good_pixel_weights

#: The members read whole by :func:`open_streaming` (``diff3d`` is read in place, never whole).
_SMALL_KEYS = ("xcoords", "ycoords", "xcoords_start", "ycoords_start", "probeGuess", "diff3d_units", "bad_pixels",
               "objectGuess")

__all__ = [
    "PatternFile",
    "ScaledPatterns",
    "StreamingContainer",
    "StreamingRawData",
    "convert_npz_member_to_npy",
    "npz_member_location",
    "open_streaming",
    "pattern_energies",
]

#: Patterns read per chunk when scanning the whole file (bounds the memory of the energy pass).
CHUNK_PATTERNS = 4096
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes


def npz_member_location(path: str | PathLike, key: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """``(byte offset, shape, dtype)`` of the data of ``.npy`` member ``key`` of an uncompressed NPZ.

    Raises ``DataContractError`` (with the fix) when the member is missing, compressed or not a
    C-ordered numeric array.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{key}.npy")
        except KeyError:
            raise DataContractError("not in the NPZ", file=str(path), field=key) from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataContractError(
                "is compressed, so it cannot be read in place", file=str(path), field=key,
                fix="write the NPZ with np.savez (not savez_compressed), or convert the member once with "
                    "ptycho.streaming.convert_npz_member_to_npy and pass the .npy as patterns=",
            )
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        header = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
        if header[0] != b"PK\x03\x04":
            raise DataContractError("has a corrupt zip header", file=str(path), field=key)
        fh.seek(info.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1])
        shape, fortran, dtype = _read_npy_header(fh)
        offset = fh.tell()
    if dtype.hasobject or fortran:
        raise DataContractError(f"has dtype {dtype} (fortran order {fortran}): cannot be read in place",
                                file=str(path), field=key, fix="store a C-ordered numeric array")
    return offset, tuple(shape), dtype


class PatternFile:
    """A read-only ``[M, ...]`` array stored contiguously at ``offset`` in ``path``, read with ``os.pread``.

    ``pf[indices]`` (integer array or slice) returns a new in-memory array; nothing else is kept.
    The file is opened lazily per process, so the object can be sent to DataLoader workers.
    """

    def __init__(self, path: str | PathLike, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = str(path), int(offset), tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self._row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._pid = -1

    @classmethod
    def from_npz(cls, path: str | PathLike, key: str) -> PatternFile:
        """The member ``key`` of an uncompressed NPZ (:func:`npz_member_location`)."""
        return cls(path, *npz_member_location(path, key))

    @classmethod
    def from_npy(cls, path: str | PathLike) -> PatternFile:
        """A ``.npy`` file."""
        with open(path, "rb") as fh:
            shape, fortran, dtype = _read_npy_header(fh)
            offset = fh.tell()
        if dtype.hasobject or fortran:
            raise DataContractError(f"has dtype {dtype} (fortran order {fortran})", file=str(path), field="patterns")
        return cls(path, offset, shape, dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def _read_rows(self, start: int, count: int) -> bytes:
        want, got = count * self._row, b""
        while len(got) < want:
            chunk = os.pread(self._file(), want - len(got), self.offset + start * self._row + len(got))
            if not chunk:
                raise DataContractError(f"ends before row {start + count} of {self.shape[0]}", file=self.path)
            got += chunk
        return got

    def __getitem__(self, key: slice | np.ndarray | Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                n = max(0, stop - start)
                return np.frombuffer(self._read_rows(start, n), dtype=self.dtype).reshape((n, *self.shape[1:]))
            key = np.arange(start, stop, step)
        idx = np.atleast_1d(np.asarray(key, dtype=np.int64))
        if idx.size and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"pattern index out of range [0, {self.shape[0]})")
        out = np.empty((idx.size, *self.shape[1:]), dtype=self.dtype)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        run_start = 0  # coalesce consecutive indices into one read
        for i in range(1, sorted_idx.size + 1):
            if i == sorted_idx.size or sorted_idx[i] != sorted_idx[i - 1] + 1:
                rows = np.frombuffer(self._read_rows(int(sorted_idx[run_start]), i - run_start), dtype=self.dtype)
                out[order[run_start:i]] = rows.reshape((i - run_start, *self.shape[1:]))
                run_start = i
        return out


def _read_npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def convert_npz_member_to_npy(path: str | PathLike, key: str, out: str | PathLike) -> Path:
    """Copy NPZ member ``key`` (compressed or not) to the ``.npy`` file ``out`` chunk by chunk."""
    out = Path(out)
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as src:
        shape, fortran, dtype = _read_npy_header(src)
        if dtype.hasobject or fortran:
            raise DataContractError(f"has dtype {dtype} (fortran order {fortran})", file=str(path), field=key)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        remaining = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        with open(out, "wb") as dst:
            np.lib.format.write_array_header_2_0(dst, header)
            while remaining:
                block = src.read(min(remaining, 64 << 20))
                if not block:
                    raise DataContractError("ends early", file=str(path), field=key)
                dst.write(block)
                remaining -= len(block)
    return out


def pattern_energies(patterns: PatternFile | np.ndarray, rows: np.ndarray | None = None,
                     chunk: int = CHUNK_PATTERNS, bad_pixels: np.ndarray | None = None) -> np.ndarray:
    """``sum_{h,w} good[h,w] * d[m]**2`` of the patterns ``rows`` (default all), float64, read ``chunk`` at a time.

    ``good = 1 - bad_pixels`` (``physics.good_pixel_weights``), as ``normalize_x_full`` weights them.
    """
    rows = np.arange(len(patterns)) if rows is None else np.asarray(rows, dtype=np.int64)
    w = good_pixel_weights(bad_pixels, int(patterns.shape[1]))
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), chunk):
        block = np.asarray(patterns[rows[start : start + chunk]], dtype=np.float64)
        out[start : start + len(block)] = np.einsum("mhw,hw,mhw->m", block, w, block)
    return out


@dataclass
class StreamingRawData:
    """Scan positions and probe in memory; ``diff3d`` float32 ``[M, N, N]`` a :class:`PatternFile` on disk.

    ``objectGuess`` complex64 ``[H, W]`` is the file's true object when it has one (for scoring), else None.
    """

    xcoords: np.ndarray
    ycoords: np.ndarray
    xcoords_start: np.ndarray
    ycoords_start: np.ndarray
    probeGuess: np.ndarray
    diff3d: PatternFile
    source: str
    bad_pixels: np.ndarray | None = None
    objectGuess: np.ndarray | None = None

    @property
    def N(self) -> int:
        return int(self.diff3d.shape[1])

    def __len__(self) -> int:
        return int(self.diff3d.shape[0])

    def group(self, *, N: int, gridsize: int, K: int, nsamples: int, seed: int,
              sequential_sampling: bool = False) -> StreamingContainer:
        """Group on positions (``group_neighbors``, as ``RawData.generate_grouped_data``) without reading patterns."""
        if N != self.N:
            raise DataContractError(f"patterns are {self.N} x {self.N} but the model's N is {N}",
                                    file=self.source, field="diff3d")
        xy = np.empty((len(self.xcoords), 2), dtype=np.float64)
        xy[:, conventions.X_INDEX] = self.xcoords
        xy[:, conventions.Y_INDEX] = self.ycoords
        nn = group_neighbors(xy, gridsize, K, nsamples, seed, sequential_sampling=sequential_sampling,
                             file=self.source).astype(np.int64)
        used, where = np.unique(nn, return_inverse=True)  # read only the patterns the groups use
        energies = pattern_energies(self.diff3d, rows=used, bad_pixels=self.bad_pixels)
        energy = float(np.mean(energies[where.reshape(nn.shape)]))
        if not energy > 0:
            raise DataContractError("every selected diffraction pattern is zero", file=self.source, field="diff3d")
        norm = math.sqrt(conventions.x_full_target_energy(N) / energy)
        _start_offsets, start_relative = get_relative_coords(_group_positions(self.xcoords_start,
                                                                              self.ycoords_start, nn))
        offsets, relative = get_relative_coords(_group_positions(self.xcoords, self.ycoords, nn))
        return StreamingContainer(
            patterns=self.diff3d, nn_indices=nn, X_full_norm=norm,
            coords_nominal=start_relative.astype(np.float32), global_offsets=offsets,
            local_offsets=relative, probe=np.asarray(self.probeGuess, dtype=np.complex64),
            bad_pixels=self.bad_pixels,
        )


def open_streaming(path: str | PathLike, *, patterns: str | PathLike | None = None) -> StreamingRawData:
    """Open a data-contract NPZ for streaming: ``diff3d`` read in place, or from the ``.npy`` ``patterns``."""
    path = Path(path)
    check_npz_headers(path, _SMALL_KEYS)  # declared shapes and dtypes before anything is allocated
    file = str(path)
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)

        def read(key: str, required: bool = False) -> np.ndarray | None:
            return read_npz_member(z, key, required, file, keys)

        x, y = np.asarray(read("xcoords", True), np.float64), np.asarray(read("ycoords", True), np.float64)
        xs, ys = read("xcoords_start"), read("ycoords_start")
        xs = x if xs is None else np.asarray(xs, np.float64)
        ys = y if ys is None else np.asarray(ys, np.float64)
        probe = np.asarray(read("probeGuess", True))
        units_arr = read("diff3d_units")
        units = "amplitude" if units_arr is None else str(units_arr)
        bad = read("bad_pixels")
        truth = read("objectGuess")
        truth = None if truth is None else check_object_guess(truth, file)
    for key, arr in (("xcoords", x), ("ycoords", y), ("xcoords_start", xs), ("ycoords_start", ys)):
        if arr.shape != (len(x),) or not np.all(np.isfinite(arr)):
            raise DataContractError(f"has shape {arr.shape}, expected [{len(x)}] finite positions (pixels)",
                                    file=file, field=key, fix="store one finite x and y per scan position")
    if units != "amplitude":
        raise DataContractError(f"says the patterns hold {units!r}; streaming reads amplitudes as stored",
                                file=file, field="diff3d_units",
                                fix="store np.sqrt(counts).astype(np.float32) as diff3d (RawData.to_file does)")
    diff_key = "diff3d" if "diff3d" in keys or "diffraction" not in keys else "diffraction"
    d = PatternFile.from_npy(patterns) if patterns is not None else PatternFile.from_npz(path, diff_key)
    if d.ndim != 3 or d.shape[1] != d.shape[2] or d.shape[0] != len(x) or d.dtype != np.float32:
        raise DataContractError(
            f"has shape {d.shape} and dtype {d.dtype}, expected float32 [{len(x)}, N, N] (one per position)",
            file=file, field=diff_key,
        )
    if probe.shape != d.shape[1:]:
        raise DataContractError(f"has shape {probe.shape}, expected {d.shape[1:]}", file=file, field="probeGuess")
    return StreamingRawData(x, y, xs, ys, probe, d, file, check_bad_pixels(bad, d.shape[1], file), truth)


@dataclass
class StreamingContainer:
    """Grouped data whose patterns stay on disk: the streaming twin of ``ptycho.loader.PtychoDataContainer``.

    ``nn_indices`` int64 ``[B, C]``, ``coords_nominal`` float32 ``[B, 1, 2, C]``, ``global_offsets``
    float64 ``[B, 1, 2, 1]``, ``local_offsets`` float64 ``[B, 1, 2, C]``, ``probe`` complex64 ``[N, N]``,
    ``bad_pixels`` bool ``[N, N]`` or None (the detector mask the losses leave out);
    ``patterns`` the ``[M, N, N]`` :class:`PatternFile`; ``X_full_norm`` the normalisation of the selected patterns.
    """

    patterns: PatternFile
    nn_indices: np.ndarray
    X_full_norm: float
    coords_nominal: np.ndarray
    global_offsets: np.ndarray
    local_offsets: np.ndarray
    probe: np.ndarray
    bad_pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.nn_indices.shape[0])

    @property
    def channels(self) -> int:
        """``C = gridsize**2``."""
        return int(self.nn_indices.shape[1])

    def subset(self, rows: slice | np.ndarray) -> StreamingContainer:
        """The groups ``rows`` as a container of their own (same pattern file and ``X_full_norm``)."""
        return StreamingContainer(
            patterns=self.patterns, nn_indices=self.nn_indices[rows], X_full_norm=self.X_full_norm,
            coords_nominal=self.coords_nominal[rows], global_offsets=self.global_offsets[rows],
            local_offsets=self.local_offsets[rows], probe=self.probe, bad_pixels=self.bad_pixels,
        )

    def gather_X(self, indices: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """``scale * X`` of the groups at ``indices``: float32 ``[b, N, N, C]``, read from disk now.

        ``X = float32(X_full_norm * diff3d[nn_indices])`` exactly as ``physics.normalize_x_full``
        rounds it; the scale is applied to the float32 ``X`` as ``model_inputs`` does.
        """
        nn = self.nn_indices[np.asarray(indices, dtype=np.int64)]
        flat = np.sort(np.unique(nn))  # read each needed pattern once, in file order
        block = np.asarray(self.patterns[flat], dtype=np.float32)
        d = block[np.searchsorted(flat, nn)]  # [b, C, N, N]
        x = (d.astype(np.float64) * float(self.X_full_norm)).astype(np.float32)
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        return x if scale == 1.0 else (x * np.float32(scale)).astype(np.float32)

    def scaled(self, scale: float) -> ScaledPatterns:
        """The network input ``scale * X`` as a lazy array: ``scaled(s)[indices]`` gathers those groups."""
        return ScaledPatterns(self, float(scale))


@dataclass
class ScaledPatterns:
    """``scale * X`` of a :class:`StreamingContainer`, indexed by integer arrays of groups (reads on demand).

    Stands in for the in-memory ``x_scaled`` array ``[n, N, N, C]`` where a training loop only ever
    takes ``x[indices]`` (the TensorFlow loop of ``ptycho_tf.training``).
    """

    container: StreamingContainer
    scale: float

    @property
    def shape(self) -> tuple[int, int, int, int]:
        N = int(self.container.patterns.shape[1])
        return (len(self.container), N, N, self.container.channels)

    def __len__(self) -> int:
        return len(self.container)

    def __getitem__(self, indices: np.ndarray) -> np.ndarray:
        return self.container.gather_X(np.asarray(indices), self.scale)

"""Data larger than memory: diffraction patterns read from disk per batch, grouping on positions only.

On-disk format (chosen here): the data-contract NPZ itself, written *uncompressed* (``np.savez``,
which stores members with ``ZIP_STORED``).  The bytes of an uncompressed member are contiguous in
the file, so ``diff3d`` is memory-mapped in place (:func:`mmap_npz_member`: the member's local zip
header and ``.npy`` header give the offset; ``numpy.memmap``), while the small arrays (positions,
probe) are read normally.  ``np.load(mmap_mode='r')`` cannot do this itself (it ignores
``mmap_mode`` inside a zip).  A compressed NPZ (``np.savez_compressed``) cannot be mapped: convert
its member once with :func:`convert_npz_member_to_npy` (chunked: never holds the array) and pass
the ``.npy`` as ``patterns=``.

:func:`open_streaming` -> :class:`StreamingRawData` (positions and probe in memory, ``diff3d`` a
read-only memmap ``[M, N, N]``).  :meth:`StreamingRawData.group` groups with
``ptycho.grouping.group_neighbors`` on the positions alone (the same call and seed as
``RawData.generate_grouped_data``, so the groups are identical) and computes ``X_full_norm`` from
per-pattern energies read in chunks; the result, :class:`StreamingContainer`, holds positions and
indices only and assembles ``X = float32(X_full_norm * diff3d[nn_indices])`` (channels-last
``[b, N, N, C]``) for the groups a batch asks for (:meth:`StreamingContainer.gather_X`).
For the same data the gathered batches equal the in-memory container's ``X`` rows to float32
rounding (the energy sums run in another order, so ``X_full_norm`` may differ in the last bits; tested).

Limits: no ground-truth object patches (``Y_I`` is ones, so the real-space loss is refused), no
subsampling (``n_subsample``) or oversampling.
"""

from __future__ import annotations

import math
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
from ptycho.raw_data import _group_positions, get_relative_coords

__all__ = [
    "StreamingContainer",
    "StreamingRawData",
    "convert_npz_member_to_npy",
    "mmap_npz_member",
    "open_streaming",
    "pattern_energies",
]

#: Patterns read per chunk when scanning the memmap (bounds the pages touched at once).
CHUNK_PATTERNS = 4096
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes


def mmap_npz_member(path: str | PathLike, key: str) -> np.memmap:
    """Memory-map the ``.npy`` member ``key`` of an uncompressed NPZ, read-only.

    Raises ``DataContractError`` (with the fix) when the member is compressed or is not a plain
    numeric array.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{key}.npy")
        except KeyError:
            raise DataContractError("not in the NPZ", file=str(path), field=key) from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataContractError(
                "is compressed, so it cannot be memory-mapped", file=str(path), field=key,
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
        raise DataContractError(f"has dtype {dtype} (fortran order {fortran}): cannot be mapped", file=str(path),
                                field=key, fix="store a C-ordered numeric array")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="C")


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
        dst = np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=shape)
        flat = dst.reshape(-1)
        step = max(1, (64 << 20) // dtype.itemsize)
        for start in range(0, flat.size, step):
            n = min(step, flat.size - start)
            flat[start : start + n] = np.frombuffer(src.read(n * dtype.itemsize), dtype=dtype, count=n)
        dst.flush()
        del dst
    return out


def pattern_energies(patterns: np.ndarray, chunk: int = CHUNK_PATTERNS) -> np.ndarray:
    """``sum_{h,w} d[m]**2`` of every pattern, float64 ``[M]``, reading ``chunk`` patterns at a time."""
    out = np.empty(len(patterns), dtype=np.float64)
    for start in range(0, len(patterns), chunk):
        block = np.asarray(patterns[start : start + chunk], dtype=np.float64)
        out[start : start + len(block)] = np.einsum("mhw,mhw->m", block, block)
    return out


@dataclass
class StreamingRawData:
    """Scan positions and probe in memory; ``diff3d`` float32 ``[M, N, N]`` a read-only memmap."""

    xcoords: np.ndarray
    ycoords: np.ndarray
    xcoords_start: np.ndarray
    ycoords_start: np.ndarray
    probeGuess: np.ndarray
    diff3d: np.ndarray
    source: str

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
        energy = float(np.mean(pattern_energies(self.diff3d)[nn]))
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
        )


def open_streaming(path: str | PathLike, *, patterns: str | PathLike | None = None) -> StreamingRawData:
    """Open a data-contract NPZ for streaming: ``diff3d`` mapped (:func:`mmap_npz_member`) or from ``patterns`` (.npy)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        x, y = np.asarray(z["xcoords"], np.float64), np.asarray(z["ycoords"], np.float64)
        xs = np.asarray(z["xcoords_start"], np.float64) if "xcoords_start" in keys else x
        ys = np.asarray(z["ycoords_start"], np.float64) if "ycoords_start" in keys else y
        probe = np.asarray(z["probeGuess"])
    diff_key = "diff3d" if "diff3d" in keys or "diffraction" not in keys else "diffraction"
    d = np.load(patterns, mmap_mode="r") if patterns is not None else mmap_npz_member(path, diff_key)
    if d.ndim != 3 or d.shape[1] != d.shape[2] or d.shape[0] != len(x) or d.dtype != np.float32:
        raise DataContractError(
            f"has shape {d.shape} and dtype {d.dtype}, expected float32 [{len(x)}, N, N] (one per position)",
            file=str(path), field=diff_key,
        )
    if probe.shape != d.shape[1:]:
        raise DataContractError(f"has shape {probe.shape}, expected {d.shape[1:]}", file=str(path), field="probeGuess")
    return StreamingRawData(x, y, xs, ys, probe, d, str(path))


@dataclass
class StreamingContainer:
    """Grouped data whose patterns stay on disk: the streaming twin of ``ptycho.loader.PtychoDataContainer``.

    ``nn_indices`` int64 ``[B, C]``, ``coords_nominal`` float32 ``[B, 1, 2, C]``, ``global_offsets``
    float64 ``[B, 1, 2, 1]``, ``local_offsets`` float64 ``[B, 1, 2, C]``, ``probe`` complex64 ``[N, N]``;
    ``patterns`` the ``[M, N, N]`` memmap; ``X_full_norm`` the normalisation of the selected patterns.
    """

    patterns: np.ndarray
    nn_indices: np.ndarray
    X_full_norm: float
    coords_nominal: np.ndarray
    global_offsets: np.ndarray
    local_offsets: np.ndarray
    probe: np.ndarray

    def __len__(self) -> int:
        return int(self.nn_indices.shape[0])

    @property
    def channels(self) -> int:
        """``C = gridsize**2``."""
        return int(self.nn_indices.shape[1])

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

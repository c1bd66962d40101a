"""Check the ``.npy`` headers of an NPZ archive before any array is read.

``numpy.load`` allocates an array of the shape its header declares before reading the data, so
a small file whose ``diff3d.npy`` header declares ``(10**9, 256, 256)`` would raise a bare
``MemoryError`` (or allocate many GB) without naming the file or the field.
:func:`check_npz_headers` reads only each member's header (``numpy.lib.format.read_magic`` and
``read_array_header_1_0`` / ``read_array_header_2_0`` on the zip member stream) and refuses,
with a :class:`~ptycho.errors.DataContractError` naming the file and the field:

* a header that cannot be parsed, or a format version other than 1.0 / 2.0;
* a dtype that is not a plain number (bool, int, uint, float, complex) or, for ``_metadata``,
  a string; object arrays are left to the loader, which never unpickles them;
* more than :data:`MAX_NDIM` dimensions;
* a declared size (``prod(shape) * itemsize``) larger than the member's inflated size allows
  (the archive says how many bytes follow the header) or than :data:`MAX_ARRAY_BYTES`.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable
from os import PathLike

import numpy as np
from numpy.lib import format as npy_format

from ptycho.errors import DataContractError

__all__ = ["MAX_ARRAY_BYTES", "MAX_NDIM", "check_npz_headers"]

#: Largest array (bytes) one NPZ member may declare: the machine's physical memory, else 64 GiB.
try:
    MAX_ARRAY_BYTES: int = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
    MAX_ARRAY_BYTES = 64 * 1024**3
#: Most dimensions an NPZ array may have (the contract's deepest is ``Y`` ``[M, N, N, 1]``).
MAX_NDIM: int = 8
_STRING_KEYS = ("_metadata", "diff3d_units")  # the two string members RawData.to_file writes
_FIX = "re-save the array with np.savez (or RawData.to_file) from the data it should hold"


def _header(fh, file: str, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(fh)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(fh)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(fh)
    except (ValueError, EOFError, SyntaxError, OSError, zipfile.BadZipFile) as exc:
        raise DataContractError(f"has an unreadable .npy header ({exc})", file=file, field=key, fix=_FIX) from None
    raise DataContractError(f"uses .npy format version {version}; only 1.0 and 2.0 are read", file=file, field=key,
                            fix=_FIX)


def check_npz_headers(path: str | PathLike, keys: Iterable[str] | None = None) -> dict[str, tuple[tuple, np.dtype]]:
    """Check the header of each member ``<key>.npy`` (all, or those in ``keys``) of the NPZ at ``path``.

    Returns ``{key: (shape, dtype)}`` of the members checked.  A file that is not a zip archive is
    left to the caller (``np.load`` reports it).  Raises DataContractError (see the module docstring).
    """
    file = str(path)
    wanted = None if keys is None else set(keys)
    out: dict[str, tuple[tuple, np.dtype]] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return out
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            if wanted is not None and key not in wanted:
                continue
            try:
                with zf.open(info) as fh:
                    shape, _fortran, dtype = _header(fh, file, key)
                    header_len = fh.tell()
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DataContractError(f"cannot be read ({exc})", file=file, field=key, fix=_FIX) from None
            if dtype.hasobject:
                continue  # never unpickled; the loader ignores or refuses it with its own message
            allowed = "biufc" + ("US" if key in _STRING_KEYS else "")
            if dtype.kind not in allowed or dtype.fields is not None or dtype.subdtype is not None:
                raise DataContractError(f"declares dtype {dtype}, not a plain numeric array", file=file, field=key,
                                        fix=_FIX)
            if len(shape) > MAX_NDIM:
                raise DataContractError(f"declares {len(shape)} dimensions {shape}, more than {MAX_NDIM}", file=file,
                                        field=key, fix=_FIX)
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > MAX_ARRAY_BYTES:
                raise DataContractError(
                    f"declares shape {shape} of {dtype} = {nbytes} bytes, more than this machine's memory "
                    f"({MAX_ARRAY_BYTES} bytes)", file=file, field=key, fix=_FIX,
                )
            if nbytes != info.file_size - header_len:
                raise DataContractError(
                    f"declares shape {shape} of {dtype} = {nbytes} bytes, but the archive holds "
                    f"{info.file_size - header_len} bytes of data for it (corrupt or edited header)",
                    file=file, field=key, fix=_FIX,
                )
            out[key] = (shape, dtype)
    return out

"""Checks for the containers nested inside a bundle: HDF5 files and zip archives.

A bundle's ``canonical_weights.h5``, the ``model.weights.h5`` inside each Keras archive and the
zip archives ``model.keras`` / ``model.pt`` are untrusted.  Before a library opens them for real:

* :func:`check_plain_hdf5` walks every link of an HDF5 file without resolving it and refuses
  soft and external links, virtual datasets, datasets with external raw storage (which make
  HDF5 read an arbitrary local file as the dataset's bytes), filters (an unknown filter makes
  HDF5 load a plugin), layouts other than contiguous/chunked/compact, named datatypes, and
  dtypes other than plain numbers (compound, opaque, variable-length, reference, string);
* :func:`check_inner_zip` bounds a nested archive: its member names, the size each inflates to
  and their total, before anything reads a member.

Every refusal is an :class:`~ptycho.errors.UnsafeBundleError` (or its subclass
``BundleTooLargeError``) naming the file, the member and the field (dataset or inner member).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from os import PathLike

import h5py
import numpy as np

from ptycho.errors import BundleFormatError, BundleTooLargeError, UnsafeBundleError

__all__ = ["MAX_HDF5_OBJECTS", "check_inner_zip", "check_plain_hdf5"]

#: Most links an HDF5 file in a bundle may hold (the canonical file of the largest network has ~100).
MAX_HDF5_OBJECTS: int = 10_000
#: Deepest group nesting walked in an HDF5 file.
MAX_HDF5_DEPTH: int = 16
_PLAIN_LAYOUTS = (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT)
_FIX = "do not load this file; re-save the model with ptychopinn"


def _check_dataset(ds: h5py.Dataset, name: str, file: str | PathLike | None, member: str | None) -> None:
    def refuse(what: str) -> None:
        raise UnsafeBundleError(what, file=file, member=member, field=name, fix=_FIX)

    if ds.is_virtual:
        refuse("is a virtual dataset (its data would be read from other files); only plain datasets stored "
               "inside the file are accepted")
    plist = ds.id.get_create_plist()
    if plist.get_external_count() > 0:
        refuse("uses external raw storage (its bytes would be read from a file outside the bundle); only data "
               "stored inside the file is accepted")
    if plist.get_layout() not in _PLAIN_LAYOUTS:
        refuse("has a storage layout other than contiguous, chunked or compact")
    if plist.get_nfilters() > 0:
        refuse("uses HDF5 filters (compression or plugins); ptychopinn writes unfiltered datasets")
    dtype = ds.dtype
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None or h5py.check_dtype(
        vlen=dtype
    ) is not None or h5py.check_dtype(ref=dtype) is not None:
        refuse(f"has dtype {dtype}; only plain numeric dtypes are accepted (no compound, opaque, "
               "variable-length, string or reference types)")


def check_plain_hdf5(h5: h5py.File, *, file: str | PathLike | None = None, member: str | None = None) -> None:
    """Refuse an HDF5 file whose data does not live plainly inside it (see the module docstring).

    Only link metadata and dataset creation properties are read; no dataset is read and no
    link is followed outside the file.

    Raises:
        UnsafeBundleError: naming the offending dataset or link as ``field``.
    """
    count = 0

    def walk(group: h5py.Group, prefix: str, depth: int) -> None:
        nonlocal count
        if depth > MAX_HDF5_DEPTH:
            raise UnsafeBundleError(f"groups nest deeper than {MAX_HDF5_DEPTH} levels", file=file, member=member,
                                    field=prefix or "/", fix=_FIX)
        for key in group.keys():
            count += 1
            if count > MAX_HDF5_OBJECTS:
                raise UnsafeBundleError(f"holds more than {MAX_HDF5_OBJECTS} objects", file=file, member=member,
                                        fix=_FIX)
            name = f"{prefix}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise UnsafeBundleError(f"is an external link to {link.filename}:{link.path}", file=file,
                                        member=member, field=name, fix=_FIX)
            if not isinstance(link, h5py.HardLink):
                raise UnsafeBundleError("is a soft link; only plain datasets and groups are accepted", file=file,
                                        member=member, field=name, fix=_FIX)
            obj = group.get(key)
            if isinstance(obj, h5py.Dataset):
                _check_dataset(obj, name, file, member)
            elif isinstance(obj, h5py.Group):
                walk(obj, name, depth + 1)
            else:
                raise UnsafeBundleError(f"is a {type(obj).__name__}; only datasets and groups are accepted",
                                        file=file, member=member, field=name, fix=_FIX)

    walk(h5, "", 0)


def check_inner_zip(
    data: bytes,
    *,
    member: str,
    limits: Mapping[str, int],
    total: int,
    file: str | PathLike | None = None,
    prefix_ok: bool = False,
) -> dict[str, zipfile.ZipInfo]:
    """Bound the archive nested in ``member`` before any of its members is read.

    Args:
        data: the member's bytes (a zip archive).
        member: its name in the bundle, for messages.
        limits: ``{inner name: largest inflated size}``; names outside it are refused.  With
            ``prefix_ok`` an inner name matches when its part after the first ``/`` is a key
            (``torch.save`` writes ``<archive>/data.pkl``, ``<archive>/data/0`` ...) and a key
            ending in ``/`` matches every name below it.
        total: largest sum of inflated sizes.

    Returns:
        ``{inner name: ZipInfo}``.

    Raises:
        BundleFormatError: not a zip archive.
        UnsafeBundleError: an unexpected, duplicate, escaping or symlink member.
        BundleTooLargeError: a member or the total inflates beyond its limit.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise BundleFormatError(f"is not a zip archive ({exc})", file=file, member=member,
                                fix="re-save the bundle") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > 4096:
            raise UnsafeBundleError(f"holds {len(infos)} inner members", file=file, member=member, fix=_FIX)
        out: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if name in out:
                raise UnsafeBundleError("holds duplicate inner members", file=file, member=member, field=name,
                                        fix=_FIX)
            if name.startswith("/") or ".." in name.split("/") or "\\" in name or ":" in name or (
                (info.external_attr >> 16) & 0o170000 == 0o120000
            ):
                raise UnsafeBundleError("is an escaping or symbolic-link inner member", file=file, member=member,
                                        field=name, fix=_FIX)
            key = name.split("/", 1)[1] if prefix_ok and "/" in name else name
            limit = limits.get(key)
            if limit is None:
                limit = next((v for k, v in limits.items() if k.endswith("/") and key.startswith(k)), None)
            if limit is None:
                raise UnsafeBundleError(f"holds the unexpected inner member; allowed: {sorted(limits)}",
                                        file=file, member=member, field=name, fix=_FIX)
            if info.file_size > limit:
                raise BundleTooLargeError(f"inflates to {info.file_size} bytes, more than the {limit} allowed",
                                          file=file, member=member, field=name, fix=_FIX)
            out[name] = info
        size = int(np.sum([i.file_size for i in infos], dtype=np.int64))
        if size > total:
            raise BundleTooLargeError(f"inner members inflate to {size} bytes, more than the {total} allowed",
                                      file=file, member=member, fix=_FIX)
    return out

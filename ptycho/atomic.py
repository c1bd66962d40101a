"""Atomic file writes: write next to the target, then rename over it.

Every file ptychopinn writes that a user may rely on (bundles, weight files, NPZ
data, reports) goes through :func:`atomic_path`, so a crash or exception at any
point leaves the previous file untouched and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from os import PathLike
from pathlib import Path


def _mode_for(path: Path) -> int:
    """Permission bits for the new file: the existing file's, else the umask default."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path``.

    The caller writes the complete file to the yielded path (by name: h5py,
    ``np.savez``, ``savefig`` and ``zipfile`` all accept one).  When the block exits
    normally the file is fsynced, given the permissions of the file it replaces (or
    the umask default), and renamed over ``path`` with ``os.replace``.  When the block
    raises, the temporary file is removed and ``path`` is untouched.  The directory
    must exist.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target}: directory {target.parent} does not exist; create it first")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)

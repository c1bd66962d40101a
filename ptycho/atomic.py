"""Atomic file writes: write next to the target, then rename over it.

Every file ptychopinn writes that a user may rely on (bundles, weight files, NPZ
data, reports) goes through :func:`atomic_path`, so a crash or exception at any
point leaves the previous file untouched.  An exception removes the temporary file;
a process killed outright (``kill -9``, power loss) cannot, so temporary files are
named ``.<target name>.<pid>.<random>.tmp`` and every later write of the same target
(and :func:`remove_stale_temps`, which the bundle reader calls) removes those whose
writing process is gone and which are older than the running write; the live
temporary file of a concurrent writer (its pid alive) is never touched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
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


_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def _temp_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp$")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | PathLike, *, older_than: float | None = None) -> list[Path]:
    """Remove temporary files of crashed writes of ``path``; return those removed.

    Only files and directories in ``path``'s directory named ``.<name>.<pid>.<random>.tmp`` (as
    :func:`atomic_path` and :func:`atomic_temp_dir` name them) are candidates; one is removed when
    its pid is not a running process (or is this process but the file is not one of its live
    writes) and its modification time is before ``older_than`` (default: now).  Errors (a read-only
    directory, a file removed concurrently) are ignored.
    """
    target = Path(path)
    pattern = _temp_pattern(target)
    cutoff = time.time() if older_than is None else older_than
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        with _LIVE_LOCK:
            live_here = entry.path in _LIVE
        if live_here or (pid != os.getpid() and _pid_alive(pid)):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_temp_dir(path: str | PathLike) -> Iterator[Path]:
    """A scratch directory next to ``path``, named like :func:`atomic_path`'s temporary files.

    For libraries that insist on writing temporary files while a file for ``path`` is being
    produced (Keras' archive writer): pointed here, whatever they leave behind when the process
    is killed is recognised (dead pid) and removed by the next save or load, like a temporary
    file.  Removed with its contents when the block exits.
    """
    target = Path(path)
    tmp = tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    with _LIVE_LOCK:
        _LIVE.add(tmp)
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.discard(tmp)


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
    started = time.time()
    remove_stale_temps(target, older_than=started)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    with _LIVE_LOCK:
        _LIVE.add(tmp_name)
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
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(tmp_name)


def atomic_write_bytes(path: str | PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)

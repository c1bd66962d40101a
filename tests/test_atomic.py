"""The one atomic-write helper every persistent file goes through."""

from __future__ import annotations

import os
import stat

import pytest

import ptycho.atomic
from ptycho.atomic import atomic_path, atomic_write_bytes


def test_success_replaces_the_file_and_keeps_its_permissions(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["f.bin"]


def test_new_file_gets_the_umask_default_not_0600(tmp_path):
    target = atomic_write_bytes(tmp_path / "new.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_exception_in_the_block_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_failed_rename_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(ptycho.atomic.os, "replace", boom)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_bytes(tmp_path / "nope" / "f.bin", b"x")

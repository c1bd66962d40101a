"""A bundle is untrusted input (specs/bundle.md, "Validation"): every declared value is checked before use.

Core only (no framework): the reader's schema, bounds and cross-checks, the HDF5 refusals, the
atomic writer's clean-up of crashed saves.  Backend loaders (params.cfg untouched on refusal, Keras
and torch payloads) are tested in tests/tf and tests/torch; the fuzz test in tests/test_bundle_fuzz.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptycho import bundle as bd
from ptycho import bundle_schema as bs
from ptycho.atomic import atomic_path, atomic_temp_dir, remove_stale_temps
from ptycho.canonical_weights import canonical_weights_from_bytes, canonical_weights_to_bytes, init_canonical_weights
from ptycho.errors import (
    BundleError,
    BundleInconsistentError,
    BundleSchemaError,
    BundleTooLargeError,
    UnsafeBundleError,
)
from ptycho.network_spec import build_network_spec

NETWORK = {"N": 32, "gridsize": 1, "n_filters_scale": 1, "object_big": True, "probe_big": True, "pad_object": True,
           "amp_activation": "sigmoid"}
PHYSICS = {"canvas_size": 42, "probe_mask": False, "gaussian_smoothing_sigma": 0.0}


def _probe() -> np.ndarray:
    return np.ones((32, 32, 1), np.complex64)


def _write(tmp_path: Path) -> Path:
    return bd.write_bundle(
        tmp_path, backend="pytorch",
        model_payloads={m: {"model.pt": b"payload"} for m in bd.MODEL_NAMES},
        params_snapshot={"N": 32, "gridsize": 1, "intensity_scale": 5.0, "probe": _probe(), "label": "x"},
        canonical_weights=b"h5", network=NETWORK, physics=PHYSICS, intensity_scale=5.0,
        framework={"torch": "x"},
    )


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rebuild(path: Path, members: dict[str, bytes], *, manifest=None, raw_manifest: bytes | None = None) -> Path:
    """Write ``members`` back with re-declared checksums; ``manifest(m)`` edits the manifest dict."""
    man = json.loads(members["manifest.json"])
    for name in list(man["members"]):
        if name in members:
            man["members"][name] = {"sha256": hashlib.sha256(members[name]).hexdigest(), "size": len(members[name])}
    if manifest is not None:
        manifest(man)
    members = {**members, "manifest.json": raw_manifest if raw_manifest is not None else json.dumps(man).encode()}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _edit_params(members: dict[str, bytes], edit) -> dict[str, bytes]:
    doc = json.loads(members["params.json"])
    edit(doc)
    return {**members, "params.json": json.dumps(doc).encode()}


def _refused(path: Path, cls: type[BundleError], *words: str) -> BundleError:
    with pytest.raises(cls) as exc:
        bd.read_bundle(path)
    for word in words:
        assert word in str(exc.value), str(exc.value)
    return exc.value


# --------------------------------------------------------------------------- manifest schema
@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m["network"].update(n_filters_scale=10**6), "network.n_filters_scale"),
        (lambda m: m["network"].update(n_filters_scale=True), "network.n_filters_scale"),
        (lambda m: m["network"].update(N=48), "network.N"),
        (lambda m: m["network"].update(gridsize=2.0), "network.gridsize"),
        (lambda m: m.update(network=[1, 2]), "network"),
        (lambda m: m.update(canvas_size="big"), "canvas_size"),
        (lambda m: m.update(canvas_size=10**9), "canvas_size"),
        (lambda m: m.update(probe_mask="yes"), "probe_mask"),
        (lambda m: m.update(models="autoencoder"), "models"),
        (lambda m: m.update(members=[]), "members"),
        (lambda m: m["members"]["params.json"].update(size="13"), "members.params.json.size"),
        (lambda m: m.pop("network"), "<root>"),
    ],
)
def test_manifest_values_outside_the_schema_are_refused(tmp_path, edit, field):
    src = _write(tmp_path / "src")
    bad = _rebuild(tmp_path / "bad.zip", _members(src), manifest=edit)
    err = _refused(bad, BundleSchemaError, "member 'manifest.json'")
    assert err.member == "manifest.json" and err.field == field, str(err)


def test_network_too_large_for_memory_is_refused_before_reading_members(tmp_path):
    src = _write(tmp_path / "src")
    bad = _rebuild(tmp_path / "bad.zip", _members(src),
                   manifest=lambda m: m["network"].update(N=256, n_filters_scale=16))
    err = _refused(bad, BundleTooLargeError, "bytes of parameters")
    assert err.field == "network"


def test_declared_member_size_beyond_the_network_bound_is_refused(tmp_path):
    src = _write(tmp_path / "src")
    members = _members(src)
    limit = bs.member_size_limits(NETWORK)["weights"]
    bad = _rebuild(tmp_path / "bad.zip", members,
                   manifest=lambda m: m["members"]["canonical_weights.h5"].update(size=limit + 1))
    err = _refused(bad, BundleTooLargeError)
    assert err.field == "members.canonical_weights.h5.size"


def test_deeply_nested_json_is_refused_before_parsing(tmp_path):
    src = _write(tmp_path / "src")
    deep = b'{"format": "ptychopinn.wts.h5.zip", "version": "2.0", "backend": "pytorch", "x": ' + \
        b"[" * 100_000 + b"]" * 100_000 + b"}"
    bad = _rebuild(tmp_path / "bad.zip", _members(src), raw_manifest=deep)
    _refused(bad, BundleSchemaError, "nests 100001 levels deep")
    params_deep = _rebuild(tmp_path / "bad2.zip", {**_members(src), "params.json": b"[" * 50_000 + b"]" * 50_000})
    _refused(params_deep, BundleSchemaError, "member 'params.json'", "nests")


@pytest.mark.parametrize("text", [b'{"version": NaN}', b"{not json", b"\xff\xfe"])
def test_malformed_manifest_json_is_a_bundle_error(tmp_path, text):
    src = _write(tmp_path / "src")
    _refused(_rebuild(tmp_path / "bad.zip", _members(src), raw_manifest=text), BundleSchemaError, "manifest.json")


def test_manifest_that_is_a_list_is_a_bundle_error(tmp_path):
    src = _write(tmp_path / "src")
    _refused(_rebuild(tmp_path / "bad.zip", _members(src), raw_manifest=b"[1, 2]"), BundleSchemaError,
             "expected a JSON object")


# --------------------------------------------------------------------------- params.json
def _nd(doc) -> dict:
    return doc["params"]["probe"]["__ndarray__"]


@pytest.mark.parametrize(
    ("edit", "cls", "field"),
    [
        (lambda d: _nd(d).update(dtype="|O"), BundleSchemaError, "params.probe.__ndarray__.dtype"),
        (lambda d: _nd(d).update(dtype="<U8"), BundleSchemaError, "params.probe.__ndarray__.dtype"),
        (lambda d: _nd(d).update(shape=[32, 32, 2]), BundleSchemaError, "params.probe.__ndarray__.data"),
        (lambda d: _nd(d).update(shape=[10**6, 10**6]), BundleTooLargeError, "params.probe.__ndarray__.shape"),
        (lambda d: _nd(d).update(data="!!!!" * (len(_nd(d)["data"]) // 4)), BundleSchemaError,
         "params.probe.__ndarray__.data"),
        (lambda d: _nd(d).pop("data"), BundleSchemaError, "params.probe.__ndarray__"),
        (lambda d: d.update(params=[1]), BundleSchemaError, "params"),
        (lambda d: d["params"].update(gridsize=[2]), BundleSchemaError, "params.gridsize"),
        (lambda d: d["params"].update(gridsize=2), BundleInconsistentError, "params.gridsize"),
        (lambda d: d["params"].update(N=64), BundleInconsistentError, "params.N"),
        (lambda d: d["params"].update(intensity_scale="big"), BundleSchemaError, "params.intensity_scale"),
        (lambda d: d["params"].update(nphotons=-1.0), BundleSchemaError, "params.nphotons"),
        (lambda d: d["params"].update(x={"__unknown__": 1}), BundleSchemaError, "params.x"),
        (lambda d: d["params"].update(x={"__complex__": [1]}), BundleSchemaError, "params.x.__complex__"),
    ],
)
def test_params_json_values_are_validated(tmp_path, edit, cls, field):
    src = _write(tmp_path / "src")
    bad = _rebuild(tmp_path / "bad.zip", _edit_params(_members(src), edit))
    err = _refused(bad, cls, "member 'params.json'")
    assert err.member == "params.json" and err.field == field, str(err)


def test_a_valid_bundle_still_round_trips(tmp_path):
    b = bd.read_bundle(_write(tmp_path))
    assert b.params["N"] == 32 and b.params["probe"].shape == (32, 32, 1)


def test_writer_aligns_a_stale_snapshot_with_the_saved_network(tmp_path):
    path = bd.write_bundle(
        tmp_path, backend="pytorch", model_payloads={m: {"model.pt": b"p"} for m in bd.MODEL_NAMES},
        params_snapshot={"N": 64, "gridsize": 2, "n_filters_scale": 2}, canonical_weights=b"h5", network=NETWORK,
        physics=PHYSICS, intensity_scale=1.0, framework={},
    )
    p = bd.read_bundle(path).params
    assert (p["N"], p["gridsize"], p["n_filters_scale"]) == (32, 1, 1)


# --------------------------------------------------------------------------- HDF5
@pytest.fixture(scope="module")
def canonical():
    spec = build_network_spec(32, 1, n_filters_scale=1)
    w = init_canonical_weights(spec, seed=0, log_scale=math.log(3.0), probe=np.ones((32, 32), np.complex64))
    return spec, w, canonical_weights_to_bytes(w, spec, backend="test")


def _h5_with(canonical, tmp_path: Path, how: str) -> bytes:
    """The canonical file with ``probe.real`` replaced by a dataset of kind ``how``."""
    spec, w, data = canonical
    path = tmp_path / "w.h5"
    path.write_bytes(data)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full((32, 32), 7, np.float32).tobytes())
    with h5py.File(path, "a") as h5:
        del h5["probe.real"]
        if how == "external":
            h5.create_dataset("probe.real", shape=(32, 32), dtype="float32", external=[(str(secret), 0, 4096)])
        elif how == "virtual":
            with h5py.File(tmp_path / "other.h5", "w") as other:
                other["x"] = np.full((32, 32), 7, np.float32)
            layout = h5py.VirtualLayout(shape=(32, 32), dtype="float32")
            layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "x", shape=(32, 32))
            h5.create_virtual_dataset("probe.real", layout)
        elif how == "external_link":
            with h5py.File(tmp_path / "other.h5", "w") as other:
                other["x"] = np.full((32, 32), 7, np.float32)
            h5["probe.real"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "x")
        elif how == "soft_link":
            h5["probe.real"] = h5py.SoftLink("/probe.imag")
        elif how == "filter":
            h5.create_dataset("probe.real", data=w["probe.real"], compression="gzip")
        elif how == "compound":
            h5.create_dataset("probe.real", shape=(32, 32), dtype=np.dtype([("a", "<f4")]))
    return path.read_bytes()


@pytest.mark.parametrize(
    ("how", "words"),
    [
        ("external", "external raw storage"),
        ("virtual", "virtual dataset"),
        ("external_link", "external link"),
        ("soft_link", "soft link"),
        ("filter", "filters"),
        ("compound", "dtype"),
    ],
)
def test_hdf5_data_outside_the_file_is_refused(canonical, tmp_path, how, words):
    spec = canonical[0]
    data = _h5_with(canonical, tmp_path, how)
    with pytest.raises(UnsafeBundleError, match=words) as exc:
        canonical_weights_from_bytes(data, spec, source="wts.h5.zip:canonical_weights.h5")
    assert exc.value.field == "/probe.real"


def test_plain_canonical_file_still_reads(canonical):
    spec, w, data = canonical
    out, _ = canonical_weights_from_bytes(data, spec)
    np.testing.assert_array_equal(out["probe.real"], w["probe.real"])


# --------------------------------------------------------------------------- crashed saves
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_later_save_removes_temps_of_crashed_saves_but_not_live_ones(tmp_path):
    target = tmp_path / "wts.h5.zip"
    stale = tmp_path / f".wts.h5.zip.{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".wts.h5.zip.{os.getppid()}.def456.tmp"  # a running process (our parent)
    other = tmp_path / ".other.zip.1.x.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    old = time.time() - 60
    for p in (stale, live, other):
        os.utime(p, (old, old))
    with atomic_path(target) as tmp:
        assert str(os.getpid()) in tmp.name
        tmp.write_bytes(b"new")
    assert not stale.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other.name])


def test_load_removes_temps_of_crashed_saves(tmp_path):
    path = _write(tmp_path)
    stale = tmp_path / f".wts.h5.zip.{_dead_pid()}.zz9.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 60,) * 2)
    bd.read_bundle(path)
    assert not stale.exists()


def test_scratch_dirs_of_killed_saves_are_removed_too(tmp_path):
    target = tmp_path / "wts.h5.zip"
    stale = tmp_path / f".wts.h5.zip.{_dead_pid()}.k3.tmp"
    (stale / "assets").mkdir(parents=True)
    os.utime(stale, (time.time() - 60,) * 2)
    with atomic_temp_dir(target) as live:
        assert remove_stale_temps(target) == [stale]  # the live scratch dir of this process stays
        assert live.is_dir()
    assert sorted(tmp_path.iterdir()) == []


def test_a_temp_newer_than_the_running_save_is_kept(tmp_path):
    target = tmp_path / "wts.h5.zip"
    fresh = tmp_path / f".wts.h5.zip.{_dead_pid()}.q1.tmp"
    fresh.write_bytes(b"x")
    assert remove_stale_temps(target, older_than=time.time() - 3600) == []
    assert fresh.exists()


def test_inner_zip_bounds():
    from ptycho.container_safety import check_inner_zip

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", b"0" * 100_000)
        zf.writestr("evil.py", b"print(1)")
    with pytest.raises(BundleTooLargeError, match="inflates to 100000"):
        check_inner_zip(buf.getvalue(), member="m/model.keras", limits={"config.json": 1000, "evil.py": 10},
                        total=2000)
    with pytest.raises(UnsafeBundleError, match="unexpected inner member"):
        check_inner_zip(buf.getvalue(), member="m/model.keras", limits={"config.json": 10**6}, total=10**7)


def test_spec_validation_table_names_existing_tests():
    """Every test named in specs/bundle.md exists; every test in this file has a row there."""
    import re

    root = Path(__file__).resolve().parents[1]
    spec = (root / "specs" / "bundle.md").read_text()
    named = set(re.findall(r"`(?:tests/((?:\w+/)*test_\w+)\.py::)?(test_\w+)`", spec))
    assert named
    for module, test in named:
        source = (root / "tests" / f"{module or 'test_bundle_untrusted'}.py").read_text()
        assert f"def {test}(" in source, f"specs/bundle.md names missing test {module}::{test}"
    listed = {test for _, test in named}
    here = {n for n in globals() if n.startswith("test_") and n != "test_spec_validation_table_names_existing_tests"}
    missing = here - listed - {"test_a_valid_bundle_still_round_trips", "test_plain_canonical_file_still_reads",
                               "test_writer_aligns_a_stale_snapshot_with_the_saved_network",
                               "test_a_temp_newer_than_the_running_save_is_kept"}
    assert not missing, f"tests without a row in specs/bundle.md: {sorted(missing)}"

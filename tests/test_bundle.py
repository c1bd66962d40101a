"""The backend-neutral wts.h5.zip reader/writer: round trip, atomicity, and every bad bundle."""

from __future__ import annotations

import json
import os
import pickle
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptycho import bundle as bd
from ptycho.errors import (
    BundleBackendMismatchError,
    BundleError,
    BundleFormatError,
    BundleVersionError,
    UnsafeBundleError,
)

PHYSICS = {"canvas_size": 74, "probe_mask": False, "gaussian_smoothing_sigma": 0.0}
NETWORK = {
    "N": 64,
    "gridsize": 2,
    "n_filters_scale": 2,
    "object_big": True,
    "probe_big": True,
    "pad_object": True,
    "amp_activation": "sigmoid",
}


def _params() -> dict:
    return {
        "N": 64,
        "gridsize": 2,
        "nphotons": 1e9,
        "object.big": True,
        "probe.mask": False,
        "output_prefix": "out",
        "label": "",
        "outer_offset_train": None,
        "grid": (2, 2),
        "intensity_scale": 988.2117688,
        "probe": (np.arange(64 * 64, dtype=np.float32).reshape(64, 64, 1) * (1 + 2j)).astype(np.complex64),
        "counts": np.arange(3, dtype=np.int64),
        "nested": {"a": [1, 2.5, None]},
    }


def _write(tmp_path: Path, backend: str = "tensorflow", **kw) -> Path:
    payload = bd.PAYLOAD_MEMBERS[backend][0]
    return bd.write_bundle(
        tmp_path,
        backend=backend,
        model_payloads={m: {payload: f"{m}-bytes".encode()} for m in bd.MODEL_NAMES},
        params_snapshot=kw.pop("params", _params()),
        canonical_weights=b"HDF5-canonical",
        network=NETWORK, physics=kw.pop("physics", PHYSICS),
        intensity_scale=988.2117688,
        framework={"name": backend, "version": "x"},
        **kw,
    )


def _rewrite(src: Path, dst: Path, *, drop=(), replace=None, add=None) -> Path:
    """Copy a bundle member by member, optionally dropping, replacing or adding members."""
    replace = replace or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info.filename)))
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def _manifest(path: Path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def test_round_trip_preserves_every_type(tmp_path):
    path = _write(tmp_path)
    assert path == tmp_path / "wts.h5.zip"
    b = bd.read_bundle(tmp_path, expected_backend="tensorflow")
    assert b.backend == "tensorflow"
    assert b.manifest["models"] == list(bd.MODEL_NAMES)
    assert b.manifest["version"] == bd.FORMAT_VERSION
    assert b.manifest["network"] == NETWORK
    assert b.canonical_weights == b"HDF5-canonical"
    assert b.payloads["autoencoder"] == {"model.keras": b"autoencoder-bytes"}
    expected = _params()
    assert set(b.params) == set(expected)
    for key, value in expected.items():
        got = b.params[key]
        assert type(got) is type(value), key
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value, key


def test_manifest_dill_is_plain_data_and_matches_json(tmp_path):
    path = _write(tmp_path)
    with zipfile.ZipFile(path) as zf:
        dill_manifest = bd.load_plain_pickle(zf.read("manifest.dill"))
        # Upstream tools read it with pickle/dill; a plain pickle load gives the same dict.
        assert pickle.loads(zf.read("manifest.dill")) == dill_manifest
    assert dill_manifest == _manifest(path)
    assert dill_manifest["backend"] == "tensorflow"


def test_outer_layout_is_the_same_for_both_backends(tmp_path):
    tf_path = _write(tmp_path / "tf", "tensorflow")
    pt_path = _write(tmp_path / "pt", "pytorch")

    def outer(p):
        with zipfile.ZipFile(p) as zf:
            return sorted({n.split("/")[0] for n in zf.namelist()})

    assert outer(tf_path) == outer(pt_path)
    assert set(_manifest(tf_path)) == set(_manifest(pt_path))


def test_accepts_upstream_style_locations(tmp_path):
    _write(tmp_path)
    for loc in (tmp_path, tmp_path / "wts.h5", tmp_path / "wts.h5.zip"):
        assert bd.read_bundle(loc).path == tmp_path / "wts.h5.zip"


def test_missing_bundle_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="wts.h5.zip"):
        bd.read_bundle(tmp_path)


def test_truncated_zip(tmp_path):
    path = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleFormatError, match="not a zip|corrupt|truncated"):
        bd.read_bundle(path)


def test_missing_member(tmp_path):
    src = _write(tmp_path / "a")
    bad = _rewrite(src, tmp_path / "bad.zip", drop={"diffraction_to_obj/model.keras"})
    with pytest.raises(BundleFormatError, match="diffraction_to_obj/model.keras"):
        bd.read_bundle(bad)


def test_manifest_from_the_other_backend(tmp_path):
    _write(tmp_path, "pytorch")
    with pytest.raises(BundleBackendMismatchError) as err:
        bd.read_bundle(tmp_path, expected_backend="tensorflow")
    msg = str(err.value)
    assert "pytorch" in msg and "tensorflow" in msg and "load_torch_bundle" in msg


def test_newer_version(tmp_path):
    src = _write(tmp_path / "a")
    manifest = _manifest(src)
    manifest["version"] = "3.0"
    bad = _rewrite(src, tmp_path / "bad.zip", replace={"manifest.json": json.dumps(manifest)})
    with pytest.raises(BundleVersionError, match="3.0.*newer"):
        bd.read_bundle(bad)


def test_newer_minor_version_is_accepted(tmp_path):
    src = _write(tmp_path / "a")
    manifest = _manifest(src)
    manifest["version"] = "2.7"
    ok = _rewrite(src, tmp_path / "ok.zip", replace={"manifest.json": json.dumps(manifest)})
    assert bd.read_bundle(ok).manifest["version"] == "2.7"


@pytest.mark.parametrize("evil", ["../evil.txt", "/etc/evil", "autoencoder/../../evil", "C:\\evil"])
def test_member_path_escaping_the_directory(tmp_path, evil):
    src = _write(tmp_path / "a")
    bad = _rewrite(src, tmp_path / "bad.zip", add={evil: b"x"})
    with pytest.raises(UnsafeBundleError, match="escape"):
        bd.read_bundle(bad)
    assert not (tmp_path / "evil.txt").exists()


def test_pickle_payload_member_is_refused(tmp_path):
    src = _write(tmp_path / "a")
    bad = _rewrite(src, tmp_path / "bad.zip", add={"autoencoder/custom_objects.dill": pickle.dumps(os.system)})
    with pytest.raises(UnsafeBundleError, match="custom_objects.dill"):
        bd.read_bundle(bad)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_plain_pickle_loader_refuses_code():
    with pytest.raises(UnsafeBundleError, match="posix.system|os.system|nt.system"):
        bd.load_plain_pickle(pickle.dumps(_Boom()))
    with pytest.raises(UnsafeBundleError):
        bd.load_plain_pickle(pickle.dumps(np.zeros(2)))  # numpy arrays need a global too
    assert bd.load_plain_pickle(pickle.dumps({"a": [1, 2.0, "x", None, True]})) == {"a": [1, 2.0, "x", None, True]}


def test_dump_plain_pickle_rejects_objects():
    with pytest.raises(TypeError, match="plain data"):
        bd.dump_plain_pickle({"probe": np.zeros(2)})


def test_symlink_member_is_refused(tmp_path):
    src = _write(tmp_path / "a")
    bad = tmp_path / "bad.zip"
    _rewrite(src, bad)
    with zipfile.ZipFile(bad, "a") as zf:
        info = zipfile.ZipInfo("autoencoder/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeBundleError, match="symbolic link"):
        bd.read_bundle(bad)


def test_checksum_mismatch(tmp_path):
    src = _write(tmp_path / "a")
    bad = _rewrite(src, tmp_path / "bad.zip", replace={"canonical_weights.h5": b"tampered"})
    with pytest.raises(BundleFormatError, match="checksum"):
        bd.read_bundle(bad)


def test_legacy_upstream_archive_is_refused_without_unpickling(tmp_path):
    legacy = tmp_path / "wts.h5.zip"
    with zipfile.ZipFile(legacy, "w") as zf:
        zf.writestr("manifest.dill", pickle.dumps(_Boom()))
        zf.writestr("autoencoder/custom_objects.dill", pickle.dumps(_Boom()))
    with pytest.raises(BundleFormatError, match="legacy upstream"):
        bd.read_bundle(legacy)


def test_malformed_manifest(tmp_path):
    src = _write(tmp_path / "a")
    bad = _rewrite(src, tmp_path / "bad.zip", replace={"manifest.json": b"{not json"})
    with pytest.raises(BundleFormatError, match="not valid JSON"):
        bd.read_bundle(bad)
    manifest = _manifest(src)
    del manifest["backend"]
    bad2 = _rewrite(src, tmp_path / "bad2.zip", replace={"manifest.json": json.dumps(manifest)})
    with pytest.raises(BundleFormatError, match="backend"):
        bd.read_bundle(bad2)


def test_every_bundle_error_is_a_value_error(tmp_path):
    assert issubclass(BundleError, ValueError)


def test_failed_save_leaves_previous_bundle_intact(tmp_path, monkeypatch):
    path = _write(tmp_path)
    before = path.read_bytes()
    calls = {"n": 0}
    real = zipfile.ZipFile.writestr

    def flaky(self, name, data, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(self, name, data, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", flaky)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["wts.h5.zip"], "temporary file left behind"


def test_write_validates_models_and_payloads(tmp_path):
    with pytest.raises(ValueError, match="exactly the models"):
        bd.write_bundle(
            tmp_path, backend="tensorflow", model_payloads={"autoencoder": {"model.keras": b""}},
            params_snapshot={}, canonical_weights=b"", network=NETWORK, physics=PHYSICS,
            intensity_scale=1.0, framework={},
        )
    with pytest.raises(ValueError, match="not an allowed"):
        bd.write_bundle(
            tmp_path, backend="pytorch",
            model_payloads={m: {"model.pt": b"", "evil.py": b""} for m in bd.MODEL_NAMES},
            params_snapshot={}, canonical_weights=b"", network=NETWORK, physics=PHYSICS,
            intensity_scale=1.0, framework={},
        )
    with pytest.raises(ValueError, match="backend"):
        bd.write_bundle(
            tmp_path, backend="jax", model_payloads={m: {"model.pt": b""} for m in bd.MODEL_NAMES},
            params_snapshot={}, canonical_weights=b"", network=NETWORK, physics=PHYSICS,
            intensity_scale=1.0, framework={},
        )


def test_restore_params_updates_in_place_and_copies_arrays():
    cfg = {"keep": 1, "N": 32}
    snap = {"N": 64, "probe": np.ones(2, np.complex64)}
    bd.restore_params(cfg, snap)
    assert cfg["keep"] == 1 and cfg["N"] == 64
    cfg["probe"][0] = 5
    assert snap["probe"][0] == 1


def test_params_codec_rejects_unstorable_values():
    with pytest.raises(TypeError, match="params\\['f'\\]"):
        bd.encode_params({"f": object()})
    with pytest.raises(TypeError, match="object array"):
        bd.encode_params({"o": np.array([None], dtype=object)})
    nan_inf = bd.decode_params(bd.encode_params({"a": float("nan"), "b": float("inf")}))
    assert np.isnan(nan_inf["a"]) and nan_inf["b"] == float("inf")


def test_every_bundle_carries_the_physics_settings(tmp_path):
    """Both backends' loaders rebuild the model from these; a bundle without them is refused."""
    with pytest.raises(ValueError, match="physics must have exactly the keys"):
        _write(tmp_path / "a", physics={"canvas_size": 74})
    path = _write(tmp_path / "b")
    b = bd.read_bundle(path)
    assert {k: b.manifest[k] for k in bd.PHYSICS_MANIFEST_KEYS} == PHYSICS

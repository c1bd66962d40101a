"""``wts.h5.zip`` persistence of the TensorFlow models: round trip, bad bundles, atomic save."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptycho import bundle, params
from ptycho.canonical_weights import init_canonical_weights
from ptycho.errors import (
    BundleBackendMismatchError,
    BundleError,
    BundleFormatError,
    BundleVersionError,
    UnsafeBundleError,
)
from ptycho.network_spec import build_network_spec
from ptycho.reference.physics import default_probe, normalize_probe
from ptycho_tf import model as tf_model
from ptycho_tf import model_manager
from ptycho_tf.model import build_models
from ptycho_tf.model_manager import ModelManager
from ptycho_tf.workflows.components import load_inference_bundle

N = 32


def _models(seed: int = 1, gridsize: int = 1):
    spec = build_network_spec(N, gridsize, n_filters_scale=1)
    probe = normalize_probe(default_probe(N), 4.0)
    w = init_canonical_weights(spec, seed=seed, log_scale=math.log(20.0), probe=probe)
    return build_models(spec, weights=w, probe_mask=True, gaussian_smoothing_sigma=0.0)


def _set_params(gridsize: int = 1) -> None:
    params.cfg.update(N=N, gridsize=gridsize, n_filters_scale=1, intensity_scale=20.0, label="round-trip")
    params.cfg["probe"] = normalize_probe(default_probe(N), 4.0)[..., None]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A valid bundle (bytes) and the models and params it was written from."""
    out = tmp_path_factory.mktemp("bundle")
    snap = params.snapshot()
    try:
        _set_params()
        models = _models()
        path = model_manager.save_models(models, out)
        cfg = params.snapshot()
    finally:
        params.restore(snap)
    return path.read_bytes(), models, cfg


def _write(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "wts.h5.zip"
    p.write_bytes(data)
    return p


def _rewrite(data: bytes, *, drop=(), add=None, edit=None, manifest=None, fix_checksums=True) -> bytes:
    """Rebuild a bundle zip with members dropped, added or edited (checksums re-declared by default)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {n: src.read(n) for n in src.namelist() if n not in drop}
    for name, fn in (edit or {}).items():
        members[name] = fn(members[name])
    members.update(add or {})
    man = json.loads(members["manifest.json"])
    if fix_checksums:
        import hashlib

        man["members"] = {
            n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
            for n, d in members.items()
            if n in man["members"]
        }
    if manifest:
        manifest(man)
    members["manifest.json"] = json.dumps(man).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return buf.getvalue()


# --------------------------------------------------------------------------- round trip
def test_bundle_layout_and_manifest(saved, tmp_path):
    data, models, _cfg = saved
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert names == {
        "manifest.json", "manifest.dill", "params.json", "canonical_weights.h5",
        "autoencoder/model.keras", "diffraction_to_obj/model.keras",
    }
    man = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("manifest.json"))
    assert man["backend"] == "tensorflow" and man["models"] == ["autoencoder", "diffraction_to_obj"]
    assert man["version"] == bundle.FORMAT_VERSION and man["network"] == models.spec.config()
    assert man["intensity_scale"] == pytest.approx(20.0, rel=1e-6)
    assert man["probe_mask"] is True and man["canvas_size"] == models.canvas_size
    assert bundle.load_plain_pickle(zipfile.ZipFile(io.BytesIO(data)).read("manifest.dill"))["backend"] == "tensorflow"


def test_load_restores_params_exactly_and_predicts_identically(saved, tmp_path, rng):
    data, models, cfg = saved
    path = _write(tmp_path, data)
    params.cfg.update(N=128, gridsize=3, intensity_scale=1.0, label="other")
    loaded, snap = model_manager.load_models(path)
    assert set(params.cfg) == set(cfg)
    for k, v in cfg.items():
        got = params.cfg[k]
        if isinstance(v, np.ndarray):
            assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v), k
        else:
            assert type(got) is type(v) and got == v, k
    x = rng.uniform(0, 20, (5, N, N, 1)).astype(np.float32)
    pos = np.zeros((5, 1, 2, 1), np.float32)
    a = models.autoencoder.predict([x, pos], verbose=0)
    b = loaded.autoencoder.predict([x, pos], verbose=0)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert loaded.probe_mask is True and loaded.canvas_size == models.canvas_size


def test_model_manager_upstream_entry_points(saved, tmp_path, rng):
    _data, models, cfg = saved
    params.restore(cfg)
    path = ModelManager.save_multiple_models(models.as_dict(), tmp_path / "wts.h5", None, 20.0)
    assert path == tmp_path / "wts.h5.zip"
    loaded = ModelManager.load_multiple_models(tmp_path / "wts.h5")
    assert sorted(loaded) == ["autoencoder", "diffraction_to_obj"]
    x = rng.uniform(0, 20, (3, N, N, 1)).astype(np.float32)
    pos = np.zeros((3, 1, 2, 1), np.float32)
    np.testing.assert_array_equal(
        loaded["diffraction_to_obj"].predict([x, pos], verbose=0),
        models.diffraction_to_obj.predict([x, pos], verbose=0),
    )
    with pytest.raises(ValueError, match="unknown model"):
        ModelManager.load_multiple_models(tmp_path, ["encoder"])
    d2o, cfg2 = load_inference_bundle(tmp_path)
    assert d2o.name == "diffraction_to_obj" and cfg2["intensity_scale"] == 20.0


def test_save_uses_the_current_models(saved, tmp_path):
    _data, models, cfg = saved
    params.restore(cfg)
    tf_model.set_current_models(models)
    try:
        path = model_manager.save(tmp_path / "out")
    finally:
        tf_model._CURRENT.clear()
    assert path == tmp_path / "out" / "wts.h5.zip" and path.is_file()


# --------------------------------------------------------------------------- bad bundles
def _malicious_pickle(marker: Path) -> bytes:
    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Boom())


def _lambda_config(data: bytes) -> bytes:
    """Insert a Lambda layer into a model.keras config.json."""
    src = zipfile.ZipFile(io.BytesIO(data))
    members = {n: src.read(n) for n in src.namelist()}
    cfg = json.loads(members["config.json"])
    cfg["config"]["layers"][1]["class_name"] = "Lambda"
    members["config.json"] = json.dumps(cfg).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return buf.getvalue()


def _legacy(marker: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.dill", _malicious_pickle(marker))
        zf.writestr("autoencoder/custom_objects.dill", _malicious_pickle(marker))
        zf.writestr("autoencoder/params.dill", _malicious_pickle(marker))
    return buf.getvalue()


BAD_BUNDLES = {
    "truncated zip": (lambda d, m: d[: len(d) // 2], BundleFormatError),
    "missing member": (lambda d, m: _rewrite(d, drop=("autoencoder/model.keras",), fix_checksums=False),
                       BundleFormatError),
    "other backend": (lambda d, m: _rewrite(d, manifest=lambda man: man.update(backend="pytorch")),
                      BundleBackendMismatchError),
    "newer version": (lambda d, m: _rewrite(d, manifest=lambda man: man.update(version="3.0")), BundleVersionError),
    "escaping path": (lambda d, m: _rewrite(d, add={"../../escape.txt": b"x"}), UnsafeBundleError),
    "pickle payload": (lambda d, m: _rewrite(d, add={"autoencoder/custom_objects.dill": _malicious_pickle(m)}),
                       UnsafeBundleError),
    "pickle instead of keras": (
        lambda d, m: _rewrite(d, edit={"autoencoder/model.keras": lambda _: _malicious_pickle(m)}),
        BundleFormatError,
    ),
    "lambda layer": (lambda d, m: _rewrite(d, edit={"autoencoder/model.keras": _lambda_config}), UnsafeBundleError),
    "checksum mismatch": (
        lambda d, m: _rewrite(d, edit={"params.json": lambda b: b.replace(b'"label"', b'"lab3l"')},
                              fix_checksums=False),
        BundleFormatError,
    ),
    "legacy upstream": (lambda d, m: _legacy(m), BundleFormatError),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
@pytest.mark.parametrize("loader", ["load_models", "load_inference_bundle", "load_multiple_models"])
def test_bad_bundles_raise_specific_errors_and_execute_nothing(saved, tmp_path, case, loader):
    data, _models, _cfg = saved
    marker = tmp_path / "executed.txt"
    make, error = BAD_BUNDLES[case]
    path = _write(tmp_path, make(data, marker))
    before = params.snapshot()
    load = {
        "load_models": model_manager.load_models,
        "load_inference_bundle": load_inference_bundle,
        "load_multiple_models": ModelManager.load_multiple_models,
    }[loader]
    with pytest.raises(error) as info:
        load(tmp_path)
    assert isinstance(info.value, BundleError)
    assert str(path) in str(info.value) or "wts.h5.zip" in str(info.value)
    assert not marker.exists()
    assert not (tmp_path.parent / "escape.txt").exists()
    assert params.cfg.keys() == before.keys() and params.cfg["N"] == before["N"]  # nothing restored


def test_missing_bundle_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="wts.h5.zip"):
        load_inference_bundle(tmp_path)


# --------------------------------------------------------------------------- atomic save
def _no_temp_files(directory: Path) -> bool:
    return sorted(p.name for p in directory.iterdir()) == ["wts.h5.zip"]


def test_a_save_that_fails_midway_leaves_the_previous_bundle_intact(saved, tmp_path, monkeypatch):
    data, models, cfg = saved
    params.restore(cfg)
    path = _write(tmp_path, data)
    other = _models(seed=2)

    calls = {"n": 0}
    real = zipfile.ZipFile.writestr

    def failing_writestr(self, name, payload, *a, **kw):  # fail after a few members were written
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full")
        return real(self, name, payload, *a, **kw)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    with pytest.raises(OSError, match="disk full"):
        model_manager.save_models(other, tmp_path)
    monkeypatch.undo()
    assert path.read_bytes() == data and _no_temp_files(tmp_path)

    def failing_payload(model, scratch):
        if model.name == "diffraction_to_obj":
            raise RuntimeError("keras failed")
        return b"partial"

    monkeypatch.setattr(model_manager, "_keras_bytes", failing_payload)
    with pytest.raises(RuntimeError, match="keras failed"):
        model_manager.save_models(other, tmp_path)
    assert path.read_bytes() == data and _no_temp_files(tmp_path)
    assert os.listdir(tmp_path) == ["wts.h5.zip"]

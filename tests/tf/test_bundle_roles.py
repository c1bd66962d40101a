"""TensorFlow bundle loader on untrusted payloads: wrong model role, Keras weights outside the file.

Each refusal must leave ``params.cfg`` exactly as it was (specs/bundle.md, "Validation").
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptycho import params
from ptycho.canonical_weights import init_canonical_weights
from ptycho.errors import BundleInconsistentError, UnsafeBundleError
from ptycho.network_spec import build_network_spec
from ptycho.reference.physics import default_probe, normalize_probe
from ptycho_tf import model_manager
from ptycho_tf.model import build_models


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> dict[str, bytes]:
    spec = build_network_spec(32, 1, n_filters_scale=1)
    probe = normalize_probe(default_probe(32), 4.0)
    w = init_canonical_weights(spec, seed=2, log_scale=math.log(20.0), probe=probe)
    with params.isolated():
        params.cfg.update(N=32, gridsize=1, n_filters_scale=1, intensity_scale=20.0)
        params.cfg["probe"] = probe[..., None]
        models = build_models(spec, weights=w, probe_mask=True, gaussian_smoothing_sigma=0.0)
        path = model_manager.save_models(models, tmp_path_factory.mktemp("roles"))
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write(path: Path, members: dict[str, bytes]) -> Path:
    man = json.loads(members["manifest.json"])
    for name in man["members"]:
        man["members"][name] = {"sha256": hashlib.sha256(members[name]).hexdigest(), "size": len(members[name])}
    with zipfile.ZipFile(path / "wts.h5.zip", "w") as zf:
        for name, data in {**members, "manifest.json": json.dumps(man).encode()}.items():
            zf.writestr(name, data)
    return path


def _refused_untouched(path: Path, cls) -> Exception:
    params.cfg.update(N=64, gridsize=2, label="before")
    before = params.snapshot()
    with pytest.raises(cls) as exc:
        model_manager.load_models(path)
    assert params.cfg.keys() == before.keys()
    for k, v in before.items():
        assert np.array_equal(params.cfg[k], v) if isinstance(v, np.ndarray) else params.cfg[k] == v, k
    return exc.value


def test_model_under_the_wrong_role_is_refused(members, tmp_path):
    swapped = {**members, "autoencoder/model.keras": members["diffraction_to_obj/model.keras"],
               "diffraction_to_obj/model.keras": members["autoencoder/model.keras"]}
    err = _refused_untouched(_write(tmp_path, swapped), BundleInconsistentError)
    assert err.member in ("autoencoder/model.keras", "diffraction_to_obj/model.keras") and "role" in str(err)


def test_keras_weights_with_external_storage_are_refused(members, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x07" * (1 << 20))
    with zipfile.ZipFile(io.BytesIO(members["autoencoder/model.keras"])) as zf:
        inner = {n: zf.read(n) for n in zf.namelist()}
    h5_path = tmp_path / "w.h5"
    h5_path.write_bytes(inner["model.weights.h5"])
    names: list[str] = []
    with h5py.File(h5_path, "a") as h5:
        h5.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.size > 1 else None)
        ds = h5[names[0]]
        shape, dtype = ds.shape, ds.dtype
        del h5[names[0]]
        h5.create_dataset(names[0], shape=shape, dtype=dtype,
                          external=[(str(secret), 0, int(np.prod(shape)) * dtype.itemsize)])
    inner["model.weights.h5"] = h5_path.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in inner.items():
            zf.writestr(n, d)
    err = _refused_untouched(_write(tmp_path, {**members, "autoencoder/model.keras": buf.getvalue()}),
                             UnsafeBundleError)
    assert "external raw storage" in str(err) and err.field == f"/{names[0]}"

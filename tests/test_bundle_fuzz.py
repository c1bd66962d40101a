"""Fuzz both backends' bundle loaders with mutated real bundles (hypothesis).

Every example mutates a real ``wts.h5.zip`` written by the backend's own saver (JSON values and
structure of manifest.json / params.json, member bytes, member names, declared sizes) and loads
it with the backend's loader.  Required for every example: a ``BundleError`` or a successful load
of the unchanged model; ``params.cfg`` untouched on refusal (deep compare); no file written
outside the target (the temporary directory is private and must stay empty, the bundle's
directory holds only the bundle); bounded time (hypothesis deadline) and memory (peak RSS).

The default run uses a small derandomized profile; ``-m slow`` runs a longer random one.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import resource
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptycho import params
from ptycho.errors import BundleError

FAST = settings(max_examples=10, derandomize=True, deadline=20_000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
LONG = settings(max_examples=150, deadline=30_000, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
#: Peak resident memory may grow at most this much over the whole fuzz run of one backend.
MAX_RSS_GROWTH_BYTES = 1536 * 1024**2


# --------------------------------------------------------------------------- real bundles
def _torch_bundle(out: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    pytest.importorskip("torch")
    from ptycho_torch.canonical import export_canonical
    from ptycho_torch.model_manager import create_torch_model_with_gridsize, save_torch_bundle

    with params.isolated():
        params.cfg.update(N=32, gridsize=1, n_filters_scale=1)
        model = create_torch_model_with_gridsize(1, 32, seed=3)
        path = save_torch_bundle({"autoencoder": model}, out)
    return path.read_bytes(), export_canonical(model)


def _tf_bundle(out: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    pytest.importorskip("tensorflow")
    from ptycho.canonical_weights import init_canonical_weights
    from ptycho.network_spec import build_network_spec
    from ptycho.reference.physics import default_probe, normalize_probe
    from ptycho_tf import model_manager
    from ptycho_tf.model import build_models

    spec = build_network_spec(32, 1, n_filters_scale=1)
    probe = normalize_probe(default_probe(32), 4.0)
    w = init_canonical_weights(spec, seed=3, log_scale=math.log(20.0), probe=probe)
    with params.isolated():
        params.cfg.update(N=32, gridsize=1, n_filters_scale=1, intensity_scale=20.0)
        params.cfg["probe"] = probe[..., None]
        models = build_models(spec, weights=w, probe_mask=True, gaussian_smoothing_sigma=0.0)
        path = model_manager.save_models(models, out)
    return path.read_bytes(), models.canonical_weights()


def _load_torch(path: Path) -> dict[str, np.ndarray]:
    from ptycho_torch.canonical import export_canonical
    from ptycho_torch.model_manager import load_torch_bundle

    models, _ = load_torch_bundle(path)
    return export_canonical(models["autoencoder"])


def _load_tf(path: Path) -> dict[str, np.ndarray]:
    from ptycho_tf import model_manager

    models, _ = model_manager.load_models(path)
    return models.canonical_weights()


BACKENDS = {"pytorch": (_torch_bundle, _load_torch), "tensorflow": (_tf_bundle, _load_tf)}


@pytest.fixture(scope="module", params=list(BACKENDS))
def real_bundle(request, tmp_path_factory):
    make, load = BACKENDS[request.param]
    data, weights = make(tmp_path_factory.mktemp(f"fuzz-{request.param}"))
    return request.param, data, weights, load


# --------------------------------------------------------------------------- mutations
JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.sampled_from([0, 1, 2, 32, 64, 10**6, -1, "big", "", "2.0", "../x"]),
)
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                             st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                          max_leaves=8)
MEMBER_NAMES = st.sampled_from(["../evil", "/abs", "custom_objects.dill", "autoencoder/model.keras",
                                "autoencoder/model.pt", "params.json", "x.py", "autoencoder/lightning.ckpt",
                                "canonical_weights.h5", "manifest.json"])


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k != "data":  # base64 payloads: mutate via member bytes instead
                out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc: Any, path: tuple, value: Any, op: str) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[path[-1]]
    elif op == "wrap":
        parent[path[-1]] = [parent[path[-1]]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def mutations(draw, members: dict[str, bytes]) -> dict[str, Any]:
    kind = draw(st.sampled_from(["json", "json", "json", "bytes", "name", "size", "drop"]))
    names = sorted(members)
    m: dict[str, Any] = {"kind": kind, "redeclare": draw(st.booleans())}
    if kind == "json":
        m["member"] = draw(st.sampled_from(["manifest.json", "params.json"]))
        doc = json.loads(members[m["member"]])
        m["path"] = draw(st.sampled_from(_paths(doc)))
        m["op"] = draw(st.sampled_from(["set", "set", "delete", "wrap"]))
        m["value"] = draw(JSON_VALUE)
    elif kind == "bytes":
        m["member"] = draw(st.sampled_from(names))
        size = len(members[m["member"]])
        m["op"] = draw(st.sampled_from(["flip", "truncate", "insert"]))
        m["offset"] = draw(st.integers(0, max(size - 1, 0)))
        m["data"] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "name":
        m["member"] = draw(st.sampled_from(names))
        m["new"] = draw(MEMBER_NAMES)
    elif kind == "size":
        m["member"] = draw(st.sampled_from([n for n in names if not n.startswith("manifest.")]))
        m["size"] = draw(st.sampled_from([0, 1, 2**31, 2**40, -1]))
    else:
        m["member"] = draw(st.sampled_from(names))
    return m


def _apply(data: bytes, m: dict[str, Any]) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    name = m["member"]
    if m["kind"] == "json":
        doc = json.loads(members[name])
        doc = _set(doc, m["path"], copy.deepcopy(m["value"]), m["op"])
        members[name] = json.dumps(doc).encode()
        if name == "manifest.json":
            manifest = doc
    elif m["kind"] == "bytes":
        b = bytearray(members[name])
        if m["op"] == "flip" and b:
            for i, x in enumerate(m["data"]):
                if m["offset"] + i < len(b):
                    b[m["offset"] + i] ^= x or 0xFF
        elif m["op"] == "truncate":
            del b[m["offset"]:]
        else:
            b[m["offset"]:m["offset"]] = m["data"]
        members[name] = bytes(b)
    elif m["kind"] == "name":
        members[m["new"]] = members.pop(name)
    elif m["kind"] == "size" and isinstance(manifest.get("members"), dict) and name in manifest["members"]:
        manifest["members"][name]["size"] = m["size"]
    elif m["kind"] == "drop":
        members.pop(name)
    if m["redeclare"] and isinstance(manifest, dict) and isinstance(manifest.get("members"), dict):
        for n, meta in manifest["members"].items():  # re-declare checksums so the mutation reaches the parsers
            if n in members and isinstance(meta, dict) and m["kind"] != "size":
                meta.update(sha256=hashlib.sha256(members[n]).hexdigest(), size=len(members[n]))
    if m["kind"] != "json" or m["member"] != "manifest.json" or m["redeclare"]:
        if "manifest.json" in members:
            members["manifest.json"] = json.dumps(manifest).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return buf.getvalue()


# --------------------------------------------------------------------------- the property
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)))


def _members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _check_example(real_bundle, tmp_path_factory, m: dict[str, Any]) -> None:
    _backend, data, weights, load = real_bundle
    work = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    private_tmp = work / "tmp"
    private_tmp.mkdir()
    target = work / "bundle"
    target.mkdir()
    (target / "wts.h5.zip").write_bytes(_apply(data, m))
    before = params.snapshot()
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = str(private_tmp)
    try:
        loaded = load(target)
    except BundleError:
        assert _same(params.cfg, before), "params.cfg changed by a refused bundle"
    else:
        assert loaded.keys() == weights.keys()
        for k, v in weights.items():
            np.testing.assert_array_equal(loaded[k], v, err_msg=f"accepted bundle changed {k}")
    finally:
        tempfile.tempdir = saved_tempdir
        params.restore(before)
    assert list(private_tmp.iterdir()) == [], "a loader wrote into the temporary directory"
    assert sorted(p.name for p in target.iterdir()) == ["wts.h5.zip"], "a loader wrote next to the bundle"


def _run(real_bundle, tmp_path_factory, profile) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    members = _members_of(real_bundle[1])

    @profile
    @given(mutations(members))
    def prop(m):
        _check_example(real_bundle, tmp_path_factory, m)

    prop()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert growth < MAX_RSS_GROWTH_BYTES, f"peak memory grew by {growth / 2**20:.0f} MiB"


def test_mutated_bundles_are_refused_or_load_unchanged(real_bundle, tmp_path_factory):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _run(real_bundle, tmp_path_factory, FAST)


@pytest.mark.slow
def test_mutated_bundles_long(real_bundle, tmp_path_factory):
    _run(real_bundle, tmp_path_factory, LONG)

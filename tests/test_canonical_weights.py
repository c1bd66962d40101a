"""The canonical weight file: round trip, strict reads, atomic writes, deterministic init."""

from __future__ import annotations

import math
import os

import h5py
import numpy as np
import pytest

import ptycho.canonical_weights as cw
from ptycho.canonical_weights import (
    FORMAT_NAME,
    FORMAT_VERSION,
    canonical_weights_from_bytes,
    canonical_weights_to_bytes,
    init_canonical_weights,
    read_canonical_weights,
    spec_from_attrs,
    validate_canonical_weights,
    write_canonical_weights,
)
from ptycho.errors import CanonicalWeightsError
from ptycho.network_spec import build_network_spec


@pytest.fixture(scope="module")
def spec():
    # Small but complete: gridsize 2 (C = Co = 4), border branch on.
    return build_network_spec(32, 2, n_filters_scale=1)


def _probe(N: int) -> np.ndarray:
    yy, xx = np.mgrid[:N, :N]
    return (np.exp(-((xx - N / 2) ** 2 + (yy - N / 2) ** 2) / N) * np.exp(0.1j * xx)).astype(np.complex64)


@pytest.fixture(scope="module")
def weights(spec):
    return init_canonical_weights(spec, seed=7, log_scale=math.log(988.2117), probe=_probe(spec.N))


@pytest.fixture
def good_file(tmp_path, spec, weights):
    return write_canonical_weights(tmp_path / "w.h5", weights, spec, backend="reference")


def _mutate(path, fn):
    with h5py.File(path, "r+") as h5:
        fn(h5)


# ------------------------------------------------------------------ round trip
def test_round_trip_is_bit_exact(tmp_path, spec, weights):
    path = write_canonical_weights(
        tmp_path / "w.h5", weights, spec, backend="pytorch", metadata={"epoch": 3, "note": "x"}
    )
    for read_spec in (None, spec):
        got, attrs = read_canonical_weights(path, read_spec)
        assert list(got) == spec.param_names()
        for name, arr in weights.items():
            assert got[name].dtype == np.float32
            assert got[name].shape == arr.shape
            assert got[name].tobytes() == arr.tobytes(), name
    assert attrs["format"] == FORMAT_NAME and attrs["format_version"] == FORMAT_VERSION
    assert attrs["kernel_layout"] == "HWIO"
    assert attrs["backend"] == "pytorch"
    assert attrs["metadata"] == {"epoch": 3, "note": "x"}
    for key, value in spec.config().items():
        assert attrs[key] == value and type(attrs[key]) is type(value)
    assert spec_from_attrs(attrs) == spec


def test_file_layout_is_flat_root_datasets(good_file, spec):
    with h5py.File(good_file, "r") as h5:
        assert sorted(h5.keys()) == sorted(spec.param_names())
        assert h5["intensity_scale.log_scale"].shape == ()
        assert h5["encoder.block0.conv0.kernel"].shape == (3, 3, 4, 64)
        assert all(h5[n].dtype == np.float32 for n in h5)
        assert h5.attrs["format"] == FORMAT_NAME


def test_bytes_round_trip_matches_file(spec, weights):
    data = canonical_weights_to_bytes(weights, spec, backend="tensorflow")
    assert data[:8] == b"\x89HDF\r\n\x1a\n"
    got, attrs = canonical_weights_from_bytes(data, spec)
    assert all(got[n].tobytes() == weights[n].tobytes() for n in weights)
    assert attrs["backend"] == "tensorflow" and attrs["metadata"] == {}
    with pytest.raises(CanonicalWeightsError, match="bundle.zip:canonical_weights.h5"):
        canonical_weights_from_bytes(b"tampered", source="bundle.zip:canonical_weights.h5")


def test_write_casts_float64_to_float32(tmp_path, spec, weights):
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    w64["intensity_scale.log_scale"] = 6.9  # a Python float is fine too
    got, _ = read_canonical_weights(write_canonical_weights(tmp_path / "a.h5", w64, spec, backend="x"))
    assert got["encoder.block0.conv0.kernel"].tobytes() == weights["encoder.block0.conv0.kernel"].tobytes()
    assert got["intensity_scale.log_scale"] == np.float32(6.9)


def test_torch_layout_mapping(spec, weights):
    # torch Conv2d.weight (OIHW) = HWIO.transpose(3, 2, 0, 1); the inverse is transpose(2, 3, 1, 0).
    k = weights["decoder_amp.head.border.conv.kernel"]
    oihw = k.transpose(3, 2, 0, 1)
    assert oihw.shape == (k.shape[3], k.shape[2], k.shape[0], k.shape[1])
    assert np.array_equal(oihw.transpose(2, 3, 1, 0), k)
    for o in range(k.shape[3]):
        for i in range(k.shape[2]):
            assert np.array_equal(oihw[o, i], k[:, :, i, o])


# ------------------------------------------------------------------ strict reads
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_canonical_weights(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "junk.h5"
    p.write_bytes(b"this is not an HDF5 file" * 10)
    with pytest.raises(CanonicalWeightsError, match="not a readable HDF5 file") as info:
        read_canonical_weights(p)
    assert str(p) in str(info.value)


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        ("format", "something-else", "format attribute is 'something-else'"),
        ("format_version", 2, "format_version is 2"),
        ("format_version", 0, "format_version is 0"),
        ("format_version", "1", "expected the integer 1"),
        ("kernel_layout", "OIHW", "kernel_layout attribute is 'OIHW'"),
        ("N", 48, "attribute N=48 is invalid"),
        ("amp_activation", "gelu", "attribute amp_activation='gelu' is invalid"),
        ("metadata", "[1, 2]", "metadata attribute is not a JSON object"),
    ],
)
def test_bad_attributes(good_file, attr, value, message):
    _mutate(good_file, lambda h5: h5.attrs.__setitem__(attr, value))
    with pytest.raises(CanonicalWeightsError, match=message) as info:
        read_canonical_weights(good_file)
    assert info.value.field == attr


def test_newer_version_says_upgrade(good_file):
    _mutate(good_file, lambda h5: h5.attrs.__setitem__("format_version", FORMAT_VERSION + 1))
    with pytest.raises(CanonicalWeightsError, match="upgrade"):
        read_canonical_weights(good_file)


@pytest.mark.parametrize("attr", ["format", "format_version", "kernel_layout", "gridsize"])
def test_missing_attribute(good_file, attr):
    _mutate(good_file, lambda h5: h5.attrs.__delitem__(attr))
    with pytest.raises(CanonicalWeightsError) as info:
        read_canonical_weights(good_file)
    assert info.value.field == attr


def test_config_differs_from_callers_spec(good_file):
    other = build_network_spec(32, 1, n_filters_scale=1)
    with pytest.raises(CanonicalWeightsError, match="gridsize=2 but the network expects gridsize=1") as info:
        read_canonical_weights(good_file, other)
    assert info.value.field == "gridsize"


def test_missing_parameter(good_file):
    _mutate(good_file, lambda h5: h5.__delitem__("decoder_phase.head.border.conv.bias"))
    with pytest.raises(CanonicalWeightsError, match="missing") as info:
        read_canonical_weights(good_file)
    assert info.value.field == "decoder_phase.head.border.conv.bias"


def test_extra_parameter(good_file):
    _mutate(good_file, lambda h5: h5.create_dataset("decoder_amp.head.extra.kernel", data=np.zeros(3, "f4")))
    with pytest.raises(CanonicalWeightsError, match="unexpected") as info:
        read_canonical_weights(good_file)
    assert info.value.field == "decoder_amp.head.extra.kernel"


def test_group_instead_of_dataset(good_file):
    _mutate(good_file, lambda h5: h5.create_group("encoder"))
    with pytest.raises(CanonicalWeightsError, match="is a group") as info:
        read_canonical_weights(good_file)
    assert info.value.field == "encoder"


def test_shape_mismatch_names_parameter_and_shapes(good_file):
    name = "encoder.block1.conv0.kernel"

    def swap(h5):
        k = h5[name][()]
        del h5[name]
        h5.create_dataset(name, data=k.transpose(3, 2, 0, 1))  # a torch OIHW kernel

    _mutate(good_file, swap)
    with pytest.raises(CanonicalWeightsError) as info:
        read_canonical_weights(good_file)
    msg = str(info.value)
    assert name in msg and "expected (3, 3, 64, 128)" in msg and "found (128, 64, 3, 3)" in msg
    assert info.value.field == name


def test_dtype_mismatch(good_file):
    name = "probe.real"

    def widen(h5):
        v = h5[name][()]
        del h5[name]
        h5.create_dataset(name, data=v.astype(np.float64))

    _mutate(good_file, widen)
    with pytest.raises(CanonicalWeightsError, match="dtype mismatch: expected float32, found float64"):
        read_canonical_weights(good_file)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(good_file, bad):
    name = "decoder_amp.block0.conv1.kernel"

    def poison(h5):
        h5[name][0, 0, 0, 0] = bad

    _mutate(good_file, poison)
    with pytest.raises(CanonicalWeightsError, match="non-finite") as info:
        read_canonical_weights(good_file)
    assert info.value.field == name


# ------------------------------------------------------------------ write validation
def test_write_rejects_bad_weights(tmp_path, spec, weights):
    target = tmp_path / "w.h5"
    cases = []
    w = dict(weights)
    del w["probe.imag"]
    cases.append((w, "missing"))
    w = dict(weights, **{"decoder.extra": np.zeros(1, np.float32)})
    cases.append((w, "unexpected"))
    w = dict(weights)
    w["encoder.block0.conv0.kernel"] = w["encoder.block0.conv0.kernel"].transpose(3, 2, 0, 1)
    cases.append((w, "transpose"))
    w = dict(weights)
    w["probe.real"] = w["probe.real"].astype(np.complex64)
    cases.append((w, "not real floating point"))
    w = dict(weights)
    w["encoder.block0.conv0.bias"] = np.zeros(64, dtype=np.int32)
    cases.append((w, "not real floating point"))
    w = dict(weights)
    w["intensity_scale.log_scale"] = np.float32(np.nan)
    cases.append((w, "non-finite"))
    for bad, message in cases:
        with pytest.raises(CanonicalWeightsError, match=message):
            write_canonical_weights(target, bad, spec, backend="reference")
    with pytest.raises(CanonicalWeightsError, match="JSON"):
        write_canonical_weights(target, weights, spec, backend="reference", metadata={"a": object()})
    with pytest.raises(ValueError, match="backend"):
        write_canonical_weights(target, weights, spec, backend="")
    with pytest.raises(FileNotFoundError):
        write_canonical_weights(tmp_path / "no" / "dir" / "w.h5", weights, spec, backend="reference")
    assert os.listdir(tmp_path) == []


def test_validate_returns_copies_in_spec_order(spec, weights):
    out = validate_canonical_weights(dict(reversed(list(weights.items()))), spec)
    assert list(out) == spec.param_names()
    assert out["intensity_scale.log_scale"].shape == ()
    assert all(out[n] is not weights[n] for n in out)


# ------------------------------------------------------------------ atomic write
def test_failed_write_leaves_previous_file_intact(tmp_path, spec, weights, monkeypatch):
    path = write_canonical_weights(tmp_path / "w.h5", weights, spec, backend="reference")
    before = path.read_bytes()
    other = {k: v + np.float32(1) for k, v in weights.items()}
    calls = {"n": 0}
    real = cw._write_dataset

    def flaky(h5, name, arr):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full (injected)")
        real(h5, name, arr)

    monkeypatch.setattr(cw, "_write_dataset", flaky)
    with pytest.raises(OSError, match="injected"):
        write_canonical_weights(path, other, spec, backend="reference")
    assert calls["n"] == 5
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.h5"]  # no temporary file left behind
    got, _ = read_canonical_weights(path, spec)
    assert all(got[n].tobytes() == weights[n].tobytes() for n in weights)


def test_failed_rename_leaves_previous_file_intact(tmp_path, spec, weights, monkeypatch):
    path = write_canonical_weights(tmp_path / "w.h5", weights, spec, backend="reference")
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("rename failed (injected)")

    import ptycho.atomic

    monkeypatch.setattr(ptycho.atomic.os, "replace", boom)
    with pytest.raises(OSError, match="injected"):
        write_canonical_weights(path, weights, spec, backend="tensorflow")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.h5"]


def test_overwrite_replaces_file(tmp_path, spec, weights):
    path = write_canonical_weights(tmp_path / "w.h5", weights, spec, backend="reference")
    other = {k: v * np.float32(2) for k, v in weights.items()}
    write_canonical_weights(path, other, spec, backend="pytorch")
    got, attrs = read_canonical_weights(path)
    assert attrs["backend"] == "pytorch"
    assert got["encoder.block0.conv0.kernel"].tobytes() == other["encoder.block0.conv0.kernel"].tobytes()


# ------------------------------------------------------------------ init
def test_init_is_deterministic(spec):
    a = init_canonical_weights(spec, seed=3, log_scale=1.5, probe=_probe(32))
    b = init_canonical_weights(spec, seed=3, log_scale=1.5, probe=_probe(32))
    c = init_canonical_weights(spec, seed=4, log_scale=1.5, probe=_probe(32))
    assert list(a) == spec.param_names()
    assert all(a[n].tobytes() == b[n].tobytes() for n in a)
    assert not np.array_equal(a["encoder.block1.conv1.kernel"], c["encoder.block1.conv1.kernel"])


def test_init_does_not_touch_global_rng(spec):
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    init_canonical_weights(spec, seed=0, log_scale=0.0, probe=_probe(32))
    assert np.random.random() == expected


def test_init_glorot_bounds_and_zero_biases(spec):
    w = init_canonical_weights(spec, seed=11, log_scale=2.0, probe=_probe(32))
    for p in spec.conv_params():
        arr = w[p.name]
        assert arr.dtype == np.float32
        if p.role == "bias":
            assert not arr.any()
            continue
        kh, kw, cin, cout = p.shape
        limit = math.sqrt(6.0 / (kh * kw * cin + kh * kw * cout))  # Keras GlorotUniform
        assert np.abs(arr).max() <= np.float32(limit)
        if arr.size >= 10_000:
            # U(-l, l): max |x| close to l, variance l^2 / 3, mean 0.
            assert np.abs(arr).max() > 0.99 * limit
            assert abs(arr.var() / (limit**2 / 3) - 1) < 0.05
            assert abs(arr.mean()) < 0.02 * limit
    assert w["intensity_scale.log_scale"] == np.float32(2.0) and w["intensity_scale.log_scale"].shape == ()
    probe = _probe(32)
    assert np.array_equal(w["probe.real"], probe.real) and np.array_equal(w["probe.imag"], probe.imag)


def test_init_probe_shapes(spec):
    w = init_canonical_weights(spec, seed=0, log_scale=0.0, probe=_probe(32)[..., None])  # cfg['probe'] layout
    assert w["probe.real"].shape == (32, 32)
    real = init_canonical_weights(spec, seed=0, log_scale=0.0, probe=np.ones((32, 32)))
    assert not real["probe.imag"].any()
    with pytest.raises(CanonicalWeightsError, match="probe shape"):
        init_canonical_weights(spec, seed=0, log_scale=0.0, probe=np.ones((64, 64), np.complex64))

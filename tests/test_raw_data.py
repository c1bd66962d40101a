"""Tests of ptycho.raw_data: the NPZ contract, RawData and generate_grouped_data (specs/data.md)."""

from __future__ import annotations

import json
import os
import pickle
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho import conventions
from ptycho.errors import DataContractError
from ptycho.raw_data import GROUPED_KEYS, RawData, get_relative_coords, looks_like_intensity
from ptycho.reference import physics

N = 16


def make_raw(
    M: int = 30, *, seed: int = 0, with_object: bool = True, start_shift: tuple[float, float] = (0.0, 0.0)
) -> RawData:
    """A small valid dataset: random positions well inside a 64 x 64 object, non-integer amplitudes."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(16.0, 48.0, M)
    y = rng.uniform(16.0, 48.0, M)
    diff = rng.uniform(0.1, 3.0, size=(M, N, N)).astype(np.float32)
    probe = (rng.normal(size=(N, N)) + 1j * rng.normal(size=(N, N))).astype(np.complex64)
    obj = None
    if with_object:
        obj = (rng.uniform(0.5, 1.0, (64, 64)) * np.exp(1j * rng.uniform(-1, 1, (64, 64)))).astype(np.complex64)
    return RawData(
        x,
        y,
        x + start_shift[0],
        y + start_shift[1],
        diff,
        probe,
        np.arange(M) % 3,
        obj,
        metadata={"generator": "test", "photons": 1e6},
    )


# --------------------------------------------------------------------------- construction


def test_contract_dtypes_are_enforced():
    raw = make_raw()
    assert raw.xcoords.dtype == np.float64 and raw.ycoords_start.dtype == np.float64
    assert raw.diff3d.dtype == np.float32 and raw.diff3d.shape == (30, N, N)
    assert raw.probeGuess.dtype == np.complex64
    assert raw.objectGuess.dtype == np.complex64
    assert raw.scan_index.dtype == np.int64
    assert raw.n_points == len(raw) == 30 and raw.N == N
    assert raw.sample_indices is None and raw.subsample_seed is None
    assert "M=30" in repr(raw)


def test_from_coords_without_pc_sets_start_to_true_positions():
    base = make_raw()
    raw = RawData.from_coords_without_pc(base.xcoords, base.ycoords, base.diff3d, base.probeGuess, None)
    np.testing.assert_array_equal(raw.xcoords_start, base.xcoords)
    np.testing.assert_array_equal(raw.ycoords_start, base.ycoords)
    np.testing.assert_array_equal(raw.scan_index, np.zeros(30, np.int64))
    assert raw.objectGuess is None


def test_intensity_heuristic_rule():
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, size=(4, 8, 8)).astype(np.float32)
    assert looks_like_intensity(counts)
    assert looks_like_intensity(counts.astype(np.int32))
    assert not looks_like_intensity(np.sqrt(counts))
    # {0, 1}: amplitude and intensity coincide, so accepted
    assert not looks_like_intensity(np.minimum(counts, 1))
    assert not looks_like_intensity(rng.uniform(0, 5, (4, 8, 8)))


def test_intensity_escape_hatches():
    base = make_raw()
    counts = np.round(base.diff3d**2 * 10).astype(np.float32)
    args = (base.xcoords, base.ycoords, counts, base.probeGuess, None)
    raw = RawData.from_coords_without_pc(*args, diffraction_is="intensity")
    np.testing.assert_allclose(raw.diff3d, np.sqrt(counts), rtol=1e-6)
    kept = RawData.from_coords_without_pc(*args, diffraction_is="amplitude")
    np.testing.assert_array_equal(kept.diff3d, counts)


def test_integer_amplitudes_in_0_1_are_accepted():
    base = make_raw()
    binary = (base.diff3d > 1.5).astype(np.uint8)
    raw = RawData.from_coords_without_pc(base.xcoords, base.ycoords, binary, base.probeGuess, None)
    assert raw.diff3d.dtype == np.float32


# --------------------------------------------------------------------------- NPZ round trip


def _assert_same(a: RawData, b: RawData) -> None:
    for name in ("xcoords", "ycoords", "xcoords_start", "ycoords_start", "diff3d", "probeGuess", "scan_index"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    if a.objectGuess is None:
        assert b.objectGuess is None
    else:
        np.testing.assert_array_equal(a.objectGuess, b.objectGuess)
    assert a.metadata == b.metadata


def test_npz_round_trip(tmp_path):
    raw = make_raw()
    raw.norm_Y_I = 2.5
    out = raw.to_file(tmp_path / "data.npz")
    assert out == tmp_path / "data.npz"
    back = RawData.from_file(out)
    _assert_same(raw, back)
    assert back.norm_Y_I == 2.5
    assert back.source == str(out)
    # plain arrays only: the file loads without pickle and _metadata is a JSON string
    with np.load(out, allow_pickle=False) as z:
        assert json.loads(str(z["_metadata"])) == raw.metadata
        assert all(z[k].dtype != object for k in z.files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]  # no temp file left


def test_round_trip_without_optional_fields(tmp_path):
    base = make_raw(with_object=False)
    raw = RawData.from_coords_without_pc(base.xcoords, base.ycoords, base.diff3d, base.probeGuess, None)
    back = RawData.from_file(raw.to_file(tmp_path / "plain.npz"))
    _assert_same(raw, back)
    assert back.metadata is None and back.Y is None and back.norm_Y_I is None


def test_to_file_appends_npz_suffix_like_numpy(tmp_path):
    out = make_raw().to_file(tmp_path / "dataset")
    assert out.name == "dataset.npz" and out.exists()


def test_to_file_keeps_permissions_of_replaced_file(tmp_path):
    target = tmp_path / "d.npz"
    make_raw().to_file(target)
    os.chmod(target, 0o640)
    make_raw(seed=1).to_file(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "d.npz"
    old = make_raw(seed=0)
    old.to_file(target)
    before = target.read_bytes()

    def broken_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        make_raw(seed=1).to_file(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]
    _assert_same(old, RawData.from_file(target))


def test_unserialisable_metadata_fails_before_touching_the_file(tmp_path):
    target = tmp_path / "d.npz"
    make_raw().to_file(target)
    before = target.read_bytes()
    raw = make_raw(seed=1)
    raw.metadata = {"bad": object()}
    with pytest.raises(DataContractError, match="metadata"):
        raw.to_file(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_from_file_defaults_and_alias(tmp_path):
    base = make_raw()
    path = tmp_path / "minimal.npz"
    np.savez(path, xcoords=base.xcoords, ycoords=base.ycoords, diffraction=base.diff3d, probeGuess=base.probeGuess)
    raw = RawData.from_file(path)
    np.testing.assert_array_equal(raw.diff3d, base.diff3d)
    np.testing.assert_array_equal(raw.xcoords_start, base.xcoords)
    np.testing.assert_array_equal(raw.scan_index, np.zeros(30, np.int64))
    assert raw.objectGuess is None and raw.metadata is None


def test_from_file_reads_per_position_Y(tmp_path):
    base = make_raw()
    Y = (np.arange(30 * N * N).reshape(30, N, N, 1) * (1 + 1j)).astype(np.complex128)
    path = tmp_path / "withY.npz"
    np.savez(path, xcoords=base.xcoords, ycoords=base.ycoords, diff3d=base.diff3d, probeGuess=base.probeGuess, Y=Y)
    raw = RawData.from_file(path)
    assert raw.Y.shape == (30, N, N) and raw.Y.dtype == np.complex64
    g = raw.generate_grouped_data(N, K=4, nsamples=10, seed=0, gridsize=2)
    for b in range(10):
        for c in range(4):
            np.testing.assert_array_equal(g["Y"][b, :, :, c], Y[g["nn_indices"][b, c], :, :, 0])


class _Trap:
    """Unpickling this object would flip a flag: proves from_file never unpickles."""

    triggered = False

    def __reduce__(self):
        return (_trap_fire, ())


def _trap_fire():
    _Trap.triggered = True
    return "fired"


def test_upstream_object_array_for_optional_key_is_ignored_with_warning(tmp_path):
    base = make_raw()
    path = tmp_path / "upstream.npz"
    # upstream to_file writes objectGuess=None as a pickled object array
    np.savez(
        path,
        xcoords=base.xcoords,
        ycoords=base.ycoords,
        diff3d=base.diff3d,
        probeGuess=base.probeGuess,
        objectGuess=np.array([_Trap()], dtype=object),
        _metadata=np.array([{"a": 1}], dtype=object),
    )
    with pytest.warns(UserWarning) as record:
        raw = RawData.from_file(path)
    messages = [str(w.message) for w in record]
    assert any("'objectGuess'" in m and "pickled" in m for m in messages)
    assert any("'_metadata'" in m and "pickled" in m for m in messages)
    assert raw.objectGuess is None and raw.metadata is None
    assert not _Trap.triggered
    # the payload is live: unpickling it does fire the trap
    assert pickle.loads(pickle.dumps(_Trap())) == "fired" and _Trap.triggered
    _Trap.triggered = False


def test_metadata_that_is_not_a_json_object_is_ignored_with_warning(tmp_path):
    base = make_raw()
    path = tmp_path / "m.npz"
    np.savez(path, xcoords=base.xcoords, ycoords=base.ycoords, diff3d=base.diff3d, probeGuess=base.probeGuess,
             _metadata=np.array("{not json"))
    with pytest.warns(UserWarning, match="not valid JSON"):
        assert RawData.from_file(path).metadata is None
    np.savez(path, xcoords=base.xcoords, ycoords=base.ycoords, diff3d=base.diff3d, probeGuess=base.probeGuess,
             _metadata=np.array(json.dumps([1, 2])))
    with pytest.warns(UserWarning, match="not an object"):
        assert RawData.from_file(path).metadata is None
    np.savez(path, xcoords=base.xcoords, ycoords=base.ycoords, diff3d=base.diff3d, probeGuess=base.probeGuess,
             _metadata=np.array(json.dumps({"k": "v"}).encode()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RawData.from_file(path).metadata == {"k": "v"}


def test_from_file_intensity_override(tmp_path):
    base = make_raw()
    counts = np.round(base.diff3d**2 * 7)
    path = tmp_path / "counts.npz"
    np.savez(path, xcoords=base.xcoords, ycoords=base.ycoords, diff3d=counts, probeGuess=base.probeGuess)
    raw = RawData.from_file(path, diffraction_is="intensity")
    np.testing.assert_allclose(raw.diff3d, np.sqrt(counts), rtol=1e-6)


# --------------------------------------------------------------------------- grouped data


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_grouped_keys_shapes_dtypes(gridsize):
    raw = make_raw(start_shift=(0.25, -0.5))
    C = gridsize**2
    g = raw.generate_grouped_data(N, K=9, nsamples=12, seed=0, gridsize=gridsize)
    B = 12
    assert set(g) == set(GROUPED_KEYS)
    expected = {
        "diffraction": ((B, N, N, C), np.float32),
        "X_full": ((B, N, N, C), np.float32),
        "Y": ((B, N, N, C), np.complex64),
        "coords_nn": ((B, 1, 2, C), np.float64),
        "coords_offsets": ((B, 1, 2, 1), np.float64),
        "coords_relative": ((B, 1, 2, C), np.float64),
        "coords_start_nn": ((B, 1, 2, C), np.float64),
        "coords_start_offsets": ((B, 1, 2, 1), np.float64),
        "coords_start_relative": ((B, 1, 2, C), np.float64),
        "nn_indices": ((B, C), np.int64),
        "objectGuess": ((64, 64), np.complex64),
    }
    for key, (shape, dtype) in expected.items():
        assert g[key].shape == shape, key
        assert g[key].dtype == dtype, key
        assert g[key].flags.c_contiguous, key
    assert isinstance(g["X_full_norm"], float)


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_grouped_values_follow_the_indices(gridsize):
    raw = make_raw(start_shift=(3.0, -2.0))
    g = raw.generate_grouped_data(N, K=9, nsamples=10, seed=1, gridsize=gridsize)
    nn = g["nn_indices"]
    np.testing.assert_array_equal(g["diffraction"], np.moveaxis(raw.diff3d[nn], 1, -1))
    X, Y = conventions.X_INDEX, conventions.Y_INDEX
    np.testing.assert_array_equal(g["coords_nn"][:, 0, X, :], raw.xcoords[nn])
    np.testing.assert_array_equal(g["coords_nn"][:, 0, Y, :], raw.ycoords[nn])
    np.testing.assert_array_equal(g["coords_start_nn"][:, 0, X, :], raw.xcoords_start[nn])
    np.testing.assert_array_equal(g["coords_start_nn"][:, 0, Y, :], raw.ycoords_start[nn])
    # a constant start shift moves the centroid, not the relative offsets
    np.testing.assert_allclose(g["coords_start_offsets"][:, 0, X, 0], g["coords_offsets"][:, 0, X, 0] + 3.0)
    np.testing.assert_allclose(g["coords_start_offsets"][:, 0, Y, 0], g["coords_offsets"][:, 0, Y, 0] - 2.0)
    np.testing.assert_allclose(g["coords_start_relative"], g["coords_relative"], atol=1e-12)


@given(
    gridsize=st.integers(min_value=1, max_value=3),
    M=st.integers(min_value=9, max_value=40),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_relative_coords_sum_to_zero_and_point_to_the_centroid(gridsize, M, seed):
    raw = make_raw(M, seed=seed % 50, with_object=False)
    g = raw.generate_grouped_data(N, K=8, nsamples=M, seed=seed, gridsize=gridsize)
    rel, nn_pos, centroid = g["coords_relative"], g["coords_nn"], g["coords_offsets"]
    np.testing.assert_allclose(rel.sum(axis=3), 0.0, atol=1e-9)
    np.testing.assert_allclose(centroid, nn_pos.mean(axis=3, keepdims=True))
    np.testing.assert_allclose(rel, conventions.LOCAL_OFFSET_SIGN * (nn_pos - centroid))
    # LOCAL_OFFSET_SIGN = -1: position + relative offset lands on the centroid
    np.testing.assert_allclose(nn_pos + rel, np.broadcast_to(centroid, nn_pos.shape), atol=1e-9)


def test_get_relative_coords_explicit_example():
    coords = np.array([[[[0.0, 4.0], [10.0, 10.0]]]])  # one group, x = (0, 4), y = (10, 10)
    offsets, rel = get_relative_coords(coords)
    np.testing.assert_array_equal(offsets[0, 0, :, 0], [2.0, 10.0])
    np.testing.assert_array_equal(rel[0, 0], [[2.0, -2.0], [0.0, 0.0]])


@pytest.mark.parametrize("gridsize", [1, 2])
def test_x_full_energy_is_n_over_2_squared(gridsize):
    g = make_raw().generate_grouped_data(N, K=6, nsamples=20, seed=0, gridsize=gridsize)
    energy = np.mean(np.sum(g["X_full"].astype(np.float64) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(energy, conventions.x_full_target_energy(N), rtol=1e-5)
    np.testing.assert_allclose(g["X_full"], g["X_full_norm"] * g["diffraction"], rtol=1e-6)


def test_y_patches_come_from_the_true_positions_not_their_reflection():
    """A 2x2 square group: upstream reflected each channel to the opposite corner."""
    M = 4
    xs = np.array([20.0, 28.0, 20.0, 28.0])
    ys = np.array([20.0, 20.0, 28.0, 28.0])
    obj = np.zeros((64, 64), np.complex64)
    obj[ys.astype(int), xs.astype(int)] = np.arange(1, M + 1)  # a distinct delta on each position
    diff = np.random.default_rng(0).uniform(0.1, 1.0, (M, N, N)).astype(np.float32)
    raw = RawData.from_coords_without_pc(xs, ys, diff, np.ones((N, N), np.complex64), None, obj)
    g = raw.generate_grouped_data(N, K=3, nsamples=M, seed=0, gridsize=2)
    Y, nn = g["Y"], g["nn_indices"]
    centre = Y[:, N // 2, N // 2, :]
    np.testing.assert_array_equal(centre, (nn + 1).astype(np.complex64))
    # the reflected position 2*centroid - pos is the diagonally opposite scan point
    opposite = {0: 3, 1: 2, 2: 1, 3: 0}
    for b in range(M):
        for c in range(4):
            assert centre[b, c] != opposite[int(nn[b, c])] + 1


@pytest.mark.parametrize("chunk", [None, 3 * N * N])
def test_y_equals_object_patches_at_fractional_positions(chunk, monkeypatch):
    if chunk is not None:  # several object_patches calls must give the same Y as one
        monkeypatch.setattr("ptycho.raw_data._PATCH_CHUNK_ELEMENTS", chunk)
    raw = make_raw(start_shift=(1.5, 1.5))
    g = raw.generate_grouped_data(N, K=6, nsamples=8, seed=2, gridsize=2)
    flat_xy = conventions.positions_to_flat(g["coords_nn"])
    expected = conventions.flat_to_channels(physics.object_patches(raw.objectGuess, flat_xy, N), 4)
    np.testing.assert_array_equal(g["Y"], expected)


def test_y_is_none_without_object_or_patches():
    g = make_raw(with_object=False).generate_grouped_data(N, K=4, nsamples=5, seed=0, gridsize=2)
    assert g["Y"] is None and g["objectGuess"] is None


def test_sample_indices_passed_through_when_set():
    raw = make_raw()
    assert "sample_indices" not in raw.generate_grouped_data(N, nsamples=3, seed=0, gridsize=1)
    raw.sample_indices = np.arange(30)
    g = raw.generate_grouped_data(N, nsamples=3, seed=0, gridsize=1)
    np.testing.assert_array_equal(g["sample_indices"], np.arange(30))


def test_grouped_data_deterministic_and_global_rng_untouched():
    raw = make_raw()
    np.random.seed(7)
    state = np.random.get_state()
    a = raw.generate_grouped_data(N, K=7, nsamples=15, seed=5, gridsize=2)
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2:] == after[2:]
    b = raw.generate_grouped_data(N, K=7, nsamples=15, seed=5, gridsize=2)
    c = raw.generate_grouped_data(N, K=7, nsamples=15, seed=6, gridsize=2)
    for key in ("nn_indices", "X_full", "Y", "coords_relative"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["nn_indices"], c["nn_indices"])


def test_sequential_and_oversampling_paths_through_raw_data():
    raw = make_raw(20)
    seq = raw.generate_grouped_data(N, K=6, nsamples=8, seed=0, gridsize=2, sequential_sampling=True)
    np.testing.assert_array_equal(seq["nn_indices"][:, 0], np.arange(8))
    over = raw.generate_grouped_data(N, K=6, nsamples=60, seed=0, gridsize=2, enable_oversampling=True)
    assert over["X_full"].shape == (60, N, N, 4)


def test_grouped_data_from_indices_matches_generate(tmp_path):
    raw = make_raw()
    g = raw.generate_grouped_data(N, K=6, nsamples=9, seed=3, gridsize=2)
    h = raw.grouped_data_from_indices(g["nn_indices"], N)
    for key in GROUPED_KEYS:
        if isinstance(g[key], np.ndarray):
            np.testing.assert_array_equal(g[key], h[key])
    assert g["X_full_norm"] == h["X_full_norm"]


def test_gridsize_none_reads_params_cfg():
    from ptycho import params

    raw = make_raw()
    params.cfg["gridsize"] = 2
    g = raw.generate_grouped_data(N, K=6, nsamples=5, seed=0)
    assert g["nn_indices"].shape == (5, 4)
    params.cfg["gridsize"] = 1
    g = raw.generate_grouped_data(N, K=6, nsamples=5, seed=0)
    assert g["nn_indices"].shape == (5, 1)


def test_source_path_is_used_in_errors(tmp_path):
    path = make_raw().to_file(tmp_path / "named.npz")
    raw = RawData.from_file(path)
    with pytest.raises(DataContractError) as info:
        raw.generate_grouped_data(N, K=1, nsamples=5, seed=0, gridsize=2)
    assert str(Path(path)) in str(info.value)

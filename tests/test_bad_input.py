"""One test per row of specs/bad-input.md: malformed data -> DataContractError naming file, field and fix.

Every test asserts the exception type (``DataContractError``, a ``ValueError``) and
that the message names the offending field and carries a ``Fix:`` with the
concrete remedy; tests that load from a file also assert the file is named.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ptycho.errors import DataContractError
from ptycho.grouping import group_neighbors
from ptycho.raw_data import RawData

N = 8
M = 12


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Valid contract arrays (non-integer amplitudes) that each test then breaks."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(10, 30, M)
    y = rng.uniform(10, 30, M)
    return {
        "xcoords": x,
        "ycoords": y,
        "xcoords_start": x.copy(),
        "ycoords_start": y.copy(),
        "diff3d": rng.uniform(0.1, 2.0, (M, N, N)).astype(np.float32),
        "probeGuess": np.ones((N, N), np.complex64),
        "scan_index": np.zeros(M, np.int64),
    }


def build(**overrides) -> RawData:
    a = arrays()
    a.update(overrides)
    return RawData(**a)


def write_npz(path: Path, **overrides) -> Path:
    a = arrays()
    for k, v in overrides.items():
        if v is None:
            a.pop(k, None)
        else:
            a[k] = v
    np.savez(path, **a)
    return path


def check(exc: pytest.ExceptionInfo, field: str, fix: str, file: Path | None = None) -> None:
    """The message names the field, the fix (after 'Fix:') and, when given, the file."""
    msg = str(exc.value)
    assert isinstance(exc.value, DataContractError) and isinstance(exc.value, ValueError)
    assert f"field '{field}'" in msg, msg
    assert exc.value.field == field
    assert "Fix:" in msg, msg
    assert fix in msg.split("Fix:", 1)[1], msg
    if file is not None:
        assert str(file) in msg, msg
        assert exc.value.file == str(file)


# --------------------------------------------------------------------------- NPZ file level


@pytest.mark.parametrize("key", ["xcoords", "ycoords", "diff3d", "probeGuess"])
def test_missing_npz_key(tmp_path, key):
    path = write_npz(tmp_path / "d.npz", **{key: None})
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, key, f"add '{key}' to the NPZ file", path)
    assert "required key is missing" in str(exc.value)


def test_not_an_npz_archive(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    assert str(path) in str(exc.value) and "Fix: write the dataset with RawData.to_file" in str(exc.value)


def test_single_npy_array_is_not_an_npz(tmp_path):
    path = tmp_path / "one.npy"
    np.save(path, np.zeros((M, N, N), np.float32))
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    assert str(path) in str(exc.value) and "not an NPZ archive" in str(exc.value)
    assert "Fix: write the dataset with RawData.to_file" in str(exc.value)


def test_pickled_object_array_for_required_key(tmp_path):
    path = write_npz(tmp_path / "d.npz", probeGuess=np.array([np.ones((N, N))], dtype=object))
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "probeGuess", "re-save 'probeGuess' as a plain numeric array", path)


def _npz_with_header(path: Path, key: str, shape: tuple, descr: str = "<f4", data_bytes: int = 64) -> Path:
    """An NPZ of valid arrays whose ``key`` member has a hand-written .npy header declaring ``shape``."""
    import io
    import zipfile

    from numpy.lib import format as npy_format

    write_npz(path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    npy_format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    members[f"{key}.npy"] = buf.getvalue() + b"\0" * data_bytes
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_npz_header_declaring_a_huge_array(tmp_path):
    path = _npz_with_header(tmp_path / "huge.npz", "diff3d", (10**12, 256, 256))
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "diff3d", "re-save the array with np.savez", path)
    assert "more than this machine's memory" in str(exc.value)


def test_npz_header_shape_not_matching_the_stored_bytes(tmp_path):
    path = _npz_with_header(tmp_path / "edited.npz", "diff3d", (10**5, N, N))
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "diff3d", "re-save the array with np.savez", path)
    assert "corrupt or edited header" in str(exc.value)


def test_npz_header_with_a_non_numeric_dtype(tmp_path):
    path = _npz_with_header(tmp_path / "void.npz", "xcoords", (M,), descr="|V8", data_bytes=8 * M)
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "xcoords", "re-save the array with np.savez", path)
    assert "not a plain numeric array" in str(exc.value)


# --------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize("field", ["ycoords", "xcoords_start", "ycoords_start"])
def test_coordinate_length_mismatch(field):
    with pytest.raises(DataContractError) as exc:
        build(**{field: arrays()[field][:-2]})
    check(exc, field, "one entry per scan position")
    assert f"has {M - 2} entries but xcoords has {M}" in str(exc.value)


def test_coordinate_length_mismatch_from_file_names_the_file(tmp_path):
    path = write_npz(tmp_path / "d.npz", ycoords=arrays()["ycoords"][:5])
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "ycoords", "one entry per scan position", path)


def test_coordinates_not_1d():
    with pytest.raises(DataContractError) as exc:
        build(xcoords=arrays()["xcoords"][:, None])
    check(exc, "xcoords", "np.ravel(xcoords)")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coordinates(bad):
    x = arrays()["xcoords"]
    x[3] = bad
    with pytest.raises(DataContractError) as exc:
        build(xcoords=x)
    check(exc, "xcoords", "drop or repair the non-finite scan positions")


def test_empty_dataset():
    empty = np.zeros(0)
    with pytest.raises(DataContractError) as exc:
        build(xcoords=empty, ycoords=empty, xcoords_start=empty, ycoords_start=empty,
              diff3d=np.zeros((0, N, N), np.float32), scan_index=None)
    check(exc, "xcoords", "provide at least one scan position")


# --------------------------------------------------------------------------- diff3d


def test_diff3d_pattern_count_mismatch():
    with pytest.raises(DataContractError) as exc:
        build(diff3d=arrays()["diff3d"][:-1])
    check(exc, "diff3d", "one entry per scan position")


@pytest.mark.parametrize("shape", [(M, N * N), (M, N, N, 2)])
def test_diff3d_not_3d(shape):
    with pytest.raises(DataContractError) as exc:
        build(diff3d=np.ones(shape, np.float32) * 0.5)
    check(exc, "diff3d", "store patterns as [M, N, N]")
    assert "expected [M, N, N]" in str(exc.value)


def test_diff3d_not_square():
    with pytest.raises(DataContractError) as exc:
        build(diff3d=np.full((M, N, N + 2), 0.5, np.float32))
    check(exc, "diff3d", "crop or pad to square")


def test_diff3d_transposed_legacy_layout_gets_moveaxis_advice(tmp_path):
    path = write_npz(tmp_path / "d.npz", diff3d=np.moveaxis(arrays()["diff3d"], 0, -1))  # (N, N, M)
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "diff3d", "np.moveaxis(d, -1, 0)", path)


def test_diff3d_complex():
    with pytest.raises(DataContractError) as exc:
        build(diff3d=arrays()["diff3d"].astype(np.complex64))
    check(exc, "diff3d", "np.abs(F)")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_diff3d(bad):
    d = arrays()["diff3d"]
    d[4, 2, 3] = bad
    with pytest.raises(DataContractError) as exc:
        build(diff3d=d)
    check(exc, "diff3d", "drop those patterns")
    assert "pattern index 4" in str(exc.value)


def test_negative_amplitude():
    d = arrays()["diff3d"]
    d[7, 0, 0] = -0.25
    with pytest.raises(DataContractError) as exc:
        build(diff3d=d)
    check(exc, "diff3d", "np.clip(d, 0, None)")
    assert "minimum -0.25" in str(exc.value) and "pattern index 7" in str(exc.value)


def test_data_that_looks_like_intensity(tmp_path):
    counts = np.random.default_rng(1).poisson(4.0, (M, N, N)).astype(np.float32)
    path = write_npz(tmp_path / "counts.npz", diff3d=counts)
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "diff3d", "np.sqrt(counts)", path)
    assert "diffraction_is='intensity'" in str(exc.value) and "diffraction_is='amplitude'" in str(exc.value)
    assert "diff3d_units='intensity'" in str(exc.value) and "--diff3d_units intensity" in str(exc.value)
    # both escape hatches named in the fix work
    assert RawData.from_file(path, diffraction_is="amplitude").diff3d.max() == counts.max()
    np.testing.assert_allclose(RawData.from_file(path, diffraction_is="intensity").diff3d, np.sqrt(counts))


def test_float_counts_declared_amplitude_by_the_file_pass_and_intensity_converts(tmp_path):
    counts = np.random.default_rng(1).poisson(4.0, (M, N, N)).astype(np.float32)
    amp = write_npz(tmp_path / "amp.npz", diff3d=counts, diff3d_units=np.array("amplitude"))
    assert RawData.from_file(amp).diff3d.max() == counts.max()
    inten = write_npz(tmp_path / "int.npz", diff3d=counts, diff3d_units=np.array("intensity"))
    np.testing.assert_allclose(RawData.from_file(inten).diff3d, np.sqrt(counts))


@pytest.mark.parametrize("units", [np.array("counts"), np.array(["amplitude", "intensity"]), np.array(1.0)])
def test_unknown_diff3d_units(tmp_path, units):
    path = write_npz(tmp_path / "d.npz", diff3d_units=units)
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "diff3d_units", "np.array('amplitude') or np.array('intensity')", path)


@pytest.mark.parametrize("shape", [(N, N + 1), (M, N, N), (N,)])
def test_bad_pixels_wrong_shape(shape):
    with pytest.raises(DataContractError) as exc:
        build(bad_pixels=np.zeros(shape, bool))
    check(exc, "bad_pixels", f"bool [{N}, {N}] array")


@pytest.mark.parametrize("mask", [np.full((N, N), 0.5), np.full((N, N), 2, np.int8), np.full((N, N), "x")])
def test_bad_pixels_wrong_dtype(mask):
    with pytest.raises(DataContractError) as exc:
        build(bad_pixels=mask)
    check(exc, "bad_pixels", f"bool [{N}, {N}] array")


def test_bad_pixels_all_bad():
    with pytest.raises(DataContractError) as exc:
        build(bad_pixels=np.ones((N, N), bool))
    check(exc, "bad_pixels", "mark only the pixels that were not measured")


def test_all_zero_diffraction_cannot_be_normalised():
    raw = build(diff3d=np.zeros((M, N, N), np.float32))
    with pytest.raises(DataContractError) as exc:
        raw.generate_grouped_data(N, K=4, nsamples=4, seed=0, gridsize=1)
    check(exc, "diff3d", "holds measured or simulated amplitudes")


# --------------------------------------------------------------------------- probe, object, Y, scan_index


@pytest.mark.parametrize("shape", [(N + 2, N + 2), (N, N + 1), (N, N, 1), (N,)])
def test_probe_shape_not_matching_diff3d(shape):
    with pytest.raises(DataContractError) as exc:
        build(probeGuess=np.ones(shape, np.complex64))
    check(exc, "probeGuess", f"2-D [{N}, {N}] probe")


def test_probe_with_several_modes():
    with pytest.raises(DataContractError) as exc:
        build(probeGuess=np.ones((2, N, N), np.complex64))
    check(exc, "probeGuess", "probeGuess[0]")
    assert "2 probe modes" in str(exc.value)


def test_probe_missing():
    with pytest.raises(DataContractError) as exc:
        build(probeGuess=None)
    check(exc, "probeGuess", "provide the [N, N] complex probe")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_probe(bad):
    p = np.ones((N, N), np.complex64)
    p[1, 1] = bad
    with pytest.raises(DataContractError) as exc:
        build(probeGuess=p)
    check(exc, "probeGuess", "replace NaN/inf probe pixels")


def test_object_not_2d():
    with pytest.raises(DataContractError) as exc:
        build(objectGuess=np.ones((1, 40, 40), np.complex64))
    check(exc, "objectGuess", "np.squeeze")


def test_non_finite_object():
    obj = np.ones((40, 40), np.complex64)
    obj[5, 5] = np.nan
    with pytest.raises(DataContractError) as exc:
        build(objectGuess=obj)
    check(exc, "objectGuess", "replace NaN/inf object pixels")


def test_per_position_Y_wrong_shape():
    with pytest.raises(DataContractError) as exc:
        build(Y=np.ones((M, N + 1, N + 1), np.complex64))
    check(exc, "Y", "one complex N x N object patch per scan position")


def test_scan_index_wrong_length():
    with pytest.raises(DataContractError) as exc:
        build(scan_index=np.zeros(M + 1, np.int64))
    check(exc, "scan_index", "one integer per scan position")


def test_invalid_diffraction_is():
    with pytest.raises(DataContractError) as exc:
        build(diffraction_is="counts")
    check(exc, "diffraction_is", "'auto', 'amplitude' or 'intensity'")


# --------------------------------------------------------------------------- grouping arguments


def test_fewer_points_than_gridsize_squared():
    a = arrays()
    raw = RawData.from_coords_without_pc(a["xcoords"][:3], a["ycoords"][:3], a["diff3d"][:3], a["probeGuess"], None)
    with pytest.raises(DataContractError) as exc:
        raw.generate_grouped_data(N, K=4, nsamples=2, seed=0, gridsize=2)
    check(exc, "xcoords", "at least 4 positions or a smaller gridsize")


@pytest.mark.parametrize(("gridsize", "K"), [(2, 2), (3, 7), (2, 0)])
def test_K_smaller_than_C_minus_1(gridsize, K):
    with pytest.raises(DataContractError) as exc:
        build().generate_grouped_data(N, K=K, nsamples=4, seed=0, gridsize=gridsize)
    check(exc, "K", f"pass K >= {gridsize**2 - 1}")


@pytest.mark.parametrize("nsamples", [0, -3, 2.5, True, "10", None])
def test_invalid_nsamples(nsamples):
    with pytest.raises(DataContractError) as exc:
        build().generate_grouped_data(N, K=4, nsamples=nsamples, seed=0, gridsize=2)
    check(exc, "nsamples", "pass nsamples as an int >= 1")


def test_nsamples_above_points_without_oversampling():
    with pytest.raises(DataContractError) as exc:
        build().generate_grouped_data(N, K=4, nsamples=M + 1, seed=0, gridsize=2)
    check(exc, "nsamples", "enable_oversampling=True")


def test_neighbor_pool_size_too_small():
    with pytest.raises(DataContractError) as exc:
        build().generate_grouped_data(
            N, K=4, nsamples=100, seed=0, gridsize=2, enable_oversampling=True, neighbor_pool_size=2
        )
    check(exc, "neighbor_pool_size", "pass neighbor_pool_size >= 3")


@pytest.mark.parametrize("gridsize", [0, -1, 1.5])
def test_invalid_gridsize(gridsize):
    with pytest.raises(DataContractError) as exc:
        build().generate_grouped_data(N, K=4, nsamples=4, seed=0, gridsize=gridsize)
    check(exc, "gridsize", "pass gridsize as an int >= 1")


def test_N_not_matching_diff3d(tmp_path):
    path = write_npz(tmp_path / "d.npz")
    raw = RawData.from_file(path)
    with pytest.raises(DataContractError) as exc:
        raw.generate_grouped_data(2 * N, K=4, nsamples=4, seed=0, gridsize=1)
    check(exc, "N", f"pass N={N}", path)


@pytest.mark.parametrize("nn", [np.array([[0, 1], [2, M]]), np.array([[-1, 0]]), np.zeros((0, 4), np.int64),
                                np.array([0.0, 1.0])])
def test_invalid_nn_indices(nn):
    with pytest.raises(DataContractError) as exc:
        build().grouped_data_from_indices(nn, N)
    check(exc, "nn_indices", "")
    assert "Fix: pass the output of ptycho.grouping.group_neighbors" in str(exc.value) or (
        "Fix: index scan positions of this dataset only" in str(exc.value)
    )


def test_group_neighbors_rejects_bad_positions():
    with pytest.raises(DataContractError) as exc:
        group_neighbors(np.zeros((5, 3)), 1, K=4, nsamples=2)
    check(exc, "xy", "np.column_stack([xcoords, ycoords])")


# --------------------------------------------------------------------------- writing


def test_metadata_not_json_serialisable(tmp_path):
    raw = build(metadata={"when": object()})
    with pytest.raises(DataContractError) as exc:
        raw.to_file(tmp_path / "out.npz")
    check(exc, "metadata", "str/int/float/bool/None/list/dict", tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_norm_Y_I_not_numeric(tmp_path):
    raw = build(norm_Y_I={"not": "a number"})
    with pytest.raises(DataContractError) as exc:
        raw.to_file(tmp_path / "out.npz")
    check(exc, "norm_Y_I", "set norm_Y_I to a number or numeric array, or to None", tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


# --------------------------------------------------------------------------- HDF5 inputs (CXI, Ptychodus)
CXI_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "io" / "sim_n32.cxi"


def cxi_copy(tmp_path: Path, name: str = "scan.cxi") -> Path:
    import shutil

    return Path(shutil.copyfile(CXI_FIXTURE, tmp_path / name))


def test_hdf5_external_link_refused(tmp_path):
    import h5py

    path = cxi_copy(tmp_path)
    with h5py.File(path, "a") as f:
        f["/entry_1/elsewhere"] = h5py.ExternalLink("/etc/passwd", "/x")
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "entry_1/elsewhere", "copy the data into the file", path)
    assert "external link" in str(exc.value)


def test_hdf5_virtual_dataset_refused(tmp_path):
    import h5py

    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:
        f["d"] = np.zeros((4, 4))
    path = cxi_copy(tmp_path)
    layout = h5py.VirtualLayout(shape=(4, 4), dtype="f8")
    layout[:] = h5py.VirtualSource(str(src), "d", shape=(4, 4))
    with h5py.File(path, "a") as f:
        f.create_virtual_dataset("/entry_1/virtual", layout)
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "entry_1/virtual", "copy the data into the file", path)


def test_hdf5_external_storage_refused(tmp_path):
    import h5py

    path = cxi_copy(tmp_path)
    (tmp_path / "raw.bin").write_bytes(bytes(128))
    with h5py.File(path, "a") as f:
        f.create_dataset("/entry_1/ext", shape=(16,), dtype="f8", external=[(str(tmp_path / "raw.bin"), 0, 128)])
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "entry_1/ext", "copy the data into the file", path)


@pytest.mark.parametrize(
    "victim",
    ["/entry_1/instrument_1/detector_1/distance", "/entry_1/instrument_1/detector_1/x_pixel_size"],
)
def test_cxi_missing_geometry(tmp_path, victim):
    import h5py

    path = cxi_copy(tmp_path)
    with h5py.File(path, "a") as f:
        del f[victim]
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, victim, "CXI 1.6 layout", path)


def test_cxi_missing_wavelength_and_energy(tmp_path):
    import h5py

    path = cxi_copy(tmp_path)
    with h5py.File(path, "a") as f:
        del f["/entry_1/instrument_1/source_1/wavelength"], f["/entry_1/instrument_1/source_1/energy"]
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "/entry_1/instrument_1/source_1/energy", "source_1/wavelength (m)", path)


def test_cxi_frames_not_square(tmp_path):
    import h5py

    path = cxi_copy(tmp_path)
    with h5py.File(path, "a") as f:
        del f["/entry_1/data_1/data"], f["/entry_1/instrument_1/detector_1/data"]
        f["/entry_1/instrument_1/detector_1/data"] = np.zeros((24, 32, 30), np.uint32)
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "/entry_1/instrument_1/detector_1/data", "crop the frames to a square", path)


def test_cxi_translation_count_mismatch(tmp_path):
    import h5py

    path = cxi_copy(tmp_path)
    with h5py.File(path, "a") as f:
        del f["/entry_1/sample_1/geometry_1/translation"]
        f["/entry_1/sample_1/geometry_1/translation"] = np.zeros((23, 3))
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "/entry_1/sample_1/geometry_1/translation", "CXI 1.6 layout", path)
    assert "expected [24, *]" in str(exc.value)


def test_cxi_mask_wrong_dtype(tmp_path):
    import h5py

    path = cxi_copy(tmp_path)
    with h5py.File(path, "a") as f:
        del f["/entry_1/instrument_1/detector_1/mask"]
        f["/entry_1/instrument_1/detector_1/mask"] = np.zeros((32, 32), np.float32)
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    check(exc, "/entry_1/instrument_1/detector_1/mask", "uint32 [N, N]", path)


def test_hdf5_unknown_layout(tmp_path):
    import h5py

    path = tmp_path / "product.h5"
    with h5py.File(path, "w") as f:
        f["object"] = np.ones((8, 8), np.complex64)
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    assert exc.value.field is None and str(path) in str(exc.value)
    assert "unknown layout" in str(exc.value) and "export the scan from Ptychodus as training data" in str(exc.value)


def test_hdf5_unreadable(tmp_path):
    path = tmp_path / "broken.cxi"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(DataContractError) as exc:
        RawData.from_file(path)
    assert "cannot be read as an HDF5 file" in str(exc.value) and str(path) in str(exc.value)


# --------------------------------------------------------------------------- the spec table


def test_spec_table_and_tests_agree():
    """Every test named in specs/bad-input.md exists, and every test in this file has a row."""
    root = Path(__file__).resolve().parents[1]
    spec = (root / "specs" / "bad-input.md").read_text()
    named = set(re.findall(r"`(?:tests/(test_\w+)\.py::)?(test_\w+)`", spec))
    assert named, "no tests named in the spec"
    for module, test in named:
        source = (root / "tests" / f"{module or 'test_bad_input'}.py").read_text()
        assert f"def {test}(" in source, f"specs/bad-input.md names missing test {module}::{test}"
    listed = {test for _, test in named}
    here = {n for n in globals() if n.startswith("test_") and n != "test_spec_table_and_tests_agree"}
    assert here <= listed, f"tests without a row in specs/bad-input.md: {sorted(here - listed)}"

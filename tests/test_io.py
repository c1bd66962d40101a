"""CXI and Ptychodus HDF5 inputs (ptycho.io), integer counts, bad pixels and ptycho_convert.

The committed fixtures in ``tests/fixtures/io/`` are written by :func:`write_fixtures` from the
project's simulator (``python tests/test_io.py`` regenerates them); the round-trip tests
compare what the readers return with a fresh simulation of the same parameters.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho import io as pio
from ptycho.raw_data import RawData
from ptycho.simulate import simulate_dataset

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "io"
CXI_FIXTURE = FIXTURES / "sim_n32.cxi"
PTD_FIXTURE = FIXTURES / "sim_n32_ptychodus_training.h5"
#: Geometry of the CXI fixture: 10 keV (1.2398 A), 2 m, 75 um pixels.
WAVELENGTH_M = pio.HC_JM / (10000.0 * pio.EV_J)
DISTANCE_M = 2.0
DETECTOR_PIXEL_M = 75e-6
N = 32


def fixture_raw() -> RawData:
    """The simulated scan behind both fixtures: N=32, 24 positions, 1e5 photons, 6 bad pixels."""
    raw = simulate_dataset(N=N, n_positions=24, nphotons=1e5, seed=11)
    bad = np.zeros((N, N), bool)
    bad[[0, 3, 16, 16, 30, 31], [5, 3, 16, 17, 2, 31]] = True
    return RawData(raw.xcoords, raw.ycoords, raw.xcoords, raw.ycoords, raw.diff3d, raw.probeGuess, None,
                   raw.objectGuess, diffraction_is="amplitude", bad_pixels=bad)


def write_fixtures(directory: Path = FIXTURES) -> None:
    """(Re)write the committed fixtures."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = fixture_raw()
    pio.write_cxi(raw, directory / CXI_FIXTURE.name, wavelength_m=WAVELENGTH_M, distance_m=DISTANCE_M,
                  detector_pixel_m=DETECTOR_PIXEL_M)
    pio.write_ptychodus_training(raw, directory / PTD_FIXTURE.name)


def _same_scan(got: RawData, want: RawData) -> None:
    np.testing.assert_allclose(got.xcoords, want.xcoords, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.ycoords, want.ycoords, rtol=0, atol=1e-9)
    # counts are written as rint(amplitude**2): the simulator's amplitudes are sqrt(integer counts)
    np.testing.assert_allclose(got.diff3d, want.diff3d, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got.probeGuess, want.probeGuess)
    np.testing.assert_array_equal(got.objectGuess, want.objectGuess)
    np.testing.assert_array_equal(got.bad_pixels, want.bad_pixels)


def test_fixtures_are_small():
    for f in (CXI_FIXTURE, PTD_FIXTURE):
        assert f.stat().st_size < 300_000, f


def test_cxi_fixture_round_trip(caplog):
    want = fixture_raw()
    with caplog.at_level(logging.INFO):
        got = RawData.from_file(CXI_FIXTURE)
    _same_scan(got, want)
    assert got.metadata["source_format"] == "cxi"
    dx = WAVELENGTH_M * DISTANCE_M / (N * DETECTOR_PIXEL_M)
    assert got.metadata["object_pixel_m"] == [pytest.approx(dx)] * 2


def test_ptychodus_training_fixture_round_trip():
    got = RawData.from_file(PTD_FIXTURE)
    _same_scan(got, fixture_raw())
    assert got.metadata["source_format"] == "ptychodus_training"


def test_cxi_without_object_keeps_relative_positions(tmp_path):
    raw = simulate_dataset(N=N, n_positions=8, nphotons=1e4, seed=2)
    bare = RawData.from_coords_without_pc(raw.xcoords, raw.ycoords, raw.diff3d, raw.probeGuess, None,
                                          diffraction_is="amplitude")
    path = pio.write_cxi(bare, tmp_path / "bare.cxi", wavelength_m=1e-10, distance_m=1.0, detector_pixel_m=50e-6)
    got = RawData.from_file(path)
    assert got.objectGuess is None and got.bad_pixels is None
    np.testing.assert_allclose(got.xcoords - got.xcoords.min(), raw.xcoords - raw.xcoords.min(), atol=1e-9)
    assert got.xcoords.min() == pytest.approx(N / 2) and got.ycoords.min() == pytest.approx(N / 2)


def test_object_pixel_size_formula():
    assert pio.object_pixel_size(1e-10, 2.0, 64, 50e-6) == pytest.approx(1e-10 * 2.0 / (64 * 50e-6))
    assert pio.wavelength_from_energy_J(10000 * pio.EV_J) == pytest.approx(1.23984e-10, rel=1e-5)


def test_integer_counts_npz_are_converted_with_one_log_line(tmp_path, caplog):
    raw = fixture_raw()
    counts = np.rint(raw.diff3d.astype(np.float64) ** 2).astype(np.int32)
    path = tmp_path / "counts.npz"
    np.savez(path, xcoords=raw.xcoords, ycoords=raw.ycoords, diff3d=counts, probeGuess=raw.probeGuess[None],
             bad_pixels=raw.bad_pixels)
    with caplog.at_level(logging.INFO, logger="ptycho.raw_data"):
        got = RawData.from_file(path)
    lines = [r for r in caplog.records if "photon counts" in r.getMessage()]
    assert len(lines) == 1 and "int32" in lines[0].getMessage() and str(path) in lines[0].getMessage()
    np.testing.assert_allclose(got.diff3d, np.sqrt(counts), rtol=1e-6)
    assert got.probeGuess.shape == (N, N) and got.bad_pixels.sum() == 6


def test_bad_pixels_are_not_signal_in_the_normalisation():
    raw = fixture_raw()
    hot = raw.diff3d.copy()
    hot[:, raw.bad_pixels] = 1e4  # hot pixels must not change the normalisation
    hot_raw = RawData(raw.xcoords, raw.ycoords, raw.xcoords, raw.ycoords, hot, raw.probeGuess, None,
                      diffraction_is="amplitude", bad_pixels=raw.bad_pixels)
    a = raw.generate_grouped_data(N, K=4, nsamples=6, seed=0, gridsize=1)
    b = hot_raw.generate_grouped_data(N, K=4, nsamples=6, seed=0, gridsize=1)
    assert a["X_full_norm"] == b["X_full_norm"]
    good = ~raw.bad_pixels
    energy = np.mean(np.sum(b["X_full"].astype(np.float64) ** 2 * good[None, :, :, None], axis=(1, 2)))
    assert energy == pytest.approx((N / 2) ** 2, rel=1e-5)
    np.testing.assert_array_equal(b["bad_pixels"], raw.bad_pixels)


def test_convert_cli_writes_the_npz_contract(tmp_path, capsys):
    from ptycho.cli import convert

    out = tmp_path / "converted.npz"
    assert convert.main([str(CXI_FIXTURE), str(out)]) == 0
    got = RawData.from_file(out)
    _same_scan(got, fixture_raw())
    with np.load(out) as z:
        assert str(z["diff3d_units"]) == "amplitude" and z["diff3d"].dtype == np.float32
    assert convert.main([str(tmp_path / "missing.cxi"), str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


if __name__ == "__main__":
    write_fixtures()
    sys.exit(0)

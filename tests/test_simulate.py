"""Tests of the deterministic simulator (ptycho.simulate, ptycho.simulation) and the integration fixture."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho.errors import ConfigError
from ptycho.raw_data import RawData
from ptycho.reference import physics
from ptycho.simulate import SimulationParams, auto_object_size, simulate_dataset
from ptycho.simulate import main as simulate_main
from ptycho.simulation import (
    STREAM_KEYS,
    gaussian_random_field,
    make_object,
    make_probe,
    make_scan,
    scan_window,
    simulate_diffraction,
    substream,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "pytorch_integration" / "minimal_dataset_v1.npz"
SIDECAR = FIXTURE.with_suffix(".json")
FIXTURE_SCRIPT = REPO / "scripts" / "tools" / "make_pytorch_integration_fixture.py"

#: A small dataset used by many tests (fast: N=32, 24 positions).
SMALL = dict(N=32, n_positions=24, object_size=72)


def _arrays(raw: RawData) -> dict[str, np.ndarray]:
    return {
        "x": raw.xcoords,
        "y": raw.ycoords,
        "diff3d": raw.diff3d,
        "probe": raw.probeGuess,
        "obj": raw.objectGuess,
    }


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


# =========================================================================== determinism


def test_same_seed_gives_identical_arrays_and_metadata():
    a = simulate_dataset(**SMALL, nphotons=1e5, seed=3)
    b = simulate_dataset(**SMALL, nphotons=1e5, seed=3)
    for key, value in _arrays(a).items():
        np.testing.assert_array_equal(value, _arrays(b)[key], err_msg=key)
    assert a.metadata == b.metadata


def test_different_seed_changes_object_scan_and_noise():
    a = _arrays(simulate_dataset(**SMALL, nphotons=1e5, seed=0))
    b = _arrays(simulate_dataset(**SMALL, nphotons=1e5, seed=1))
    for key in ("x", "y", "diff3d", "obj"):
        assert not np.array_equal(a[key], b[key]), key


def test_substreams_are_independent():
    base = simulate_dataset(**SMALL, nphotons=1e5, seed=5)
    # another scan (kind and count) leaves the object unchanged
    other_scan = simulate_dataset(N=32, n_positions=30, object_size=72, scan="raster", nphotons=1e5, seed=5)
    np.testing.assert_array_equal(base.objectGuess, other_scan.objectGuess)
    # another object leaves the scan unchanged
    other_obj = simulate_dataset(**SMALL, object_kind="grf", nphotons=1e5, seed=5)
    np.testing.assert_array_equal(base.xcoords, other_obj.xcoords)
    np.testing.assert_array_equal(base.ycoords, other_obj.ycoords)
    assert not np.array_equal(base.objectGuess, other_obj.objectGuess)
    # another photon budget or no noise leaves object and scan unchanged
    for kwargs in ({"nphotons": 1e7}, {"nphotons": 1e5, "noise": False}, {"nphotons": None}):
        other = simulate_dataset(**SMALL, seed=5, **kwargs)
        np.testing.assert_array_equal(base.objectGuess, other.objectGuess)
        np.testing.assert_array_equal(base.xcoords, other.xcoords)


def test_substream_construction_is_the_documented_one():
    for name, key in STREAM_KEYS.items():
        expected = np.random.default_rng(np.random.SeedSequence(entropy=11, spawn_key=(key,))).random(4)
        np.testing.assert_array_equal(substream(11, name).random(4), expected)
    assert len(set(STREAM_KEYS.values())) == len(STREAM_KEYS)
    with pytest.raises(ConfigError):
        substream(0, "probe")
    with pytest.raises(ConfigError):
        substream(-1, "object")


def test_global_numpy_rng_is_neither_used_nor_consulted():
    np.random.seed(123)
    state = np.random.get_state()
    a = simulate_dataset(**SMALL, nphotons=1e4, seed=2)
    after = np.random.get_state()
    assert all(np.array_equal(x, y) for x, y in zip(state[1:], after[1:], strict=True))
    assert state[0] == after[0]
    np.random.seed(999)
    b = simulate_dataset(**SMALL, nphotons=1e4, seed=2)
    np.testing.assert_array_equal(a.diff3d, b.diff3d)


def test_random_scan_is_prefix_stable():
    rng_a, rng_b = substream(4, "scan"), substream(4, "scan")
    short = make_scan("random", 10, (100, 100), 32, rng_a)
    long = make_scan("random", 25, (100, 100), 32, rng_b)
    np.testing.assert_array_equal(short, long[:10])


# =========================================================================== contract


def test_written_npz_follows_the_data_contract(tmp_path):
    raw = simulate_dataset(**SMALL, nphotons=1e6, seed=0)
    path = raw.to_file(tmp_path / "sim.npz")
    M, N = SMALL["n_positions"], SMALL["N"]
    with np.load(path, allow_pickle=False) as f:
        assert f["xcoords"].shape == (M,) and f["xcoords"].dtype == np.float64
        assert f["ycoords"].shape == (M,) and f["ycoords"].dtype == np.float64
        np.testing.assert_array_equal(f["xcoords_start"], f["xcoords"])
        np.testing.assert_array_equal(f["ycoords_start"], f["ycoords"])
        assert f["diff3d"].shape == (M, N, N) and f["diff3d"].dtype == np.float32
        assert f["probeGuess"].shape == (N, N) and f["probeGuess"].dtype == np.complex64
        assert f["objectGuess"].shape == (72, 72) and f["objectGuess"].dtype == np.complex64
        assert f["scan_index"].dtype == np.int64 and not f["scan_index"].any()
        assert f["_metadata"].dtype.kind == "U"
        meta = json.loads(f["_metadata"].item())
    assert meta["generator"] == "ptycho.simulate"
    assert meta["seed"] == 0
    assert meta["parameters"]["N"] == N and meta["parameters"]["object_size"] == 72
    assert meta["parameters"]["probe_defocus"] == pytest.approx(N / 48)
    # RawData's own validation (including the intensity-vs-amplitude check) accepts it
    loaded = RawData.from_file(path)
    np.testing.assert_array_equal(loaded.diff3d, raw.diff3d)
    assert loaded.metadata == meta


def test_default_dataset_parameters():
    p = SimulationParams().resolved()
    assert (p.N, p.n_positions, p.object_kind, p.scan) == (64, 512, "lines", "random")
    assert (p.nphotons, p.noise) == (1e9, True)
    assert p.object_size == auto_object_size(64, 512) == 64 + 8 + 1 + math.ceil(math.sqrt(512) * 5.0)
    assert p.probe_defocus == pytest.approx(64 / 48)


# =========================================================================== photons and forward model


def test_mean_total_counts_match_nphotons_within_poisson_error():
    nphotons, M = 2e4, 48
    raw = simulate_dataset(N=32, n_positions=M, object_size=80, nphotons=nphotons, seed=7)
    counts = raw.diff3d.astype(np.float64) ** 2
    np.testing.assert_allclose(counts, np.rint(counts), atol=1e-3)  # diff3d = sqrt(integer counts)
    totals = counts.sum(axis=(1, 2))
    # each total is Poisson with mean lambda_k; mean_k lambda_k == nphotons exactly, so the
    # sample mean of the totals has standard deviation sqrt(nphotons / M)
    sigma = math.sqrt(nphotons / M)
    assert abs(totals.mean() - nphotons) < 5 * sigma
    assert raw.metadata["mean_expected_photons"] == pytest.approx(nphotons, rel=1e-9)
    assert raw.metadata["mean_detected_photons"] == pytest.approx(totals.mean(), rel=1e-6)


def test_noise_free_expected_counts_equal_nphotons():
    raw = simulate_dataset(**SMALL, nphotons=3.5e6, noise=False, seed=1)
    totals = np.sum(raw.diff3d.astype(np.float64) ** 2, axis=(1, 2))
    assert totals.mean() == pytest.approx(3.5e6, rel=1e-5)
    assert raw.metadata["diff3d_units"].startswith("sqrt(expected")


@pytest.mark.parametrize("nphotons", [1e6, None])
def test_noise_free_amplitude_is_the_reference_forward_model(nphotons):
    raw = simulate_dataset(**SMALL, object_kind="grf", nphotons=nphotons, noise=False, seed=2)
    xy = np.stack([raw.xcoords, raw.ycoords], axis=1)
    patches = physics.object_patches(raw.objectGuess, xy, raw.N)
    expected = physics.diffract(raw.probeGuess[None] * patches)
    np.testing.assert_allclose(raw.diff3d, expected, rtol=2e-5, atol=2e-5 * float(expected.max()))


def test_noisy_amplitude_scatters_around_the_forward_model():
    # pixelwise: E[n] = lambda, so mean_k (n - lambda) over many pixels is ~0 within its standard error
    raw = simulate_dataset(**SMALL, nphotons=1e5, seed=9)
    xy = np.stack([raw.xcoords, raw.ycoords], axis=1)
    lam = physics.diffract(raw.probeGuess[None] * physics.object_patches(raw.objectGuess, xy, raw.N))
    lam = lam.astype(np.float64) ** 2
    counts = raw.diff3d.astype(np.float64) ** 2
    residual = (counts - lam).sum()
    assert abs(residual) < 5 * math.sqrt(lam.sum())
    # and the normalised residuals have unit variance (Poisson: var = lambda)
    bright = lam > 50
    z = (counts[bright] - lam[bright]) / np.sqrt(lam[bright])
    assert 0.9 < z.std() < 1.1


def test_simulate_diffraction_validates_inputs():
    obj = np.ones((64, 64), np.complex64)
    probe = make_probe(16)
    xy = np.array([[32.0, 32.0]])
    with pytest.raises(ConfigError, match="nphotons"):
        simulate_diffraction(obj, probe, xy, nphotons=-1.0, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="rng"):
        simulate_diffraction(obj, probe, xy, nphotons=10.0, rng=None)
    with pytest.raises(ConfigError, match="probe"):
        simulate_diffraction(obj, np.zeros((16, 16), np.complex64), xy, nphotons=10.0, poisson=False)


# =========================================================================== probe


def test_probe_is_centred_unit_peak_and_band_limited():
    N = 64
    probe = make_probe(N)
    assert probe.dtype == np.complex64 and probe.shape == (N, N)
    assert np.abs(probe).max() == pytest.approx(1.0, rel=1e-6)
    intensity = np.abs(probe.astype(np.complex128)) ** 2
    grid = np.arange(N)
    cy = (intensity.sum(axis=1) * grid).sum() / intensity.sum()
    cx = (intensity.sum(axis=0) * grid).sum() / intensity.sum()
    assert abs(cy - N / 2) < 0.05 and abs(cx - N / 2) < 0.05
    # the far field of the bare probe is the pupil: a disk of radius aperture * N / 2 about (N/2, N/2)
    far = physics.diffract(probe).astype(np.float64)
    r = np.hypot(*np.meshgrid(grid - N / 2, grid - N / 2, indexing="ij"))
    radius = 0.5 * N / 2
    assert far[r > radius + 1].max() < 1e-5 * far.max()
    assert far[r < radius - 1].min() > 0.99 * far[r < radius - 1].max()
    # the default (defocus N/48 waves) keeps most of the energy inside the probe mask radius N/4
    assert intensity[r < N / 4].sum() / intensity.sum() > 0.95


def test_probe_defocus_spreads_the_spot():
    N = 64
    grid = np.arange(N) - N / 2
    r2 = grid[:, None] ** 2 + grid[None, :] ** 2

    def rms_radius(p):
        i = np.abs(p.astype(np.complex128)) ** 2
        return math.sqrt((i * r2).sum() / i.sum())

    focused, default, strong = (make_probe(N, defocus=d) for d in (0.0, None, 2.5))
    assert rms_radius(focused) < rms_radius(default) < rms_radius(strong)
    # the focused probe of a symmetric pupil is real up to rounding; defocus adds phase structure
    assert np.abs(focused.imag).max() < 1e-4
    assert np.abs(default.imag).max() > 0.1


@pytest.mark.parametrize(
    "kwargs",
    [{"N": 63}, {"N": 4}, {"N": 32, "aperture": 0.0}, {"N": 32, "aperture": 1.0}, {"N": 32, "defocus": math.nan}],
)
def test_probe_rejects_bad_parameters(kwargs):
    N = kwargs.pop("N")
    with pytest.raises(ConfigError):
        make_probe(N, **kwargs)


# =========================================================================== objects


@pytest.mark.parametrize("kind", ["lines", "grf"])
def test_object_ranges_and_dtype(kind):
    obj = make_object(kind, 96, np.random.default_rng(0), amp_range=(0.4, 0.9), phase_range=(-1.5, 0.5))
    assert obj.dtype == np.complex64 and obj.shape == (96, 96)
    amp, phase = np.abs(obj), np.angle(obj)
    assert amp.min() == pytest.approx(0.4, abs=1e-5) and amp.max() == pytest.approx(0.9, abs=1e-5)
    assert phase.min() == pytest.approx(-1.5, abs=1e-5) and phase.max() == pytest.approx(0.5, abs=1e-5)


def test_lines_object_couples_amplitude_and_phase_grf_does_not():
    lines = make_object("lines", 96, np.random.default_rng(1))
    grf = make_object("grf", 96, np.random.default_rng(1))
    corr_lines = np.corrcoef(np.abs(lines).ravel(), np.angle(lines).ravel())[0, 1]
    corr_grf = np.corrcoef(np.abs(grf).ravel(), np.angle(grf).ravel())[0, 1]
    assert corr_lines < -0.999  # one thickness map: amplitude falls as phase rises
    assert abs(corr_grf) < 0.5  # two independent fields


def test_grf_power_spectrum_follows_the_exponent():
    size, exponent = 256, 3.0
    field = gaussian_random_field(size, np.random.default_rng(0), exponent=exponent)
    power = np.abs(np.fft.fft2(field - field.mean())) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    band = (k > 0.02) & (k < 0.3)
    slope = np.polyfit(np.log(k[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.25)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "points"},
        {"size": 4},
        {"amp_range": (1.0, 0.5)},
        {"amp_range": (-0.1, 1.0)},
        {"phase_range": (0.0,)},
        {"kind": "lines", "n_lines": 0},
        {"kind": "grf", "grf_exponent": -1.0},
    ],
)
def test_object_rejects_bad_parameters(kwargs):
    kind = kwargs.pop("kind", "lines")
    size = kwargs.pop("size", 32)
    with pytest.raises(ConfigError):
        make_object(kind, size, np.random.default_rng(0), **kwargs)


# =========================================================================== scans


def _patches_fully_inside(xy: np.ndarray, shape: tuple[int, int], N: int, border: float) -> bool:
    """Every patch, eroded by nothing, samples only object pixels at least `border` from the edge."""
    H, W = shape
    inner = np.zeros(shape)
    b = math.ceil(border)
    inner[b : H - b, b : W - b] = 1.0
    patches = physics.object_patches(inner.astype(np.complex64), xy, N)
    return bool(np.allclose(patches.real, 1.0, atol=1e-6))


@given(
    N=st.sampled_from([16, 32, 64]),
    extra=st.integers(min_value=0, max_value=60),
    border=st.integers(min_value=0, max_value=6),
    M=st.integers(min_value=1, max_value=40),
    kind=st.sampled_from(["random", "raster"]),
    jitter=st.sampled_from([0.0, 2.0]),
)
def test_every_patch_stays_inside_the_object(N, extra, border, M, kind, jitter):
    size = N + 2 * border + 2 + extra
    xy = make_scan(kind, M, (size, size + 3), N, np.random.default_rng(M), border=border, jitter=jitter)
    assert xy.shape == (M, 2) and xy.dtype == np.float64
    assert _patches_fully_inside(xy, (size, size + 3), N, border)


def test_random_scan_fills_the_window_uniformly():
    lo, hi = scan_window(200, 32)
    xy = make_scan("random", 4000, (200, 200), 32, np.random.default_rng(0))
    assert xy.min() >= lo and xy.max() <= hi
    for axis in (0, 1):
        u = (xy[:, axis] - lo) / (hi - lo)
        hist = np.histogram(u, bins=4, range=(0, 1))[0]
        assert np.all(np.abs(hist - 1000) < 5 * math.sqrt(1000))


def test_raster_scan_geometry():
    N, size = 32, 100
    lo, hi = scan_window(size, N)
    xy = make_scan("raster", 23, (size, size), N, np.random.default_rng(0))
    nx = 5  # ceil(sqrt(23)); ny = ceil(23 / 5) = 5
    xs = np.linspace(lo, hi, nx)
    grid = np.stack([np.tile(xs, 5), np.repeat(xs, 5)], axis=1)[:23]  # row-major: y outer, x inner
    np.testing.assert_allclose(xy, grid)
    # explicit step: exact spacing, centred on the object
    stepped = make_scan("raster", 16, (size, size), N, np.random.default_rng(0), step=6.0)
    cols = np.unique(stepped[:, 0])
    np.testing.assert_allclose(np.diff(cols), 6.0)
    assert cols.mean() == pytest.approx((size - 1) / 2)
    np.testing.assert_array_equal(stepped[:4, 1], stepped[0, 1])  # first row shares y
    # jitter: Gaussian offsets of the requested std, clipped into the window
    jittered = make_scan("raster", 400, (400, 400), N, np.random.default_rng(0), step=8.0, jitter=1.0)
    plain = make_scan("raster", 400, (400, 400), N, np.random.default_rng(0), step=8.0)
    assert np.std(jittered - plain) == pytest.approx(1.0, abs=0.1)


def test_raster_step_that_does_not_fit_is_rejected():
    with pytest.raises(ConfigError, match="raster_step"):
        make_scan("raster", 100, (80, 80), 32, np.random.default_rng(0), step=10.0)


@pytest.mark.parametrize(
    "args",
    [
        ("spiral", 10, (100, 100)),
        ("random", 0, (100, 100)),
        ("random", 10, (40, 100)),
    ],
)
def test_scan_rejects_bad_parameters(args):
    kind, M, shape = args
    with pytest.raises(ConfigError):
        make_scan(kind, M, shape, 32, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"N": 33}, "N"),
        ({"n_positions": 0}, "n_positions"),
        ({"object_size": 40}, "object_size"),
        ({"nphotons": -5.0}, "nphotons"),
        ({"nphotons": math.inf}, "nphotons"),
        ({"seed": -1}, "seed"),
        ({"object_kind": "points"}, "object_kind"),
        ({"scan": "spiral"}, "scan"),
        ({"raster_jitter": -1.0}, "raster_jitter"),
        ({"probe_aperture": 1.5}, "probe_aperture"),
    ],
)
def test_simulate_dataset_rejects_bad_parameters(kwargs, field):
    args = {**SMALL, **kwargs}
    with pytest.raises(ConfigError, match=field):
        simulate_dataset(**args)


# =========================================================================== CLI


def test_cli_help():
    proc = _run("-m", "ptycho.simulate", "--help")
    assert proc.returncode == 0
    for flag in ("--output", "--N", "--n-positions", "--object", "--scan", "--nphotons", "--seed", "--preview"):
        assert flag in proc.stdout
    assert "photon" in proc.stdout


def test_cli_writes_a_valid_npz(tmp_path):
    out = tmp_path / "cli.npz"
    proc = _run(
        "-m", "ptycho.simulate", "--output", str(out), "--N", "32", "--n-positions", "20",
        "--object", "grf", "--scan", "raster", "--jitter", "0.5", "--nphotons", "1e5", "--seed", "4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    raw = RawData.from_file(out)
    assert raw.diff3d.shape == (20, 32, 32)
    assert raw.metadata["parameters"]["scan"] == "raster"
    # the same arguments through the API give the same arrays
    api = simulate_dataset(
        N=32, n_positions=20, object_kind="grf", scan="raster", raster_jitter=0.5, nphotons=1e5, seed=4
    )
    np.testing.assert_array_equal(raw.diff3d, api.diff3d)


def test_cli_preview_writes_a_png(tmp_path, capsys):
    out, png = tmp_path / "p.npz", tmp_path / "p.png"
    status = simulate_main(["--output", str(out), "--N", "16", "--n-positions", "6", "--preview", str(png)])
    assert status == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {png}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--N", "31"], "N=31"),
        (["--nphotons", "-3"], "nphotons"),
        (["--object-size", "10"], "object_size"),
        (["--seed", "-2"], "seed"),
        (["--amp-range", "1", "0.5"], "amp_range"),
        (["--object", "points"], "invalid choice"),
        (["--nphotons", "lots"], "nphotons"),
    ],
)
def test_cli_bad_arguments_give_a_readable_error(tmp_path, capsys, args, needle):
    out = tmp_path / "x.npz"
    try:
        status = simulate_main(["--output", str(out), *args])
    except SystemExit as exc:  # argparse's own errors (bad choice, bad number)
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert needle in err and "error:" in err
    assert not out.exists()


def test_cli_error_through_python_m_has_no_traceback(tmp_path):
    proc = _run("-m", "ptycho.simulate", "--output", str(tmp_path / "x.npz"), "--N", "31")
    assert proc.returncode == 2
    assert "N=31 is invalid" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_importing_the_simulator_loads_no_framework_or_matplotlib():
    code = (
        "import sys, ptycho.simulate, ptycho.simulation; "
        "bad = [m for m in ('tensorflow', 'torch', 'matplotlib') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


# =========================================================================== integration fixture


def test_fixture_matches_its_sidecar():
    sidecar = json.loads(SIDECAR.read_text())
    data = FIXTURE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == sidecar["sha256_checksum"]
    assert len(data) == sidecar["size_bytes"] < 1_500_000
    for field in ("version", "subset_size", "transformations", "source_dataset", "created", "seed"):
        assert field in sidecar
    assert sidecar["version"] == "v1" and sidecar["subset_size"] == 64
    assert sidecar["generator_script"] == "scripts/tools/make_pytorch_integration_fixture.py"
    with np.load(FIXTURE, allow_pickle=False) as f:
        assert sorted(f.files) == sorted(sidecar["arrays"])
        for key, spec in sidecar["arrays"].items():
            assert list(f[key].shape) == spec["shape"], key
            assert str(f[key].dtype) == spec["dtype"], key
        meta = json.loads(f["_metadata"].item())
    assert meta["parameters"] == sidecar["parameters"]
    assert meta["seed"] == sidecar["seed"]


def test_fixture_meets_the_upstream_fixture_contract():
    with np.load(FIXTURE, allow_pickle=False) as f:
        diffraction = f["diffraction"]
        assert diffraction.shape == (64, 64, 64) and diffraction.dtype == np.float32
        np.testing.assert_array_equal(diffraction, f["diff3d"])
        assert 0.0 <= diffraction.min() and diffraction.max() < 10.0
        assert f["probeGuess"].shape == (64, 64) and f["probeGuess"].dtype == np.complex64
        obj = f["objectGuess"]
        assert obj.ndim == 2 and min(obj.shape) >= 128 and obj.dtype == np.complex64
        x, y = f["xcoords"], f["ycoords"]
        assert x.shape == y.shape == (64,)
        # upstream: the subset spans > 50% of its source's coordinate range (44.869 x 43.344 px)
        assert np.ptp(x) > 0.5 * 44.869 and np.ptp(y) > 0.5 * 43.344
    raw = RawData.from_file(FIXTURE)
    assert raw.n_points == 64 and raw.N == 64
    groups = raw.generate_grouped_data(64, K=4, nsamples=64, gridsize=2, seed=0)
    assert groups["X_full"].shape == (64, 64, 64, 4)


def test_fixture_script_reproduces_the_committed_bytes(tmp_path):
    out = tmp_path / "minimal_dataset_v1.npz"
    proc = _run(str(FIXTURE_SCRIPT), "--output", str(out), "--subset-size", "64")
    assert proc.returncode == 0, proc.stderr
    committed = json.loads(SIDECAR.read_text())
    assert out.read_bytes() == FIXTURE.read_bytes(), (
        "the fixture generator no longer reproduces the committed fixture "
        f"(committed with {committed['environment']}); if the change is intended, regenerate it"
    )
    assert out.with_suffix(".json").read_text() == SIDECAR.read_text()

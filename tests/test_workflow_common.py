"""Backend-neutral workflow pieces: probe API, data container, stitching, scoring and outputs."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from ptycho import params, probe
from ptycho.config.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho.errors import DataContractError
from ptycho.evaluation import coverage_mask, ground_truth_canvas, pearson, remove_global_phase, score_stitched
from ptycho.loader import PtychoDataContainer, load
from ptycho.reference.physics import default_probe, normalize_probe, probe_disk_mask
from ptycho.simulate import simulate_dataset
from ptycho.workflows import common


@pytest.fixture(scope="module")
def raw():
    return simulate_dataset(N=32, n_positions=60, seed=3, nphotons=1e6)


def _config(gridsize=1, **kw):
    return TrainingConfig(model=ModelConfig(N=32, gridsize=gridsize), n_groups=40, **kw)


def test_set_probe_guess_normalises_into_params(raw):
    params.cfg["probe_scale"] = 4.0
    stored = probe.set_probe_guess(None, raw.probeGuess)
    assert stored.shape == (32, 32, 1) and stored.dtype == np.complex64
    assert params.cfg["probe"] is stored
    np.testing.assert_allclose(stored[..., 0], normalize_probe(raw.probeGuess, 4.0))
    assert np.mean(np.abs(probe_disk_mask(32) * stored[..., 0])) == pytest.approx(0.25, rel=1e-5)
    np.testing.assert_array_equal(probe.get_probe(32), stored)
    with pytest.raises(DataContractError, match="N=64"):
        probe.get_probe(64)


def test_set_probe_guess_estimates_from_data_when_no_guess(raw):
    container = common.create_ptycho_data_container(raw, _config())
    stored = probe.set_probe_guess(container.X, None)
    assert stored.shape == (32, 32, 1) and np.all(np.isfinite(stored))
    # The estimate is confined to the probe disk.
    assert np.all(stored[..., 0][probe_disk_mask(32) == 0] == 0)
    with pytest.raises(ValueError, match="probe_guess"):
        probe.set_probe_guess(None, None)


def test_get_probe_without_probe_says_how_to_fix():
    params.cfg.pop("probe", None)
    with pytest.raises(KeyError, match="set_probe_guess"):
        probe.get_probe()


def test_default_probe_formats():
    assert probe.get_default_probe(32).shape == (32, 32)
    np.testing.assert_array_equal(probe.get_default_probe(32, "tf")[..., 0], default_probe(32))
    assert probe.get_probe_mask(32).shape == (32, 32, 1)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_container_shapes_and_dtypes(raw, gridsize):
    c = common.create_ptycho_data_container(raw, _config(gridsize, neighbor_count=6))
    C = gridsize**2
    assert len(c) == 40
    assert c.X.shape == (40, 32, 32, C) and c.X.dtype == np.float32
    assert c.coords.shape == (40, 1, 2, C) and c.coords.dtype == np.float32
    assert c.global_offsets.shape == (40, 1, 2, 1) and c.global_offsets.dtype == np.float64
    assert c.local_offsets.dtype == np.float64 and c.nn_indices.shape == (40, C)
    assert c.Y.dtype == np.complex64 and c.Y.shape == c.X.shape
    assert c.probe.shape == (32, 32)
    assert c.gridsize == gridsize
    # X_full normalisation: mean energy (N/2)^2.
    assert np.mean(np.sum(c.X.astype(np.float64) ** 2, axis=(1, 2))) == pytest.approx(256.0, rel=1e-4)
    sub = c.subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.X, c.X[[3, 1]])


def test_container_is_deterministic_for_a_seed(raw):
    a = common.create_ptycho_data_container(raw, _config(2, neighbor_count=6))
    b = common.create_ptycho_data_container(raw, _config(2, neighbor_count=6))
    np.testing.assert_array_equal(a.nn_indices, b.nn_indices)
    c = common.create_ptycho_data_container(raw, _config(2, neighbor_count=6, subsample_seed=9))
    assert not np.array_equal(a.nn_indices, c.nn_indices)


def test_n_subsample_keeps_sorted_positions(raw):
    c = common.create_ptycho_data_container(raw, _config(n_subsample=30))
    assert c.sample_indices is not None and len(c.sample_indices) == 30
    assert np.all(np.diff(c.sample_indices) > 0)


def test_inference_config_without_n_groups_uses_every_position(raw, tmp_path):
    (tmp_path / "wts.h5.zip").write_bytes(b"")
    cfg = InferenceConfig(model=ModelConfig(N=32), model_path=tmp_path, test_data_file=tmp_path / "x.npz")
    assert len(common.create_ptycho_data_container(raw, cfg)) == 60


def test_load_split_and_errors(raw):
    grouped = raw.generate_grouped_data(32, K=4, nsamples=40, seed=0, gridsize=1)
    train = load(lambda: (grouped, 0.75), raw.probeGuess, which="train", create_split=True)
    test = load(lambda: (grouped, 0.75), raw.probeGuess, which="test", create_split=True)
    assert len(train) == 30 and len(test) == 10
    with pytest.raises(ValueError, match="which"):
        load(lambda: (grouped, 0.5), raw.probeGuess, which=None, create_split=True)
    broken = dict(grouped)
    del broken["coords_offsets"]
    with pytest.raises(DataContractError, match="coords_offsets"):
        load(lambda: broken, raw.probeGuess)
    with pytest.raises(DataContractError, match="probeGuess"):
        load(lambda: grouped, np.ones((8, 8), np.complex64))


def test_container_rejects_mismatched_shapes():
    X = np.ones((2, 8, 8, 1), np.float32)
    with pytest.raises(DataContractError, match="coords_nominal"):
        PtychoDataContainer(
            X, X, X, 1.0, None, np.zeros((2, 1, 2, 4)), np.zeros((2, 1, 2, 1)), np.zeros((2, 1)),
            np.zeros((2, 1, 2, 1)), np.zeros((2, 1, 2, 1)), np.ones((8, 8)),
        )


def test_model_inputs_scale_and_dtype(raw):
    c = common.create_ptycho_data_container(raw, _config())
    s = common.set_intensity_scale(_config(nphotons=1e6))
    assert params.cfg["intensity_scale"] == s == pytest.approx(math.sqrt(1e6) / 16)
    x, pos = common.model_inputs(c, s)
    assert x.dtype == np.float32 and pos.dtype == np.float32
    np.testing.assert_allclose(x, c.X * np.float32(s), rtol=1e-7)


def test_stitching_ground_truth_patches_reproduces_the_object(raw):
    """Stitch the true object's centroid-centred patches: the canvas must match the truth window."""
    c = common.create_ptycho_data_container(raw, _config())
    truth_patches = c.Y[..., :1]  # gridsize 1: the patch at the (only) position == centroid
    amp, phase, stitched = common.stitch(truth_patches, c.global_offsets, M=20)
    scores = score_stitched(stitched, raw.objectGuess, c.global_offsets, N=32, M=20)
    assert scores["amp_pearson"] > 0.99, scores
    assert scores["phase_pearson"] > 0.99, scores
    # A mirrored stitch (the classic sign bug) is caught by the score.
    _, _, mirrored = common.stitch(truth_patches, c.global_offsets, M=20, flip_x=True)
    assert score_stitched(mirrored, raw.objectGuess, c.global_offsets, N=32, M=20)["amp_pearson"] < 0.8


def test_adjust_offsets():
    g = np.array([[[[1.0], [2.0]]]])
    np.testing.assert_array_equal(common.adjust_offsets(g, transpose=True)[0, 0, :, 0], [2.0, 1.0])
    np.testing.assert_array_equal(common.adjust_offsets(g, flip_x=True, flip_y=True)[0, 0, :, 0], [-1.0, -2.0])
    np.testing.assert_array_equal(g[0, 0, :, 0], [1.0, 2.0])


def test_stitch_rejects_channels_first():
    with pytest.raises(ValueError, match="channels-last"):
        common.stitch(np.zeros((2, 1, 8, 8), np.complex64), np.zeros((2, 1, 2, 1)))


def test_figures_scale_to_the_covered_region_and_never_touch_pyplot(tmp_path):
    import subprocess
    import sys

    obj = np.zeros((16, 16), np.complex64)
    obj[4:12, 4:12] = 0.5 + 0.25 * np.exp(1j * np.linspace(0, 1, 64)).reshape(8, 8)
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    lo, hi = common.colour_limits(np.abs(obj), mask)
    assert lo > 0.5 and hi < 0.76  # the zero border does not stretch the scale
    assert common.colour_limits(np.abs(obj)) == (0.0, pytest.approx(hi))
    files = common.save_reconstruction(tmp_path, obj, mask=mask, truth=obj * np.exp(0.3j))
    assert files["comparison_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # in a fresh process: writing every figure imports neither pyplot nor a backend switch
    code = (
        "import sys, numpy as np; from ptycho.workflows import common; from ptycho import simulate; "
        "common.save_reconstruction(sys.argv[1], np.ones((16, 16), np.complex64), mask=np.ones((16, 16), bool), "
        "truth=np.ones((16, 16), np.complex64)); common.plot_history_png({'a': [1.0, 2.0]}, sys.argv[1] + '/h.png'); "
        "simulate.write_preview(simulate.simulate_dataset(N=16, n_positions=4, seed=1), sys.argv[1] + '/p.png'); "
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_evaluation_helpers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 10))
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    truth = np.exp(1j * rng.normal(size=(6, 6))).astype(np.complex64)
    np.testing.assert_allclose(remove_global_phase(truth * np.exp(0.7j), truth), truth, atol=1e-5)
    obj = (np.arange(64 * 64).reshape(64, 64) % 7 + 1j).astype(np.complex64)
    g = np.array([[[[30.0], [20.0]]], [[[34.0], [20.0]]]])
    win = ground_truth_canvas(obj, g, 8)
    np.testing.assert_allclose(win, obj[16:24, 28:36])  # centred on (x, y) = (32, 20)
    mask = coverage_mask(g, N=16, M=4)
    assert mask.dtype == bool and mask.sum() == 4 * 8  # two 4x4 crops, 4 px apart in x


def test_outputs(tmp_path):
    hist = {"loss": [3.0, 2.0, 1.5], "val_loss": [3.5, 2.5, 2.0]}
    p = common.write_history_csv(hist, tmp_path / "history.csv")
    rows = list(csv.reader(open(p)))
    assert rows[0] == ["epoch", "loss", "val_loss"] and rows[3] == ["3", "1.5", "2.0"]
    png = common.plot_history_png(hist, tmp_path / "history.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    obj = np.exp(1j * np.linspace(0, 1, 100)).reshape(10, 10, 1).astype(np.complex64)
    files = common.save_reconstruction(tmp_path / "inf", obj, metadata={"M": 20})
    data = np.load(files["npz"])
    np.testing.assert_allclose(data["amplitude"], 1.0, rtol=1e-6)
    assert data["object"].shape == (10, 10) and int(data["M"]) == 20
    assert files["phase_png"].stat().st_size > 1000
    assert "comparison_png" not in files  # no truth, no comparison
    written = common.save_outputs(np.ones((4, 4)), np.zeros((4, 4)), {}, tmp_path / "o")
    assert [w.name for w in written] == ["reconstructed_amplitude.png", "reconstructed_phase.png"]
    assert common.save_outputs(None, None, {}, tmp_path / "none") == []

"""The common phase tilt fitted to the measured patterns (``ptycho.common_tilt``, specs/physics.md §21).

Independent of the module's own arithmetic: the direction of a tilt is pinned against NumPy's FFT
(a tilt of 2 pi / N rad/px rolls the textbook far field by exactly one pixel), and the fit is judged
on the simulator's true object, with and without a planted tilt, at gridsize 1 and 2.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.common_tilt import MAX_TILT_PX_SHIFT, apply_tilt, exit_waves, fit_common_tilt, fit_groups, tilt_nll
from ptycho.config.config import ModelConfig, TrainingConfig
from ptycho.reference.physics import object_patches
from ptycho.simulate import simulate_dataset
from ptycho.workflows.common import create_ptycho_data_container, fit_tilt, with_fitted_tilt


@pytest.fixture(scope="module")
def data():
    return simulate_dataset(N=32, n_positions=160, scan_spacing=3.5, seed=3)


def _container(raw, gridsize):
    config = TrainingConfig(model=ModelConfig(N=32, gridsize=gridsize), n_groups=160, subsample_seed=1)
    return create_ptycho_data_container(raw, config)


def _true_objects(raw, container):
    """The true object cut around every group's centroid: what a perfect network would predict."""
    g = np.asarray(container.global_offsets, np.float64).reshape(-1, 2)
    return object_patches(raw.objectGuess.astype(np.complex64), g, 32)[..., None]


def _fit(raw, container, objects, bad_pixels=None, amplitudes=None):
    return fit_common_tilt(objects, container.X if amplitudes is None else amplitudes, container.coords_nominal,
                           raw.probeGuess, bad_pixels=bad_pixels)


def test_a_tilt_of_one_cycle_per_field_rolls_the_textbook_far_field_by_one_pixel():
    rng = np.random.default_rng(0)
    N = 16
    psi = (rng.normal(size=(N, N)) + 1j * rng.normal(size=(N, N))).astype(np.complex64)
    for tau, axis in (((2 * np.pi / N, 0.0), 1), ((0.0, 2 * np.pi / N), 0)):
        tilted = apply_tilt(psi[None, :, :, None], tau)[0, :, :, 0]
        far = np.abs(np.fft.fftshift(np.fft.fft2(psi)))
        far_tilted = np.abs(np.fft.fftshift(np.fft.fft2(tilted)))
        np.testing.assert_allclose(far_tilted, np.roll(far, 1, axis=axis), rtol=1e-4, atol=1e-4)


def test_the_ramp_is_centred_so_crops_of_tilted_objects_are_tilted_crops():
    rng = np.random.default_rng(1)
    obj = (rng.normal(size=(3, 32, 32, 1)) + 1j * rng.normal(size=(3, 32, 32, 1))).astype(np.complex64)
    tau = (0.013, -0.021)
    np.testing.assert_allclose(apply_tilt(obj, tau)[:, 8:24, 8:24], apply_tilt(obj[:, 8:24, 8:24], tau), atol=2e-6)
    np.testing.assert_allclose(apply_tilt(obj, tau)[:, 16, 16], obj[:, 16, 16], atol=1e-6)  # the centre keeps its phase


@pytest.mark.parametrize("gridsize", [1, 2])
def test_the_true_object_needs_no_tilt_and_a_planted_one_is_found(data, gridsize):
    container = _container(data, gridsize)
    truth = _true_objects(data, container)
    assert np.all(np.abs(_fit(data, container, truth)) < 3e-4)  # rad/px: 0.0015 px of pattern shift
    planted = np.array([0.004, -0.003])  # the size of the README demo networks' common tilt
    found = _fit(data, container, apply_tilt(truth, planted))
    np.testing.assert_allclose(found, -planted, atol=3e-4)


def test_the_fit_is_the_minimum_of_the_likelihood_and_ignores_bad_pixels(data):
    container = _container(data, 2)
    objects = apply_tilt(_true_objects(data, container), (0.003, 0.002))
    tau = _fit(data, container, objects)
    psi = exit_waves(objects, container.coords_nominal, data.probeGuess, probe_mask=False,
                     gaussian_smoothing_sigma=0.0)
    intensity = np.asarray(container.X, np.float64) ** 2
    best = tilt_nll(psi, intensity, tau)
    for step in ((2e-4, 0), (-2e-4, 0), (0, 2e-4), (0, -2e-4)):
        assert tilt_nll(psi, intensity, tau + np.array(step)) > best
    bad = np.zeros((32, 32), bool)
    bad[14:18, 20:23] = True  # a dead block right of the centre, where a tilt moves the intensity
    corrupted = np.array(container.X, copy=True)
    corrupted[:, bad, :] = 50.0 * corrupted.max()
    np.testing.assert_allclose(_fit(data, container, objects, bad, corrupted), tau, atol=2e-4)


def test_the_fast_likelihood_is_the_reference_poisson_nll(data):
    """The fit's likelihood (unshifted complex64 FFTs, closed-form scale) against the definition written with
    the reference's ``diffract_channels`` and ``poisson_nll``'s formula: equal up to a constant."""
    from ptycho.reference.physics import diffract_channels

    container = _container(data, 2)
    objects = _true_objects(data, container)
    psi = exit_waves(objects, container.coords_nominal, data.probeGuess, probe_mask=False,
                     gaussian_smoothing_sigma=0.0)
    intensity = np.asarray(container.X, np.float64) ** 2
    bad = np.zeros((32, 32), bool)
    bad[3:6, 20:25] = True
    good = ~bad

    def reference(tau):
        pred = diffract_channels(psi * _plane(tau)[None, :, :, None]).astype(np.float64) ** 2
        pred, meas = pred * good[None, :, :, None], intensity * good[None, :, :, None]
        pred *= meas.sum() / pred.sum()
        return float((pred - meas * np.log(pred + 1e-300)).sum())

    taus = [(0.0, 0.0), (0.004, -0.002), (-0.006, 0.003)]
    fast = [tilt_nll(psi, intensity, t, good) for t in taus]
    ref = [reference(t) for t in taus]
    for k in (1, 2):
        assert abs(ref[k] - ref[0]) > 1.0  # a real difference to compare
        np.testing.assert_allclose(fast[k] - fast[0], ref[k] - ref[0], rtol=2e-3)


def _plane(tau, N=32):
    rows, cols = np.mgrid[0:N, 0:N] - N / 2
    return np.exp(1j * (tau[0] * cols + tau[1] * rows))


def test_the_workflow_fit_reads_the_container_and_streams_the_same_groups(data, monkeypatch):
    from ptycho import params

    monkeypatch.delitem(params.cfg, "probe", raising=False)  # no model loaded: the container's probe
    monkeypatch.setitem(params.cfg, "probe.mask", False)
    monkeypatch.setitem(params.cfg, "gaussian_smoothing_sigma", 0.0)
    container = _container(data, 2)
    truth = _true_objects(data, container)
    tilted, tau = with_fitted_tilt(apply_tilt(truth, (-0.005, 0.001)), container)
    np.testing.assert_allclose(tau, (0.005, -0.001), atol=3e-4)
    np.testing.assert_allclose(tilted, apply_tilt(apply_tilt(truth, (-0.005, 0.001)), tau), atol=1e-6)
    groups = fit_groups(len(container), max_groups=40)
    assert len(groups) == 40 and groups[0] == 0 and groups[-1] == len(container) - 1
    np.testing.assert_array_equal(fit_tilt(truth[groups], container, groups), _fit(
        data, _Subset(container, groups), truth[groups]))
    with pytest.raises(ValueError, match="objects for a container"):
        fit_tilt(truth[:5], container)


class _Subset:
    def __init__(self, container, rows):
        self.X = np.asarray(container.X)[rows]
        self.coords_nominal = np.asarray(container.coords_nominal)[rows]


def test_the_search_is_bounded_to_half_a_pixel_of_pattern_shift(data):
    container = _container(data, 1)
    truth = _true_objects(data, container)
    bound = 2 * np.pi * MAX_TILT_PX_SHIFT / 32
    found = _fit(data, container, apply_tilt(truth, (3 * bound, 0.0)))
    assert np.all(np.abs(found) <= bound + 1e-12)

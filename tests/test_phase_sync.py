"""Phase synchronisation of per-group objects (ptycho.phase_sync): known offsets are recovered.

The oracle is closed-form: crops of one true object, each multiplied by a known constant phase
``exp(i c_k)`` (what a single-pattern reconstruction is free to return), must come back with offsets
``c_k`` up to one global constant, and stitch to the true object's phase.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.phase_sync import align_group_phases, group_phase_offsets
from ptycho.reference.physics import object_patches
from ptycho.workflows.common import stitch

N, M = 32, 16


def _object(seed: int = 0, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    low = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.04**2))  # smooth random texture
    a = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) * low))
    p = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) * low))
    a = 0.5 + 0.5 * (a - a.min()) / np.ptp(a)
    p = -1.0 + 2.0 * (p - p.min()) / np.ptp(p)
    return (a * np.exp(1j * p)).astype(np.complex64)


def _groups(obj: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return object_patches(obj, xy, N)[..., None]


def _grid(step: float, n: int = 6, origin: float = 40.0) -> np.ndarray:
    g = origin + step * np.arange(n)
    return np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)  # (x, y)


def _circular_spread(d: np.ndarray) -> float:
    d = np.angle(np.exp(1j * (d - np.angle(np.mean(np.exp(1j * d))))))
    return float(np.max(np.abs(d)))


@pytest.mark.parametrize("step", [5.0, 7.3])  # whole-pixel and fractional spacing
def test_known_offsets_are_recovered_up_to_one_global_phase(step):
    truth = _object()
    xy = _grid(step)
    crops = _groups(truth, xy)
    c = np.random.default_rng(1).uniform(-np.pi, np.pi, len(xy))
    theta = group_phase_offsets(crops * np.exp(1j * c)[:, None, None, None], xy, M)
    # whole-pixel overlaps of a fractional grid misregister by up to half a pixel: on this texture (phase
    # range 2 rad, correlation length ~4 px) that leaves at most 0.051 rad; exact shifts leave rounding only
    assert _circular_spread(theta - c) < (1e-5 if step == 5.0 else 0.1)


def test_aligned_groups_stitch_to_the_true_phase_and_the_raw_ones_do_not():
    truth = _object(2)
    xy = _grid(5.0)
    crops = _groups(truth, xy)
    scrambled = crops * np.exp(1j * np.random.default_rng(3).uniform(-1.5, 1.5, len(xy)))[:, None, None, None]
    ref = stitch(crops, xy, M, align_phases=False)[2][..., 0]
    covered = np.abs(stitch(np.ones_like(crops), xy, M, align_phases=False)[2][..., 0]) > 0.5
    aligned = stitch(scrambled, xy, M)[2][..., 0]  # common.stitch aligns by default
    raw = stitch(scrambled, xy, M, align_phases=False)[2][..., 0]
    g = np.angle(np.sum(aligned[covered] * np.conj(ref[covered])))  # the one unobservable global phase
    np.testing.assert_allclose(aligned[covered] * np.exp(-1j * g), ref[covered], atol=1e-4)
    assert np.max(np.abs(np.abs(raw[covered]) - np.abs(ref[covered]))) > 0.05  # averaging offsets blurs


def test_consistent_groups_are_left_as_they_are():
    xy = _grid(6.0)
    crops = _groups(_object(4), xy)
    aligned, theta = align_group_phases(crops, xy.reshape(-1, 1, 2, 1), M)
    assert np.max(np.abs(theta)) < 1e-5
    np.testing.assert_allclose(aligned, crops, atol=1e-5)
    assert aligned.dtype == crops.dtype


def test_separate_components_are_aligned_separately_and_a_lonely_group_is_untouched():
    truth = _object(5, size=256)
    a, b = _grid(5.0, n=3, origin=40.0), _grid(5.0, n=3, origin=160.0)  # two islands, no shared pixel
    xy = np.concatenate([a, b, [[100.0, 220.0]]])
    c = np.random.default_rng(6).uniform(-np.pi, np.pi, len(xy))
    theta = group_phase_offsets(_groups(truth, xy) * np.exp(1j * c)[:, None, None, None], xy, M)
    assert _circular_spread(theta[:9] - c[:9]) < 1e-5 and _circular_spread(theta[9:18] - c[9:18]) < 1e-5
    for part in (theta[:9], theta[9:18]):  # each island keeps its mean phase (the gauge)
        assert abs(np.angle(np.mean(np.exp(1j * part)))) < 1e-6
    assert theta[18] == 0.0


def test_deterministic_and_one_group_is_a_no_op():
    xy = _grid(5.0)
    crops = _groups(_object(7), xy) * np.exp(1j * np.linspace(0, 3, 36))[:, None, None, None]
    assert np.array_equal(group_phase_offsets(crops, xy, M), group_phase_offsets(crops.copy(), xy.copy(), M))
    one, theta = align_group_phases(crops[:1], xy[:1], M)
    assert theta.tolist() == [0.0] and np.array_equal(one, crops[:1])


@pytest.mark.parametrize(("obj_shape", "xy_shape", "m", "match"), [
    ((4, N, N), (4, 2), M, "channels-last"),
    ((4, N, N, 1), (4, 3), M, "global_offsets"),
    ((4, N, N, 1), (3, 2), M, "global_offsets"),
    ((4, N, N, 1), (4, 2), 15, "even"),
    ((4, N, N, 1), (4, 2), 2 * N, "even"),
])
def test_malformed_inputs_are_refused(obj_shape, xy_shape, m, match):
    with pytest.raises(ValueError, match=match):
        group_phase_offsets(np.ones(obj_shape, np.complex64), np.zeros(xy_shape), m)


def test_the_sparse_solver_for_large_scans_agrees_with_the_dense_one(monkeypatch):
    import ptycho.phase_sync as ps

    xy = _grid(5.0, n=8)
    c = np.random.default_rng(8).uniform(-np.pi, np.pi, len(xy))
    crops = _groups(_object(9, size=160), xy) * np.exp(1j * c)[:, None, None, None]
    dense = group_phase_offsets(crops, xy, M)
    monkeypatch.setattr(ps, "DENSE_LIMIT", 10)  # 64 groups: ARPACK, as for a scan of more than 2000 groups
    sparse = group_phase_offsets(crops, xy, M)
    assert _circular_spread(sparse - c) < 1e-5
    np.testing.assert_allclose(np.angle(np.exp(1j * (sparse - dense))), 0.0, atol=1e-6)


def _mean_gradient(image: np.ndarray) -> tuple[float, float]:
    """(x, y) rad/px: angle of sum O(r + e) conj O(r) along columns and rows (no unwrapping)."""
    return (float(np.angle(np.sum(image[:, 1:] * np.conj(image[:, :-1])))),
            float(np.angle(np.sum(image[1:, :] * np.conj(image[:-1, :])))))


def test_a_tilt_common_to_all_groups_becomes_a_ramp_over_the_field():
    """The limit of specs/physics.md §21: overlaps cannot see a tilt every group shares, so
    synchronisation turns it into a ramp over the whole field (only the patterns' sub-pixel shifts
    carry it).  Stitching keeps that ramp: removing every ramp would also remove the sample's own."""
    truth = _object(11)
    xy = _grid(5.0)
    crops = _groups(truth, xy)
    r = np.arange(N) - N / 2
    tau = (0.006, -0.004)  # rad/px, (x, y): the size measured on the README demo
    tilt = np.exp(1j * (tau[0] * r[None, :] + tau[1] * r[:, None]))[None, :, :, None]
    c = np.random.default_rng(12).uniform(-np.pi, np.pi, len(xy))[:, None, None, None]
    ref = stitch(crops, xy, M, align_phases=False)[2][..., 0]
    covered = np.abs(stitch(np.ones_like(crops), xy, M, align_phases=False)[2][..., 0]) > 0.5
    synced = stitch(crops * tilt * np.exp(1j * c), xy, M)[2][..., 0]
    ramp = np.subtract(_mean_gradient(np.where(covered, synced, 0)), _mean_gradient(np.where(covered, ref, 0)))
    assert ramp == pytest.approx(tau, abs=2e-4)

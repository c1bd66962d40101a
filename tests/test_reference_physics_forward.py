"""Reference physics: losses, intensity scale, the composed forward model, and position stitching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given
from hypothesis import strategies as st

from ptycho.conventions import REASSEMBLY_NORM_EPS, STITCH_NORM_EPS, padded_size
from ptycho.errors import ConfigError
from ptycho.reference import physics as ph


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


# =========================================================================== losses and scale
def test_poisson_nll_hand_computation():
    y_true = np.array([[1.0, 2.0], [0.0, 3.0]])
    y_pred = np.array([[2.0, 1.0], [0.5, 3.0]])
    terms = [2 - 1 * math.log(2), 1 - 2 * math.log(1), 0.5 - 0, 3 - 3 * math.log(3)]
    assert ph.poisson_nll(y_true, y_pred) == pytest.approx(sum(terms) / 4, rel=1e-12)


def test_masked_losses_leave_bad_pixels_out():
    rng = np.random.default_rng(0)
    yt = rng.uniform(0, 5, (3, 4, 4, 2))
    yp = rng.uniform(0.1, 5, (3, 4, 4, 2))
    bad = np.zeros((4, 4), bool)
    bad[1, 2] = bad[3, 0] = True
    good = ~bad
    # the rule: the mean over the elements on good pixels
    terms = yp - yt * np.log(yp)
    assert ph.poisson_nll(yt, yp, bad) == pytest.approx(terms[:, good, :].mean(), rel=1e-12)
    assert ph.mean_absolute_error(yt, yp, bad) == pytest.approx(np.abs(yt - yp)[:, good, :].mean(), rel=1e-12)
    # anything at the bad pixels is ignored; no mask = the plain mean
    yp2, yt2 = yp.copy(), yt.copy()
    yp2[:, bad, :], yt2[:, bad, :] = 1e6, 0.0
    assert ph.poisson_nll(yt2, yp2, bad) == pytest.approx(ph.poisson_nll(yt, yp, bad), rel=1e-12)
    assert ph.masked_mean(terms, None) == pytest.approx(terms.mean(), rel=1e-12)
    assert ph.poisson_nll(yt, yp, np.zeros((4, 4), bool)) == pytest.approx(ph.poisson_nll(yt, yp), rel=1e-12)
    with pytest.raises(ValueError, match="bad_pixels has shape"):
        ph.masked_mean(terms, np.zeros((3, 3), bool))


def test_normalize_x_full_counts_only_good_pixels():
    rng = np.random.default_rng(1)
    d = rng.uniform(0, 3, (5, 8, 8, 1))
    bad = np.zeros((8, 8), bool)
    bad[0, :3] = True
    hot = d.copy()
    hot[:, bad, :] = 1e5
    x, norm = ph.normalize_x_full(hot, bad)
    assert norm == pytest.approx(ph.normalize_x_full(d * (~bad)[None, :, :, None])[1], rel=1e-12)
    assert np.mean(np.sum((x.astype(np.float64) ** 2) * (~bad)[None, :, :, None], axis=(1, 2))) == pytest.approx(
        16.0, rel=1e-5
    )


@given(y=st.floats(0.01, 1e4), seed=st.integers(0, 999))
def test_poisson_nll_minimum_at_truth(y, seed):
    res = scipy.optimize.minimize_scalar(
        lambda p: ph.poisson_nll(np.array([y]), np.array([p])), bounds=(y / 100, y * 100), method="bounded",
        options={"xatol": 1e-10 * y},
    )
    assert res.x == pytest.approx(y, rel=1e-3)
    rng = np.random.default_rng(seed)
    truth = rng.random((2, 4, 4, 1)) * y + 1e-3
    best = ph.poisson_nll(truth, truth)
    for factor in (0.9, 1.1):
        assert ph.poisson_nll(truth, truth * factor) > best


def test_poisson_nll_rejects_nonpositive_prediction():
    with pytest.raises(ValueError, match="> 0"):
        ph.poisson_nll(np.ones(3), np.array([1.0, 0.0, 2.0]))


def test_mean_absolute_error_hand_values():
    assert ph.mean_absolute_error(np.array([1.0, -2.0, 3.0]), np.array([0.0, 0.0, 0.0])) == pytest.approx(2.0)
    assert ph.mean_absolute_error(np.array([3 + 4j]), np.array([0j])) == pytest.approx(5.0)


@given(nphotons=st.floats(1e2, 1e10), N=st.sampled_from([16, 32, 64]), seed=st.integers(0, 999))
def test_intensity_scale_gives_nphotons_per_pattern(nphotons, N, seed):
    rng = np.random.default_rng(seed)
    x, _ = ph.normalize_x_full(rng.random((3, N, N, 1)))
    s = ph.intensity_scale(nphotons, N)
    photons = np.mean(np.sum((s * x.astype(np.float64)) ** 2, axis=(1, 2)))
    assert photons == pytest.approx(nphotons, rel=1e-5)


def test_intensity_scale_upstream_value():
    assert ph.intensity_scale(1e9, 64) == pytest.approx(988.2117, rel=1e-6)


# =========================================================================== forward_physics
@given(
    gridsize=st.integers(1, 3),
    object_big=st.booleans(),
    probe_mask=st.booleans(),
    sigma=st.sampled_from([0.0, 0.7]),
    B=st.integers(1, 3),
    data=st.data(),
)
def test_forward_physics_contract(gridsize, object_big, probe_mask, sigma, B, data):
    N = 8
    C = gridsize**2
    P = padded_size(N, gridsize)
    half = (P - N) // 2
    pos = data.draw(
        st.lists(st.floats(-half, half), min_size=B * 2 * C, max_size=B * 2 * C), label="positions"
    )
    positions = np.asarray(pos).reshape(B, 1, 2, C)
    rng = np.random.default_rng(data.draw(st.integers(0, 999), label="seed"))
    Co = C if object_big else 1
    obj = _complex(rng, (B, N, N, Co))
    probe = ph.normalize_probe(ph.default_probe(N), 4.0)
    log_scale = math.log(3.5)
    out = ph.forward_physics(
        obj, positions, probe, log_scale, N=N, gridsize=gridsize, object_big=object_big,
        probe_mask=probe_mask, gaussian_smoothing_sigma=sigma,
    )
    expected = {
        "padded_object": ((B, P, P, 1), np.complex64),
        "trimmed_object": ((B, N, N, 1), np.complex64),
        "object_patches": ((B, N, N, C), np.complex64),
        "illuminated": ((B, N, N, C), np.complex64),
        "amplitude": ((B, N, N, C), np.float32),
        "pred_amplitude": ((B, N, N, C), np.float32),
        "pred_intensity": ((B, N, N, C), np.float32),
    }
    assert set(out) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert out[key].shape == shape, key
        assert out[key].dtype == dtype, key
    np.testing.assert_array_equal(out["pred_intensity"], out["pred_amplitude"] ** 2)
    np.testing.assert_array_equal(out["amplitude"], ph.diffract_channels(out["illuminated"]))
    np.testing.assert_allclose(out["pred_amplitude"], 3.5 * out["amplitude"], rtol=1e-6)
    # Parseval per pattern
    np.testing.assert_allclose(
        np.sum(out["amplitude"].astype(np.float64) ** 2, axis=(1, 2)),
        np.sum(np.abs(out["illuminated"].astype(np.complex128)) ** 2, axis=(1, 2)),
        rtol=1e-5, atol=1e-6,
    )
    if probe_mask:
        assert np.all(out["illuminated"][:, ph.probe_disk_mask(N) == 0] == 0)
    np.testing.assert_array_equal(out["trimmed_object"], ph.trim(out["padded_object"], N))


def test_forward_physics_gridsize1_zero_offset_hand_model():
    # upstream [verified]: pred_amp = s * sqrt(fftshift(|fft2(P * trimmed)|^2) / N^2),
    # and at gs=1 trimmed = obj / (center_mask + 1e-3)
    rng = np.random.default_rng(8)
    N = 16
    obj = _complex(rng, (2, N, N, 1))
    probe = ph.normalize_probe(ph.default_probe(N), 4.0)
    s = 7.0
    out = ph.forward_physics(
        obj, np.zeros((2, 1, 2, 1)), probe, math.log(s), N=N, gridsize=1, object_big=True,
        probe_mask=False, gaussian_smoothing_sigma=0.0,
    )
    trimmed = obj[..., 0].astype(np.complex128) / (ph.center_mask(N) + REASSEMBLY_NORM_EPS)
    np.testing.assert_allclose(out["trimmed_object"][..., 0], trimmed, rtol=1e-5)
    np.testing.assert_allclose(out["object_patches"][..., 0], trimmed, rtol=1e-5)
    F = np.fft.fft2(probe.astype(np.complex128) * trimmed)
    amp = np.sqrt(np.fft.fftshift(np.abs(F) ** 2, axes=(-2, -1)) / N**2)
    np.testing.assert_allclose(out["pred_amplitude"][..., 0], s * amp, rtol=1e-4, atol=1e-3 * s * amp.max())


def test_forward_physics_object_small_pads_without_translation():
    rng = np.random.default_rng(9)
    N, gs = 8, 2
    P = padded_size(N, gs)
    obj = _complex(rng, (1, N, N, 1))
    positions = np.array([[1.0, -1.0, 0.5, -0.5], [2.0, -2.0, 0.0, 0.0]]).reshape(1, 1, 2, 4)
    out = ph.forward_physics(
        obj, positions, np.ones((N, N), np.complex64), 0.0, N=N, gridsize=gs, object_big=False,
        probe_mask=False, gaussian_smoothing_sigma=0.0,
    )
    s = (P - N) // 2
    np.testing.assert_array_equal(out["padded_object"][0, s : s + N, s : s + N], obj[0])
    np.testing.assert_array_equal(out["trimmed_object"], obj)
    np.testing.assert_array_equal(out["object_patches"], out["illuminated"])


def test_forward_physics_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match="channels"):
        ph.forward_physics(
            np.zeros((1, 8, 8, 1), np.complex64), np.zeros((1, 1, 2, 4)), np.ones((8, 8)), 0.0, N=8,
            gridsize=2, object_big=True, probe_mask=False, gaussian_smoothing_sigma=0.0,
        )


# =========================================================================== reassemble_position
def _stitch_by_definition(obj: np.ndarray, offsets: np.ndarray, M: int) -> np.ndarray:
    """The upstream formula spelled out with pad + translate + sum (no scatter)."""
    n, N = obj.shape[:2]
    crop = obj[:, N // 2 - M // 2 : N // 2 + M // 2, N // 2 - M // 2 : N // 2 + M // 2, 0]
    d = offsets.reshape(n, 2) - offsets.reshape(n, 2).mean(axis=0)
    pad = math.ceil(np.abs(d).max())
    pad += pad % 2
    S = M + 2 * pad
    num = ph.translate(np.pad(crop, ((0, 0), (pad, pad), (pad, pad))), d).astype(np.complex128).sum(0)
    ones = np.pad(np.ones((n, M, M)), ((0, 0), (pad, pad), (pad, pad)))
    den = ph.translate(ones, d).astype(np.float64).sum(0)
    assert num.shape == (S, S)
    return num / (den + STITCH_NORM_EPS)


@given(n=st.integers(1, 12), M=st.sampled_from([2, 4, 8]), data=st.data(), seed=st.integers(0, 999))
def test_reassemble_position_matches_pad_translate_sum_definition(n, M, data, seed):
    N = 8
    rng = np.random.default_rng(seed)
    obj = _complex(rng, (n, N, N, 1))
    offsets = np.asarray(
        data.draw(st.lists(st.floats(0, 40), min_size=2 * n, max_size=2 * n), label="offsets")
    ).reshape(n, 1, 2, 1)
    out = ph.reassemble_position(obj, offsets, M=M)
    assert out.dtype == np.complex64 and out.ndim == 3 and out.shape[2] == 1
    np.testing.assert_allclose(out[..., 0], _stitch_by_definition(obj, offsets, M), rtol=1e-5, atol=1e-5)


def test_reassemble_position_delta_lands_at_global_offset():
    N, M = 16, 8
    offsets = np.array([[30.0, 50.0], [10.0, 20.0], [14.0, 26.0]])  # (x, y)
    obj = np.zeros((3, N, N, 1), np.complex64)
    obj[0, N // 2, N // 2, 0] = 2 - 1j  # patch 0 centre = object point (x=30, y=50)
    out = ph.reassemble_position(obj, offsets.reshape(3, 1, 2, 1), M=M)[..., 0]
    mean_x, mean_y = offsets.mean(axis=0)
    d = offsets - offsets.mean(axis=0)
    pad = math.ceil(np.abs(d).max())
    pad += pad % 2
    assert out.shape == (M + 2 * pad, M + 2 * pad)
    # canvas (i, j) shows object (y = mean_y + i - (M/2 + pad), x = mean_x + j - (M/2 + pad))
    i = 50 - mean_y + M // 2 + pad
    j = 30 - mean_x + M // 2 + pad
    assert float(i).is_integer() and float(j).is_integer()
    nz = np.argwhere(np.abs(out) > 1e-6)
    assert nz.tolist() == [[int(i), int(j)]]
    assert out[int(i), int(j)] == pytest.approx(2 - 1j, rel=1e-6)


@given(n=st.integers(2, 10), data=st.data())
def test_reassemble_position_normalises_overlaps(n, data):
    N, M = 8, 4
    offsets = np.asarray(
        data.draw(st.lists(st.floats(0, 6), min_size=2 * n, max_size=2 * n), label="offsets")
    ).reshape(n, 1, 2, 1)
    value = 1.5 - 0.5j
    out = ph.reassemble_position(np.full((n, N, N, 1), value, np.complex64), offsets, M=M)[..., 0]
    count = ph.reassemble_position(np.ones((n, N, N, 1), np.complex64), offsets, M=M)[..., 0]
    # count = den / (den + STITCH_NORM_EPS): ~1 wherever a patch reaches, 0 where none does
    assert np.all((count.real >= 0) & (count.real <= 1 + 1e-6)) and np.all(count.imag == 0)
    assert np.any(count.real > 0.999)
    # the overlap average of a constant is that constant (times the same eps factor)
    np.testing.assert_allclose(out, value * count, rtol=1e-5, atol=1e-6)


@given(n=st.integers(2, 8), data=st.data())
def test_reassemble_position_reproduces_a_linear_object(n, data):
    # patches cut from a global linear field at offsets whose deviations from the mean are integers
    N, M = 16, 8
    e = data.draw(st.lists(st.tuples(st.integers(-6, 6), st.integers(-6, 6)), min_size=n - 1, max_size=n - 1))
    e = np.array([*e, (0, 0)], dtype=float)
    e[-1] = -e[:-1].sum(axis=0)
    base = np.array([data.draw(st.floats(20, 40)), data.draw(st.floats(20, 40))])
    offsets = base + e  # (x, y)
    a, b, c = 0.3, 0.02, -0.05

    def field(y, x):
        return a + b * y + 1j * c * x

    grid = np.arange(N) - N // 2
    obj = np.stack([field(oy + grid[:, None], ox + grid[None, :]) for ox, oy in offsets])[..., None]
    out = ph.reassemble_position(obj.astype(np.complex64), offsets.reshape(n, 1, 2, 1), M=M)[..., 0]
    S = out.shape[0]
    pad = (S - M) // 2
    i, j = np.mgrid[0:S, 0:S]
    truth = field(base[1] + i - (M // 2 + pad), base[0] + j - (M // 2 + pad))
    count = ph.reassemble_position(np.ones((n, N, N, 1), np.complex64), offsets.reshape(n, 1, 2, 1), M=M)
    covered = np.abs(count[..., 0]) > 0.5
    np.testing.assert_allclose(out[covered], truth[covered], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("M", [3, 0, 20])
def test_reassemble_position_rejects_bad_M(M):
    with pytest.raises(ConfigError, match="M="):
        ph.reassemble_position(np.zeros((2, 16, 16, 1), np.complex64), np.zeros((2, 1, 2, 1)), M=M)


def test_forward_physics_refuses_positions_of_another_channel_count_even_without_reassembly():
    # object_big=False never reassembles, but extraction would quietly make 5 channels of a gridsize-2 call
    N, B = 16, 2
    obj = np.ones((B, N, N, 1), np.complex64)
    probe = np.ones((N, N), np.complex64)
    bad = np.zeros((B, 1, 2, 5))
    with pytest.raises(ValueError, match="positions must have shape"):
        ph.forward_physics(obj, bad, probe, 0.0, N=N, gridsize=2, object_big=False, probe_mask=False,
                           gaussian_smoothing_sigma=0.0)


@pytest.mark.parametrize("shape", [(2, 1, 2, 1), (2, 2), (2, 1, 1, 2)])
def test_reassemble_position_takes_one_xy_pair_per_group(shape):
    obj = np.ones((2, 8, 8, 1), np.complex64)
    out = ph.reassemble_position(obj, np.arange(4.0).reshape(shape), M=4)
    assert out.ndim == 3 and out.shape[-1] == 1


@pytest.mark.parametrize("shape", [(1, 1, 1, 2, 1), (1, 2, 1)])
def test_reassemble_position_refuses_a_layout_that_only_has_the_right_size(shape):
    # one group: an extra or a dropped axis still holds 2 numbers, which a size check alone accepted
    with pytest.raises(ValueError, match="global_offsets must have shape"):
        ph.reassemble_position(np.ones((1, 8, 8, 1), np.complex64), np.zeros(shape), M=4)

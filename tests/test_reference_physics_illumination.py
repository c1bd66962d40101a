"""Reference physics: probe (default, disk mask, normalisation), Gaussian smoothing, illumination."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
from hypothesis import given
from hypothesis import strategies as st

from ptycho.errors import ConfigError
from ptycho.reference import physics as ph


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


# =========================================================================== probe
@pytest.mark.parametrize("N", [8, 16, 33, 64])
def test_probe_disk_mask_matches_explicit_distance_loop(N):
    m = ph.probe_disk_mask(N)
    assert m.dtype == np.float32 and m.shape == (N, N)
    centre = N // 2 - 0.5
    expected = [
        [1.0 if math.hypot(r - centre, c - centre) < N // 4 else 0.0 for c in range(N)] for r in range(N)
    ]
    np.testing.assert_array_equal(m, np.array(expected))


@pytest.mark.parametrize("N", [16, 64])
def test_probe_disk_mask_centred_between_pixels(N):
    m = ph.probe_disk_mask(N)
    np.testing.assert_array_equal(m, m[::-1, ::-1])
    assert m[N // 2, N // 2 + N // 4 - 1] == 1 and m[N // 2, N // 2 + N // 4] == 0
    assert m.sum() == pytest.approx(math.pi * (N // 4) ** 2, rel=0.05)


def test_default_probe_matches_upstream_numbers():
    p = ph.default_probe(64)
    assert p.dtype == np.complex64 and p.shape == (64, 64)
    assert np.all(p.imag == 0) and np.all(p.real > 0)
    # the disk has 376 pixels at N=64 and gaussian_filter keeps the sum (the disk is far from the edges)
    assert float(np.sum(p.real.astype(np.float64))) == pytest.approx(376.0, abs=1e-3)
    # centred at (N-1)/2
    np.testing.assert_allclose(p, p[::-1, ::-1], atol=1e-7)
    # upstream set_probe: norm 0.3672 / max 2.72 (probe_scale 4); max 1.09 (probe_scale 10)
    disk_mean = np.mean(np.abs(ph.probe_disk_mask(64) * p))
    assert 4 * disk_mean == pytest.approx(0.3672, abs=1e-4)
    assert np.abs(ph.normalize_probe(p, 4.0)).max() == pytest.approx(2.72, abs=0.005)
    assert np.abs(ph.normalize_probe(p, 10.0)).max() == pytest.approx(1.09, abs=0.005)


@given(
    N=st.sampled_from([8, 16, 32]),
    probe_scale=st.floats(0.1, 20.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_normalize_probe_mean_abs_in_disk(N, probe_scale, seed):
    rng = np.random.default_rng(seed)
    probe = _complex(rng, (N, N))
    P = ph.normalize_probe(probe, probe_scale)
    assert P.dtype == np.complex64 and P.shape == (N, N)
    disk = ph.probe_disk_mask(N)
    assert np.mean(np.abs(disk * P.astype(np.complex128))) == pytest.approx(1 / probe_scale, rel=1e-5)
    # a positive real rescaling: phase unchanged
    ratio = P.astype(np.complex128) / probe
    np.testing.assert_allclose(ratio.imag, 0, atol=1e-4 * np.abs(ratio).max())
    assert np.all(ratio.real > 0)


def test_normalize_probe_ignores_values_outside_disk():
    rng = np.random.default_rng(0)
    probe = _complex(rng, (16, 16))
    louder = probe.copy()
    louder[ph.probe_disk_mask(16) == 0] *= 100
    a = ph.normalize_probe(probe, 4.0)
    b = ph.normalize_probe(louder, 4.0)
    inside = ph.probe_disk_mask(16) == 1
    np.testing.assert_allclose(a[inside], b[inside], rtol=1e-6)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_normalize_probe_rejects_bad_scale(scale):
    with pytest.raises(ConfigError, match="probe_scale"):
        ph.normalize_probe(np.ones((8, 8)), scale)


def test_normalize_probe_rejects_zero_probe_and_wrong_shape():
    with pytest.raises(ValueError, match="nonzero"):
        ph.normalize_probe(np.zeros((8, 8)), 4.0)
    with pytest.raises(ValueError, match=r"\[N, N\]"):
        ph.normalize_probe(np.ones((8, 8, 1)), 4.0)


# =========================================================================== smoothing
@given(
    B=st.integers(1, 3),
    N=st.integers(2, 16),
    C=st.sampled_from([1, 4]),
    sigma=st.floats(0.05, 5.0),
    value=st.complex_numbers(max_magnitude=100),
)
def test_gaussian_smoothing_preserves_constant_image(B, N, C, sigma, value):
    img = np.full((B, N, N, C), value, np.complex64)
    out = ph.gaussian_smooth3x3(img, sigma)
    assert out.dtype == np.complex64 and out.shape == img.shape
    np.testing.assert_allclose(out, img, rtol=1e-5, atol=1e-5)
    assert np.mean(out) == pytest.approx(np.mean(img), rel=1e-5, abs=1e-5)


@given(B=st.integers(1, 2), N=st.integers(2, 10), seed=st.integers(0, 999))
def test_gaussian_smoothing_sigma_zero_is_identity(B, N, seed):
    rng = np.random.default_rng(seed)
    img = _complex(rng, (B, N, N, 2))
    np.testing.assert_array_equal(ph.gaussian_smooth3x3(img, 0.0), img)
    real = img.real.copy()
    out = ph.gaussian_smooth3x3(real, 0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, real)


@given(N=st.integers(3, 12), sigma=st.floats(0.1, 3.0), seed=st.integers(0, 999))
def test_gaussian_smoothing_matches_scipy_mirror_correlation(N, sigma, seed):
    rng = np.random.default_rng(seed)
    img = _complex(rng, (2, N, N, 3))
    out = ph.gaussian_smooth3x3(img, sigma)
    taps = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * sigma**2))
    k2 = np.outer(taps, taps) / taps.sum() ** 2
    for part, got in ((img.real, out.real), (img.imag, out.imag)):
        ref = scipy.ndimage.correlate(part.astype(np.float64), k2[None, :, :, None], mode="mirror")
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_gaussian_smoothing_kernel_hand_values_and_reflect_edge():
    sigma = 1.0
    e = math.exp(-0.5)
    k = np.array([e, 1.0, e]) / (1 + 2 * e)
    np.testing.assert_allclose(ph.gaussian_kernel3(sigma), k)
    img = np.zeros((1, 6, 6, 1))
    img[0, 3, 3, 0] = 1
    np.testing.assert_allclose(ph.gaussian_smooth3x3(img, sigma)[0, 2:5, 2:5, 0], np.outer(k, k), rtol=1e-6)
    # reflect (not symmetric) padding: a delta at row 1 reaches row 0 from both sides
    edge = np.zeros((1, 6, 6, 1))
    edge[0, 1, 3, 0] = 1
    out = ph.gaussian_smooth3x3(edge, sigma)[0, :, 3, 0]
    assert out[0] == pytest.approx((k[0] + k[2]) * k[1], rel=1e-6)


def test_gaussian_smoothing_rejects_negative_sigma():
    with pytest.raises(ConfigError, match="gaussian_smoothing_sigma"):
        ph.gaussian_smooth3x3(np.zeros((1, 4, 4, 1)), -0.5)


# =========================================================================== illumination
@given(B=st.integers(1, 3), C=st.sampled_from([1, 4, 9]), N=st.sampled_from([8, 16]), seed=st.integers(0, 999))
def test_illuminate_is_probe_times_patches(B, C, N, seed):
    rng = np.random.default_rng(seed)
    patches = _complex(rng, (B, N, N, C))
    probe = _complex(rng, (N, N))
    psi = ph.illuminate(patches, probe, probe_mask=False, gaussian_smoothing_sigma=0.0)
    assert psi.dtype == np.complex64 and psi.shape == (B, N, N, C)
    for b in range(B):
        for c in range(C):
            np.testing.assert_allclose(psi[b, :, :, c], probe * patches[b, :, :, c], rtol=1e-6, atol=1e-6)


def test_illuminate_mask_applied_after_smoothing():
    rng = np.random.default_rng(11)
    N = 16
    patches = _complex(rng, (2, N, N, 1))
    probe = np.ones((N, N), np.complex64)
    disk = ph.probe_disk_mask(N).astype(bool)
    psi = ph.illuminate(patches, probe, probe_mask=True, gaussian_smoothing_sigma=1.0)
    assert np.all(psi[:, ~disk] == 0)
    smoothed = ph.gaussian_smooth3x3(patches, 1.0)
    np.testing.assert_allclose(psi[:, disk], smoothed[:, disk], rtol=1e-5, atol=1e-6)
    # smoothing is really applied (differs from the unsmoothed product inside the disk)
    assert not np.allclose(psi[:, disk], patches[:, disk])


def test_illuminate_rejects_probe_of_wrong_size():
    with pytest.raises(ValueError, match="probe"):
        ph.illuminate(np.zeros((1, 8, 8, 1), np.complex64), np.ones((16, 16)), probe_mask=False,
                      gaussian_smoothing_sigma=0.0)


@given(seed=st.integers(0, 999))
def test_combine_complex_polar(seed):
    rng = np.random.default_rng(seed)
    amp = rng.random((3, 5)) + 0.1
    phase = rng.uniform(-3.1, 3.1, (3, 5))
    z = ph.combine_complex(amp, phase)
    assert z.dtype == np.complex64
    np.testing.assert_allclose(np.abs(z), amp, rtol=1e-6)
    np.testing.assert_allclose(np.angle(z), phase, atol=1e-6)


def test_gaussian_window_matches_scipy():
    import scipy.signal

    from ptycho.reference.probe import _gaussian_window

    for M, std in [(32, 1.7), (64, 6.48), (65, 3.0), (128, 12.97)]:
        np.testing.assert_allclose(_gaussian_window(M, std), scipy.signal.windows.gaussian(M, std, sym=True),
                                   rtol=1e-14, atol=0)

"""Reference physics: X_full normalisation, object patches (ground-truth Y) and diffraction.

Each op is checked against an independent property, never against itself.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho.conventions import x_full_target_energy
from ptycho.errors import DataContractError
from ptycho.reference import physics as ph


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_reference_imports_no_framework():
    code = (
        "import sys, ptycho.reference.physics, ptycho.reference.probe;"
        "assert 'tensorflow' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- normalize_x_full
@given(
    B=st.integers(1, 5),
    N=st.sampled_from([8, 16, 32]),
    C=st.sampled_from([1, 4, 9]),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-3, 1e4),
)
def test_normalize_x_full_mean_energy(B, N, C, seed, scale):
    rng = np.random.default_rng(seed)
    d = (scale * rng.random((B, N, N, C))).astype(np.float32)
    x, norm = ph.normalize_x_full(d)
    assert x.dtype == np.float32 and x.shape == d.shape
    assert isinstance(norm, float)
    energy = np.mean(np.sum(x.astype(np.float64) ** 2, axis=(1, 2)))
    assert energy == pytest.approx((N / 2) ** 2, rel=1e-5)
    assert energy == pytest.approx(x_full_target_energy(N), rel=1e-5)
    np.testing.assert_allclose(x, norm * d.astype(np.float64), rtol=1e-6)


def test_normalize_x_full_hand_value():
    # one pattern of 4x4 ones: energy 16, target (4/2)**2 = 4 -> norm 0.5
    x, norm = ph.normalize_x_full(np.ones((1, 4, 4, 1), np.float32))
    assert norm == 0.5
    np.testing.assert_array_equal(x, np.full((1, 4, 4, 1), 0.5, np.float32))


def test_normalize_x_full_mean_over_channels_not_per_channel():
    # channel 0 has energy 4x channel 1: the norm is common, so the ratio survives
    d = np.ones((1, 4, 4, 2))
    d[..., 0] = 2.0
    x, _ = ph.normalize_x_full(d)
    e = np.sum(x.astype(np.float64) ** 2, axis=(1, 2))[0]
    assert e[0] / e[1] == pytest.approx(4.0)
    assert e.mean() == pytest.approx(4.0)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, 4, 4, 1)), np.ones((4, 4, 1)), np.ones((1, 4, 5, 1)), np.full((1, 4, 4, 1), np.nan)],
)
def test_normalize_x_full_rejects_bad_input(bad):
    with pytest.raises(DataContractError, match="diffraction"):
        ph.normalize_x_full(bad)


# --------------------------------------------------------------------------- object_patches
@given(
    N=st.sampled_from([4, 8, 16]),
    H=st.integers(12, 40),
    W=st.integers(12, 40),
    data=st.data(),
)
def test_object_patches_delta_lands_at_expected_pixel(N, H, W, data):
    y0 = data.draw(st.integers(0, H - 1), label="y0")
    x0 = data.draw(st.integers(0, W - 1), label="x0")
    # integer scan positions whose patch contains the delta
    y = data.draw(st.integers(y0 - N // 2 + 1, y0 + N // 2 - 1), label="y")
    x = data.draw(st.integers(x0 - N // 2 + 1, x0 + N // 2 - 1), label="x")
    obj = np.zeros((H, W), np.complex64)
    obj[y0, x0] = 1 + 2j
    p = ph.object_patches(obj, np.array([[x, y]], float), N)
    assert p.shape == (1, N, N) and p.dtype == np.complex64
    expected = np.zeros((N, N), np.complex64)
    expected[N // 2 + y0 - y, N // 2 + x0 - x] = 1 + 2j
    np.testing.assert_array_equal(p[0], expected)


def test_object_patches_centre_on_scan_position_and_axes():
    # object value encodes its coordinates: obj[r, c] = c + 1000 r (x = column, y = row)
    H, W, N = 30, 40, 8
    rr, cc = np.mgrid[0:H, 0:W]
    obj = (cc + 1000 * rr).astype(np.complex64)
    xy = np.array([[10, 20], [25.0, 7.0], [12.5, 13.25]])
    p = ph.object_patches(obj, xy, N)
    for k, (x, y) in enumerate(xy):
        # the field is linear, so bilinear interpolation is exact at fractional positions
        assert p[k, N // 2, N // 2] == pytest.approx(x + 1000 * y, abs=1e-2)
        assert p[k, N // 2, N // 2 + 1] - p[k, N // 2, N // 2] == pytest.approx(1, abs=1e-2)
        assert p[k, N // 2 + 1, N // 2] - p[k, N // 2, N // 2] == pytest.approx(1000, abs=1e-2)


def test_object_patches_integer_positions_equal_slicing():
    rng = np.random.default_rng(3)
    obj = _complex(rng, (32, 32))
    N = 8
    xy = rng.integers(N // 2, 32 - N // 2, size=(6, 2))
    p = ph.object_patches(obj, xy.astype(float), N)
    for k, (x, y) in enumerate(xy):
        np.testing.assert_array_equal(p[k], obj[y - N // 2 : y + N // 2, x - N // 2 : x + N // 2])


def test_object_patches_zero_outside_object():
    obj = np.ones((10, 10), np.complex64)
    p = ph.object_patches(obj, np.array([[0.0, 0.0]]), 8)[0]
    # patch rows/cols < N/2 map to negative object coordinates -> 0
    assert np.all(p[:4, :] == 0) and np.all(p[:, :4] == 0)
    assert np.all(p[4:, 4:] == 1)


def test_object_patches_half_pixel_averages_neighbours():
    obj = np.zeros((16, 16), np.complex64)
    obj[8, 8] = 1
    p = ph.object_patches(obj, np.array([[8.5, 8.0]]), 4)[0]
    # sample x = 8.5 + c - 2: c = 1 -> 7.5 (half of obj[8, 8]), c = 2 -> 8.5 (half)
    np.testing.assert_allclose(p[2, 1:3], [0.5, 0.5])
    assert np.sum(np.abs(p)) == pytest.approx(1.0)


# --------------------------------------------------------------------------- diffract
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    N=st.sampled_from([4, 8, 16, 32]),
    seed=st.integers(0, 2**31 - 1),
)
def test_diffract_parseval_and_dtype(lead, N, seed):
    rng = np.random.default_rng(seed)
    psi = _complex(rng, (*lead, N, N))
    a = ph.diffract(psi)
    assert a.dtype == np.float32 and a.shape == psi.shape
    assert np.all(a >= 0)
    np.testing.assert_allclose(
        np.sum(a.astype(np.float64) ** 2, axis=(-2, -1)),
        np.sum(np.abs(psi.astype(np.complex128)) ** 2, axis=(-2, -1)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("N", [4, 8, 16])
def test_diffract_dc_at_centre_and_hand_value(N):
    psi = np.full((N, N), 2 + 0j)
    a = ph.diffract(psi)
    # |fft2(const 2)|^2 at DC = (2 N^2)^2; / N^2 -> 4 N^2; sqrt -> 2N at pixel (N//2, N//2)
    expected = np.zeros((N, N))
    expected[N // 2, N // 2] = 2 * N
    np.testing.assert_allclose(a, expected, atol=1e-5)


def test_diffract_plane_wave_lands_at_shifted_frequency():
    N = 16
    r, c = np.mgrid[0:N, 0:N]
    ky, kx = 3, -2
    psi = np.exp(2j * np.pi * (ky * r + kx * c) / N)
    a = ph.diffract(psi)
    peak = np.unravel_index(np.argmax(a), a.shape)
    assert peak == (N // 2 + ky, N // 2 + kx)
    assert a[peak] == pytest.approx(N, rel=1e-6)


def test_diffract_invariant_to_translation_and_global_phase():
    rng = np.random.default_rng(7)
    psi = _complex(rng, (16, 16))
    a = ph.diffract(psi)
    np.testing.assert_allclose(ph.diffract(np.roll(psi, (3, -5), axis=(0, 1))), a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ph.diffract(psi * np.exp(1j * 0.7)), a, rtol=1e-5, atol=1e-6)


@given(B=st.integers(1, 3), C=st.sampled_from([1, 4]), N=st.sampled_from([8, 16]), seed=st.integers(0, 999))
def test_diffract_channels_matches_per_channel(B, C, N, seed):
    rng = np.random.default_rng(seed)
    psi = _complex(rng, (B, N, N, C))
    a = ph.diffract_channels(psi)
    assert a.shape == (B, N, N, C) and a.dtype == np.float32
    for c in range(C):
        np.testing.assert_allclose(a[..., c], ph.diffract(psi[..., c]), rtol=1e-6, atol=1e-6)

"""ptycho.evaluation (moved from conformance.metrics): phase, registration, SSIM, PSNR, FRC, score_pair."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from ptycho import evaluation as metrics


def smooth_image(rng: np.random.Generator, shape: tuple[int, int] = (64, 64), sigma: float = 2.5) -> np.ndarray:
    """A periodic, smooth random real image with values of order 1."""
    return 1.0 + ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap") * 4.0


def complex_object(rng: np.random.Generator, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    amp = 1.0 + 0.5 * ndimage.gaussian_filter(rng.standard_normal(shape), 3.0, mode="wrap") * 3.0
    phase = 1.5 * ndimage.gaussian_filter(rng.standard_normal(shape), 3.0, mode="wrap") * 3.0
    return amp * np.exp(1j * phase)


# ------------------------------------------------------------------------------------------ global phase


def test_global_phase_removed_exactly(rng: np.random.Generator) -> None:
    truth = complex_object(rng)
    recon = truth * np.exp(1j * 2.2)
    assert metrics.global_phase_offset(recon, truth) == pytest.approx(2.2, abs=1e-12)
    np.testing.assert_allclose(metrics.remove_global_phase(recon, truth), truth, rtol=0, atol=1e-12)


def test_global_phase_is_least_squares_and_respects_mask(rng: np.random.Generator) -> None:
    truth = complex_object(rng, (32, 32))
    recon = truth * np.exp(-1j * 0.7)
    mask = np.zeros(truth.shape, dtype=bool)
    mask[4:20, 6:28] = True
    recon[~mask] = 5.0 - 3.0j  # garbage outside the mask must not matter
    phi = metrics.global_phase_offset(recon, truth, mask)
    assert phi == pytest.approx(-0.7, abs=1e-12)
    # least squares: no other constant phase does better (noisy case)
    noisy = truth * np.exp(1j * 0.3) + 0.2 * (rng.standard_normal(truth.shape) + 1j * rng.standard_normal(truth.shape))
    best = metrics.global_phase_offset(noisy, truth)
    cost = [np.sum(np.abs(noisy * np.exp(-1j * p) - truth) ** 2) for p in best + np.linspace(-0.1, 0.1, 21)]
    assert int(np.argmin(cost)) == 10


def test_remove_global_phase_keeps_complex64(rng: np.random.Generator) -> None:
    truth = complex_object(rng, (16, 16)).astype(np.complex64)
    out = metrics.remove_global_phase(truth * np.complex64(1j), truth)
    assert out.dtype == np.complex64
    np.testing.assert_allclose(out, truth, atol=1e-5)


# ------------------------------------------------------------------------------------------ registration


@pytest.mark.parametrize("shift", [(1.37, -2.81), (-0.5, 0.25), (0.03, -0.04), (-10.62, 7.19)])
def test_known_subpixel_shift_recovered(rng: np.random.Generator, shift: tuple[float, float]) -> None:
    reference = smooth_image(rng)
    moving = metrics.fourier_shift(reference, shift)
    (dy, dx), registered = metrics.register_subpixel(moving, reference)
    assert abs(dy + shift[0]) < 0.05 and abs(dx + shift[1]) < 0.05
    assert np.abs(registered - reference).max() < 0.05 * np.ptp(reference)


def test_subpixel_shift_of_non_periodic_content() -> None:
    """An analytic blob sampled at two sub-pixel positions (no wrap-around, no Fourier shift involved)."""
    y, x = np.mgrid[0:64, 0:64].astype(np.float64)

    def blobs(cy: float, cx: float) -> np.ndarray:
        return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 32.0) + 0.5 * np.exp(
            -((y - cy - 10) ** 2 + (x - cx + 5) ** 2) / 8.0
        )

    for normalization in ("phase", "none"):
        (dy, dx), _ = metrics.register_subpixel(blobs(30.3, 31.7), blobs(32.0, 32.0), normalization=normalization)
        assert abs(dy - 1.7) < 0.05 and abs(dx - 0.3) < 0.05, (normalization, dy, dx)


def test_register_complex_and_zero_shift_is_exact(rng: np.random.Generator) -> None:
    truth = complex_object(rng, (64, 64))
    (dy, dx), registered = metrics.register_subpixel(metrics.fourier_shift(truth, (2.25, -1.6)), truth)
    assert abs(dy + 2.25) < 0.05 and abs(dx - 1.6) < 0.05
    assert registered.dtype == np.complex128
    shift, same = metrics.register_subpixel(truth, truth)
    assert shift == (0.0, 0.0)
    np.testing.assert_array_equal(same, truth)


def test_windowed_cross_correlation_on_noisy_crops(rng: np.random.Generator) -> None:
    """The setting score_pair uses: non-periodic crops with noise."""
    big = complex_object(rng, (160, 160))
    shifted = metrics.fourier_shift(big, (0.8, -1.3))
    noise = 0.05 * (rng.standard_normal(big.shape) + 1j * rng.standard_normal(big.shape))
    crop = (slice(20, 110), slice(15, 100))
    (dy, dx), _ = metrics.register_subpixel((shifted + noise)[crop], big[crop], normalization="none", apodize=True)
    assert abs(dy + 0.8) < 0.15 and abs(dx - 1.3) < 0.15


def test_fourier_shift_integer_is_roll(rng: np.random.Generator) -> None:
    img = smooth_image(rng, (16, 20))
    np.testing.assert_allclose(metrics.fourier_shift(img, (3, -5)), np.roll(img, (3, -5), axis=(0, 1)), atol=1e-12)


def test_register_rejects_bad_arguments(rng: np.random.Generator) -> None:
    img = smooth_image(rng, (16, 16))
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.register_subpixel(img, img[:8])
    with pytest.raises(ValueError, match="normalization"):
        metrics.register_subpixel(img, img, normalization="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D"):
        metrics.register_subpixel(img[None], img[None])


# ------------------------------------------------------------------------------------------ SSIM / PSNR


def naive_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Straightforward SSIM: loop over every 11x11 window inside the image, Gaussian weights, population moments."""
    r = 5
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(r, a.shape[0] - r):
        for j in range(r, a.shape[1] - r):
            pa = a[i - r : i + r + 1, j - r : j + r + 1]
            pb = b[i - r : i + r + 1, j - r : j + r + 1]
            ma, mb = np.sum(w * pa), np.sum(w * pb)
            va, vb = np.sum(w * (pa - ma) ** 2), np.sum(w * (pb - mb) ** 2)
            cov = np.sum(w * (pa - ma) * (pb - mb))
            values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_identical_is_one(rng: np.random.Generator) -> None:
    img = smooth_image(rng, (32, 32))
    assert metrics.ssim(img, img) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("noise", [0.05, 0.5, 3.0])
def test_ssim_matches_straightforward_implementation(rng: np.random.Generator, noise: float) -> None:
    b = smooth_image(rng, (24, 27))
    a = b + noise * rng.standard_normal(b.shape)
    expected = naive_ssim(a, b, float(np.ptp(b)))
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-10)
    assert metrics.ssim(a, b, data_range=2.0) == pytest.approx(naive_ssim(a, b, 2.0), abs=1e-10)


def test_ssim_is_lower_for_worse_images_and_uses_mask(rng: np.random.Generator) -> None:
    b = smooth_image(rng, (40, 40))
    small = metrics.ssim(b + 0.05 * rng.standard_normal(b.shape), b)
    large = metrics.ssim(b + 1.0 * rng.standard_normal(b.shape), b)
    assert 1.0 > small > large
    a = b.copy()
    a[:, 25:] += 10.0 * rng.standard_normal((40, 15))
    mask = np.zeros(b.shape, dtype=bool)
    mask[:, :15] = True
    assert metrics.ssim(a, b, mask=mask) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ssim(b[:8, :8], b[:8, :8])
    with pytest.raises(TypeError, match="complex"):
        metrics.ssim(b + 0j, b)


def test_psnr_values_and_inf(rng: np.random.Generator) -> None:
    b = smooth_image(rng, (20, 20))
    assert metrics.psnr(b, b) == math.inf
    a = b + 0.1
    assert metrics.psnr(a, b, data_range=1.0) == pytest.approx(20.0, abs=1e-9)
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(np.ptp(b) ** 2 / 0.01), abs=1e-9)
    flat = np.zeros((20, 20))
    assert metrics.psnr(flat, flat) == math.inf
    assert metrics.ssim(flat, flat) == 1.0
    with pytest.raises(ValueError, match="positive"):
        metrics.psnr(a, b, data_range=0.0)


# ------------------------------------------------------------------------------------------ FRC


def test_frc_identical_images_is_one_everywhere(rng: np.random.Generator) -> None:
    img = smooth_image(rng, (64, 64), sigma=1.0)
    res = metrics.frc(img, img)
    np.testing.assert_allclose(res.curve, 1.0, atol=1e-12)
    assert res.frequencies[0] == pytest.approx(1 / 64) and res.frequencies[-1] == pytest.approx(0.5)
    assert res.cutoff == pytest.approx(0.5) and res.resolution_px == pytest.approx(2.0)
    assert res.area == pytest.approx(1.0)
    assert res.curve.shape == res.threshold.shape == res.ring_pixels.shape == (32,)


def test_frc_independent_noise_is_near_zero(rng: np.random.Generator) -> None:
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    res = metrics.frc(a, b)
    assert abs(res.area) < 0.03
    assert np.abs(res.curve[10:]).max() < 0.3  # rings of >= 60 pixels
    assert np.abs(res.curve[64:]).mean() < 0.05
    assert res.cutoff < 0.05


def test_frc_resolution_of_blurred_copy(rng: np.random.Generator) -> None:
    """A slightly noisy copy correlates at every ring; a blurred noisy one loses the rings where noise dominates."""
    truth = rng.standard_normal((128, 128))
    blurred = ndimage.gaussian_filter(truth, 2.0, mode="wrap") + 0.1 * rng.standard_normal(truth.shape)
    # transfer exp(-2 pi^2 sigma^2 f^2) meets the noise (0.1) near f = 0.17 cycles/pixel
    res = metrics.frc(blurred, truth)
    assert 0.1 < res.cutoff < 0.25
    assert metrics.frc(truth + 0.1 * rng.standard_normal(truth.shape), truth).cutoff == pytest.approx(0.5)


def test_frc_threshold_values() -> None:
    # van Heel & Schatz 2005: the 1/2-bit curve tends to 0.2071/1.2071 = 0.1716 for large rings
    assert metrics.frc_threshold(np.array([1e12]))[0] == pytest.approx(0.1716, abs=1e-4)
    assert metrics.frc_threshold(np.array([1.0]))[0] == pytest.approx(1.0, abs=1e-3)
    assert metrics.frc_threshold(np.array([1e12]), "one-bit")[0] == pytest.approx(1 / 3, abs=1e-4)


# ------------------------------------------------------------------------------------------ score_pair


def test_score_pair_identical() -> None:
    truth = complex_object(np.random.default_rng(5), (48, 48))
    s = metrics.score_pair(truth, truth)
    assert s["amp_ssim"] == pytest.approx(1.0, abs=1e-9) and s["phase_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert s["amp_psnr"] > 200 and s["phase_psnr"] > 200
    assert s["frc_cutoff"] == pytest.approx(0.5) and s["frc_area"] == pytest.approx(1.0)
    assert (s["shift_y"], s["shift_x"]) == (0.0, 0.0)


def test_score_pair_removes_phase_and_shift(rng: np.random.Generator) -> None:
    truth = complex_object(rng, (128, 128))
    recon = metrics.fourier_shift(truth, (0.4, -0.7)) * np.exp(1j * 2.5)
    mask = np.zeros(truth.shape, dtype=bool)
    mask[20:110, 15:100] = True
    s = metrics.score_pair(recon, truth, mask)
    assert abs(s["shift_y"] + 0.4) < 0.1 and abs(s["shift_x"] - 0.7) < 0.1
    assert s["global_phase"] == pytest.approx(2.5, abs=0.05)
    assert s["amp_ssim"] > 0.98 and s["phase_ssim"] > 0.98
    assert s["pixels"] < mask.sum()
    # a worse reconstruction scores worse on every measure
    noisy = recon + 0.3 * (rng.standard_normal(recon.shape) + 1j * rng.standard_normal(recon.shape))
    worse = metrics.score_pair(noisy, truth, mask)
    for key in ("amp_ssim", "amp_psnr", "phase_ssim", "phase_psnr", "frc_cutoff", "frc_area"):
        assert worse[key] < s[key], key


def test_score_pair_phase_wrap_is_not_an_error(rng: np.random.Generator) -> None:
    """A truth phase near +-pi: a recon off by a tiny amount must not score a 2 pi jump."""
    truth = np.exp(1j * (np.pi - 0.01 + 0.02 * rng.random((40, 40))))
    recon = truth * np.exp(1j * 0.015)
    s = metrics.score_pair(recon, truth)
    assert s["phase_psnr"] > 40

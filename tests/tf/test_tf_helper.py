"""``ptycho_tf.physics`` against the NumPy reference ``ptycho.reference.physics`` at float32 tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ptycho.conventions import padded_size
from ptycho.errors import ConfigError
from ptycho.reference import physics as ref
from ptycho_tf import physics as th

RTOL = 1e-5
ATOL = 2e-5


def _cplx(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _close(tf_value, ref_value, atol: float = ATOL, rtol: float = RTOL) -> None:
    got = np.asarray(tf_value)
    want = np.asarray(ref_value)
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _positions(rng: np.random.Generator, B: int, C: int, spread: float) -> np.ndarray:
    """Relative offsets of groups: zero-mean per group, off-centre, sub-pixel."""
    p = rng.uniform(-spread, spread, size=(B, 1, 2, C))
    if C > 1:
        p -= p.mean(axis=3, keepdims=True)
    return p.astype(np.float32)


# --------------------------------------------------------------------------- translate
@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_translate_matches_reference_for_subpixel_and_out_of_bounds_offsets(rng, dtype):
    imgs = _cplx(rng, (7, 12, 10)) if dtype == np.complex64 else rng.standard_normal((7, 12, 10)).astype(dtype)
    offsets = np.array(
        [[0, 0], [2, 1], [-1.5, 0.25], [0.5, -3.75], [11.2, 0], [-20, 3], [3.999, -0.001]], dtype=np.float32
    )
    _close(th.translate(imgs, offsets), ref.translate(imgs, offsets))


def test_translate_moves_content_by_plus_offset():
    img = np.zeros((1, 9, 9), np.float32)
    img[0, 4, 4] = 1.0
    out = th.translate(img, np.array([[2.0, 1.0]], np.float32)).numpy()
    assert out[0, 5, 6] == 1.0 and out.sum() == 1.0


def test_translate_gradient_is_the_adjoint_of_the_reference(rng):
    """d<w, translate(x)>/dx equals translate^T(w): check with a finite difference of the reference."""
    x = rng.standard_normal((2, 8, 8)).astype(np.float32)
    w = rng.standard_normal((2, 8, 8)).astype(np.float32)
    off = np.array([[1.3, -0.6], [-2.2, 0.7]], np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        val = tf.reduce_sum(th.translate(xt, off) * w)
    g = tape.gradient(val, xt).numpy()
    # translate is linear in x: <w, T x> = <T^T w, x>; probe with basis directions
    for k, r, c in [(0, 3, 3), (1, 0, 7), (0, 7, 0), (1, 4, 2)]:
        e = np.zeros_like(x)
        e[k, r, c] = 1.0
        want = float(np.sum(ref.translate(e, off) * w))
        assert g[k, r, c] == pytest.approx(want, abs=1e-5)


# --------------------------------------------------------------------------- reassembly / extraction
@pytest.mark.parametrize(
    "B,gridsize,spread",
    [
        (3, 1, 0.0),  # gridsize 1: offsets are zero
        (5, 2, 3.3),  # B*C = 20
        (16, 2, 4.7),  # B*C = 64: upstream merged the batch here
        (33, 2, 2.1),  # B*C = 132
        (2, 3, 5.5),  # C = 9
    ],
)
def test_reassemble_patches_is_per_sample_at_every_batch_size(rng, B, gridsize, spread):
    N, C = 16, gridsize**2
    P = padded_size(N, gridsize)
    patches = _cplx(rng, (B, N, N, C))
    pos = _positions(rng, B, C, spread)
    got = th.reassemble_patches(patches, pos, P)
    assert got.shape == (B, P, P, 1)
    # Where the mask coverage is ~0 the canvas is num / (~REASSEMBLY_NORM_EPS): a float32 rounding of
    # the denominator (~1e-7 absolute) is then ~1e-4 relative, so the tolerance is relative, 2e-4.
    _close(got, ref.reassemble_patches(patches, pos, P), atol=5e-4, rtol=2e-4)


def test_reassembly_never_mixes_samples(rng):
    """Changing sample 0 leaves every other canvas of a 16 x 4 batch bitwise unchanged."""
    N, B, C = 16, 16, 4
    P = padded_size(N, 2)
    patches = _cplx(rng, (B, N, N, C))
    pos = _positions(rng, B, C, 3.0)
    a = th.reassemble_patches(patches, pos, P).numpy()
    patches[0] *= 5
    b = th.reassemble_patches(patches, pos, P).numpy()
    assert not np.array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1:], b[1:])


@pytest.mark.parametrize("B,gridsize,spread", [(4, 1, 0.0), (16, 2, 4.2), (3, 2, 7.9)])
def test_extract_patches_matches_reference(rng, B, gridsize, spread):
    N, C = 16, gridsize**2
    P = padded_size(N, gridsize)
    canvas = _cplx(rng, (B, P, P, 1))
    pos = _positions(rng, B, C, spread)
    _close(th.extract_patches(canvas, pos, N), ref.extract_patches(canvas, pos, N))


def test_pad_object_trim_pad_to_and_center_crop_match_reference(rng):
    x = _cplx(rng, (3, 16, 16, 1))
    _close(th.pad_object(x, 27), ref.pad_object(x, 27))
    canvas = _cplx(rng, (2, 27, 27, 1))
    _close(th.trim(canvas, 16), ref.trim(canvas, 16))
    flat = rng.standard_normal((4, 10, 10)).astype(np.float32)
    _close(th.pad_to(flat, 15), ref.pad_to(flat, 15))
    _close(th.center_crop(flat, 5), ref.center_crop(flat, 5))


# --------------------------------------------------------------------------- illumination and diffraction
@pytest.mark.parametrize("sigma", [0.0, 0.7, 1.5])
def test_gaussian_smooth3x3_matches_reference(rng, sigma):
    x = _cplx(rng, (2, 8, 8, 3))
    _close(th.gaussian_smooth3x3(x, sigma), ref.gaussian_smooth3x3(x, sigma))
    r = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)
    _close(th.gaussian_smooth3x3(r, sigma), ref.gaussian_smooth3x3(r, sigma))


def test_gaussian_smooth3x3_rejects_negative_sigma(rng):
    with pytest.raises(ConfigError):
        th.gaussian_smooth3x3(np.ones((1, 4, 4, 1), np.float32), -1.0)


@pytest.mark.parametrize("probe_mask,sigma", [(False, 0.0), (True, 0.0), (True, 0.8), (False, 1.2)])
def test_illuminate_matches_reference(rng, probe_mask, sigma):
    N = 16
    patches = _cplx(rng, (3, N, N, 4))
    probe = _cplx(rng, (N, N))
    got = th.illuminate(patches, probe, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma)
    want = ref.illuminate(patches, probe, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma)
    _close(got, want, atol=1e-5)


def test_diffract_and_diffract_channels_match_reference(rng):
    psi = _cplx(rng, (2, 16, 16, 4))
    _close(th.diffract_channels(psi), ref.diffract_channels(psi), atol=1e-5, rtol=1e-4)
    flat = _cplx(rng, (3, 16, 16))
    _close(th.diffract(flat), ref.diffract(flat), atol=1e-5, rtol=1e-4)


def test_combine_complex_matches_reference(rng):
    amp = rng.uniform(0, 2, (2, 8, 8, 1)).astype(np.float32)
    ph = rng.uniform(-4, 4, (2, 8, 8, 1)).astype(np.float32)
    _close(th.combine_complex(amp, ph), ref.combine_complex(amp, ph), atol=1e-6)


def test_normalize_x_full_matches_reference(rng):
    d = rng.uniform(0, 30, (5, 16, 16, 4)).astype(np.float32)
    x, norm = th.normalize_x_full(d)
    x_ref, norm_ref = ref.normalize_x_full(d)
    _close(x, x_ref)
    assert float(norm) == pytest.approx(norm_ref, rel=1e-12)


# --------------------------------------------------------------------------- losses
def test_losses_match_reference(rng):
    yt = rng.uniform(0, 50, (4, 8, 8, 2)).astype(np.float32)
    yp = rng.uniform(0.1, 50, (4, 8, 8, 2)).astype(np.float32)
    assert float(th.poisson_nll(yt, yp)) == pytest.approx(ref.poisson_nll(yt, yp), rel=1e-5)
    assert float(th.mean_absolute_error(yt, yp)) == pytest.approx(ref.mean_absolute_error(yt, yp), rel=1e-5)
    a, b = _cplx(rng, (3, 4)), _cplx(rng, (3, 4))
    assert float(th.mean_absolute_error(a, b)) == pytest.approx(ref.mean_absolute_error(a, b), rel=1e-5)


def test_masked_losses_match_reference(rng):
    yt = rng.uniform(0, 50, (4, 8, 8, 2)).astype(np.float32)
    yp = rng.uniform(0.1, 50, (4, 8, 8, 2)).astype(np.float32)
    bad = rng.uniform(size=(8, 8)) < 0.2
    got = float(th.poisson_nll(yt, yp, bad))
    assert got == pytest.approx(ref.poisson_nll(yt, yp, bad), rel=1e-5)
    assert got != pytest.approx(ref.poisson_nll(yt, yp), rel=1e-3)
    assert float(th.mean_absolute_error(yt, yp, bad)) == pytest.approx(ref.mean_absolute_error(yt, yp, bad), rel=1e-5)


# --------------------------------------------------------------------------- stitching
@pytest.mark.parametrize("n,M", [(1, 20), (7, 20), (50, 12)])
def test_reassemble_position_matches_reference_as_ptychodus_calls_it(rng, n, M):
    N = 32
    obj = _cplx(rng, (n, N, N, 1))
    offsets = rng.uniform(20, 90, size=(n, 1, 2, 1))  # float64 global centroids, off-centre, sub-pixel
    got = th.reassemble_position(obj, offsets, M=M)
    assert isinstance(got, tf.Tensor) and got.dtype == tf.complex64
    want = ref.reassemble_position(obj, offsets, M=M)
    _close(got, want, atol=1e-5)
    assert np.asarray(got).shape == want.shape  # (S, S, 1)


def test_reassemble_position_accepts_tensors_and_chunks_large_inputs(rng, monkeypatch):
    monkeypatch.setattr(th, "_STITCH_CHUNK", 4)
    obj = _cplx(rng, (11, 16, 16, 1))
    offsets = rng.uniform(0, 30, size=(11, 1, 2, 1))
    got = th.reassemble_position(tf.constant(obj), tf.constant(offsets), M=8)
    _close(got, ref.reassemble_position(obj, offsets, M=8), atol=1e-5)


def test_reassemble_position_rejects_bad_M(rng):
    with pytest.raises(ConfigError):
        th.reassemble_position(_cplx(rng, (2, 16, 16, 1)), np.zeros((2, 1, 2, 1)), M=7)

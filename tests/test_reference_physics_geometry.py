"""Reference physics: translation, pad/crop, masks, patch reassembly and extraction.

Properties checked: integer shifts equal np.roll with zero fill, shift-unshift identity,
delta placement and sign conventions, extract-then-reassemble reproduces the covered
canvas, per-sample reassembly for any batch size, the central-mask normalisation.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho.conventions import REASSEMBLY_NORM_EPS, padded_size
from ptycho.reference import physics as ph


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _shift_zero_fill(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move content by (+dy rows, +dx cols) with zero fill (np.roll, then zero the wrapped band)."""
    out = np.roll(img, (dy, dx), axis=(-2, -1))
    H, W = img.shape[-2:]
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., H + dy :, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, W + dx :] = 0
    return out


# =========================================================================== translate
@given(
    K=st.integers(1, 4),
    H=st.integers(4, 20),
    W=st.integers(4, 20),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
)
def test_translate_integer_shift_equals_roll_with_zero_fill(K, H, W, data, seed):
    rng = np.random.default_rng(seed)
    imgs = _complex(rng, (K, H, W))
    dx = data.draw(st.lists(st.integers(-W - 2, W + 2), min_size=K, max_size=K), label="dx")
    dy = data.draw(st.lists(st.integers(-H - 2, H + 2), min_size=K, max_size=K), label="dy")
    out = ph.translate(imgs, np.stack([dx, dy], axis=1).astype(float))
    assert out.dtype == np.complex64 and out.shape == imgs.shape
    for k in range(K):
        if abs(dy[k]) >= H or abs(dx[k]) >= W:
            np.testing.assert_array_equal(out[k], 0)
        else:
            np.testing.assert_array_equal(out[k], _shift_zero_fill(imgs[k], dy[k], dx[k]))


def test_translate_delta_4_4_by_x2_y1_lands_at_row5_col6():
    img = np.zeros((1, 10, 10), np.float32)
    img[0, 4, 4] = 1
    out = ph.translate(img, np.array([[2.0, 1.0]]))
    assert out.dtype == np.float32
    assert np.argwhere(out[0] != 0).tolist() == [[5, 6]]
    assert out[0, 5, 6] == 1


@pytest.mark.parametrize(("offset", "cells"), [((0.5, 0.0), [(4, 4), (4, 5)]), ((0.0, -0.5), [(3, 4), (4, 4)])])
def test_translate_half_pixel_splits_delta(offset, cells):
    img = np.zeros((1, 9, 9))
    img[0, 4, 4] = 1
    out = ph.translate(img, np.array([offset]))
    for r, c in cells:
        assert out[0, r, c] == pytest.approx(0.5)
    assert np.sum(out) == pytest.approx(1.0)


@given(
    H=st.integers(8, 20),
    W=st.integers(8, 20),
    tx=st.floats(-3, 3),
    ty=st.floats(-3, 3),
    coef=st.tuples(*[st.floats(-2, 2)] * 4),
)
def test_translate_shift_unshift_identity_in_interior_for_bilinear_field(H, W, tx, ty, coef):
    # bilinear interpolation reproduces a bilinear field exactly, so shift then unshift is
    # the identity away from the zero-filled border (|shift| + 1 pixels)
    r, c = np.mgrid[0:H, 0:W].astype(np.float64)
    a, b, cc, d = coef
    img = (a + b * r + cc * c + d * r * c / 10)[None]
    there = ph.translate(img, np.array([[tx, ty]]))
    back = ph.translate(there, np.array([[-tx, -ty]]))
    my, mx = int(np.ceil(abs(ty))) + 1, int(np.ceil(abs(tx))) + 1
    interior = (slice(None), slice(2 * my, H - 2 * my), slice(2 * mx, W - 2 * mx))
    np.testing.assert_allclose(back[interior], img[interior].astype(np.float32), rtol=1e-5, atol=1e-4)


@given(K=st.integers(1, 3), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_translate_integer_shift_then_unshift_identity_in_interior(K, data, seed):
    rng = np.random.default_rng(seed)
    imgs = _complex(rng, (K, 12, 12))
    d = np.array(data.draw(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=K, max_size=K)))
    back = ph.translate(ph.translate(imgs, d.astype(float)), -d.astype(float))
    np.testing.assert_array_equal(back[:, 3:-3, 3:-3], imgs[:, 3:-3, 3:-3])


@given(tx=st.floats(-2, 2), ty=st.floats(-2, 2), seed=st.integers(0, 999))
def test_translate_fractional_preserves_sum_of_compact_content_and_is_real_imag_separable(tx, ty, seed):
    rng = np.random.default_rng(seed)
    imgs = np.zeros((1, 16, 16), np.complex64)
    imgs[0, 5:11, 5:11] = _complex(rng, (6, 6))
    out = ph.translate(imgs, np.array([[tx, ty]]))
    assert np.sum(out.astype(np.complex128)) == pytest.approx(np.sum(imgs.astype(np.complex128)), abs=1e-4)
    re = ph.translate(imgs.real.copy(), np.array([[tx, ty]]))
    im = ph.translate(imgs.imag.copy(), np.array([[tx, ty]]))
    np.testing.assert_allclose(out, re + 1j * im, atol=1e-6)


@pytest.mark.parametrize(("offset", "edge"), [((0.5, 0.0), (slice(None), 0)), ((0.0, -0.25), (-1, slice(None)))])
def test_translate_fractional_zero_fill_per_corner_at_edge(offset, edge):
    # ones shifted by +0.5 in x: column 0 samples x = -0.5, whose left corner is out of
    # bounds and contributes 0, so it holds 0.5; y by -0.25: the last row holds 0.75
    out = ph.translate(np.ones((1, 6, 6)), np.array([offset]))[0]
    expected = np.ones((6, 6))
    expected[edge] = 1 - abs(sum(offset))
    np.testing.assert_allclose(out, expected, rtol=1e-7)


def test_translate_rejects_mismatched_offsets():
    with pytest.raises(ValueError, match="offsets"):
        ph.translate(np.zeros((2, 4, 4)), np.zeros((1, 2)))


# =========================================================================== pad / crop / masks
@given(K=st.integers(1, 3), N=st.integers(2, 12), extra=st.integers(0, 9), seed=st.integers(0, 999))
def test_pad_to_then_center_crop_roundtrip(K, N, extra, seed):
    rng = np.random.default_rng(seed)
    x = _complex(rng, (K, N, N))
    P = N + extra
    padded = ph.pad_to(x, P)
    assert padded.shape == (K, P, P) and padded.dtype == np.complex64
    s = (P - N) // 2
    np.testing.assert_array_equal(padded[:, s : s + N, s : s + N], x)
    assert np.count_nonzero(padded) == np.count_nonzero(x)
    np.testing.assert_array_equal(ph.center_crop(padded, N), x)


@pytest.mark.parametrize("N", [4, 8, 32, 64])
def test_center_and_border_masks(N):
    cm = ph.center_mask(N)
    bm = ph.border_mask(N)
    assert cm.dtype == bm.dtype == np.float32 and cm.shape == (N, N)
    assert cm.sum() == (N // 2) ** 2
    rows, cols = np.nonzero(cm)
    assert rows.min() == cols.min() == N // 4 and rows.max() == cols.max() == 3 * N // 4 - 1
    np.testing.assert_array_equal(cm + bm, np.ones((N, N)))


def test_center_mask_rejects_n_not_multiple_of_4():
    with pytest.raises(ValueError, match="multiple of 4"):
        ph.center_mask(6)


def test_pad_object_and_trim():
    rng = np.random.default_rng(1)
    x = _complex(rng, (2, 8, 8, 1))
    padded = ph.pad_object(x, 18)
    assert padded.shape == (2, 18, 18, 1) and padded.dtype == np.complex64
    np.testing.assert_array_equal(padded[:, 5:13, 5:13], x)
    np.testing.assert_array_equal(ph.trim(padded, 8), x)


# =========================================================================== reassembly
def _positions_strategy(N: int, gridsize: int, B: int, integer: bool):
    """coords_relative within physical bounds: |offset| <= (P - N) / 2."""
    half = (padded_size(N, gridsize) - N) // 2
    C = gridsize**2
    elem = st.integers(-half, half) if integer else st.floats(-half, half, allow_nan=False)
    return st.lists(elem, min_size=B * 2 * C, max_size=B * 2 * C).map(
        lambda v: np.asarray(v, dtype=np.float64).reshape(B, 1, 2, C)
    )


def test_reassemble_gridsize1_zero_offset_is_central_mask_normalisation():
    rng = np.random.default_rng(5)
    N, P = 16, 26
    obj = _complex(rng, (1, N, N, 1))
    canvas = ph.reassemble_patches(obj, np.zeros((1, 1, 2, 1)), P)
    assert canvas.shape == (1, P, P, 1) and canvas.dtype == np.complex64
    s = (P - N) // 2
    inner = canvas[0, s : s + N, s : s + N, 0]
    cm = ph.center_mask(N).astype(bool)
    # inside the central N/2 window: obj / (1 + eps); outside it: obj / eps (x1000)
    np.testing.assert_allclose(inner[cm], obj[0, ..., 0][cm] / (1 + REASSEMBLY_NORM_EPS), rtol=1e-6)
    np.testing.assert_allclose(inner[~cm], obj[0, ..., 0][~cm] / REASSEMBLY_NORM_EPS, rtol=1e-5)
    outside = np.ones((P, P), bool)
    outside[s : s + N, s : s + N] = False
    assert np.all(canvas[0, ..., 0][outside] == 0)


def test_reassemble_sign_places_patch_at_pos_minus_centroid():
    N, P = 8, 18
    patch = np.zeros((1, N, N, 1), np.complex64)
    patch[0, N // 2, N // 2, 0] = 1
    rel = np.array([-2.0, -1.0]).reshape(1, 1, 2, 1)  # coords_relative = centroid - pos: pos is (+2, +1)
    canvas = ph.reassemble_patches(patch, rel, P)[0, ..., 0]
    assert np.argwhere(np.abs(canvas) > 0).tolist() == [[P // 2 + 1, P // 2 + 2]]
    assert canvas[P // 2 + 1, P // 2 + 2] == pytest.approx(1 / (1 + REASSEMBLY_NORM_EPS))


def test_reassemble_does_not_centre_offsets_by_batch_mean():
    rng = np.random.default_rng(2)
    N, P = 8, 18
    obj = _complex(rng, (1, N, N, 1))
    base = ph.reassemble_patches(obj, np.zeros((1, 1, 2, 1)), P)
    moved = ph.reassemble_patches(obj, np.array([-2.0, -1.0]).reshape(1, 1, 2, 1), P)
    np.testing.assert_allclose(moved[0, ..., 0], _shift_zero_fill(base[0, ..., 0], 1, 2), rtol=1e-6)


@given(gridsize=st.integers(1, 3), N=st.sampled_from([8, 12, 16]), data=st.data(), seed=st.integers(0, 999))
def test_extract_then_reassemble_reproduces_covered_canvas_integer_offsets(gridsize, N, data, seed):
    B = data.draw(st.integers(1, 3), label="B")
    C = gridsize**2
    P = padded_size(N, gridsize)
    positions = data.draw(_positions_strategy(N, gridsize, B, integer=True), label="positions")
    rng = np.random.default_rng(seed)
    canvas = _complex(rng, (B, P, P, 1))
    patches = ph.extract_patches(canvas, positions, N)
    assert patches.shape == (B, N, N, C) and patches.dtype == np.complex64
    masked = patches * ph.center_mask(N)[None, :, :, None]
    back = ph.reassemble_patches(masked, positions, P)
    # coverage count of the central windows, built from shifted slices (no translate)
    s, q = (P - N) // 2, N // 4
    for b in range(B):
        count = np.zeros((P, P))
        for c in range(C):
            px, py = -positions[b, 0, :, c].astype(int)  # pos - centroid
            count[s + py + q : s + py + 3 * q, s + px + q : s + px + 3 * q] += 1
        expected = canvas[b, ..., 0].astype(np.complex128) * count / (count + REASSEMBLY_NORM_EPS)
        np.testing.assert_allclose(back[b, ..., 0], expected, rtol=2e-6, atol=1e-6)


@given(gridsize=st.integers(1, 3), data=st.data())
def test_extract_then_reassemble_fractional_offsets_bilinear_canvas(gridsize, data):
    N = 8
    C = gridsize**2
    P = padded_size(N, gridsize)
    positions = data.draw(_positions_strategy(N, gridsize, 1, integer=False), label="positions")
    coef = data.draw(st.tuples(*[st.floats(-1, 1)] * 3), label="coef")
    r, c = np.mgrid[0:P, 0:P].astype(np.float64)
    canvas = (coef[0] + coef[1] * r + 1j * coef[2] * c)[None, :, :, None]
    patches = ph.extract_patches(canvas, positions, N) * ph.center_mask(N)[None, :, :, None]
    back = ph.reassemble_patches(patches, positions, P)[0, ..., 0]
    # pixels whose bilinear taps lie entirely inside (1) or outside (0) each shifted window
    # and whose extraction taps stayed on the canvas: there the result is exact
    shifts = -positions[0, 0].T  # [C, 2] (x, y) = pos - centroid
    windows = ph.translate(ph.pad_to(np.broadcast_to(ph.center_mask(N), (C, N, N)), P), shifts)
    clean = np.all(np.isclose(windows, 0) | np.isclose(windows, 1), axis=0)
    count = np.rint(windows).sum(axis=0)
    ok = clean & (count > 0)
    ok[:1] = ok[-1:] = False
    ok[:, :1] = ok[:, -1:] = False
    assert ok.any()
    expected = canvas[0, ..., 0] * count / (count + REASSEMBLY_NORM_EPS)
    np.testing.assert_allclose(back[ok], expected[ok], rtol=1e-4, atol=1e-4)


@given(gridsize=st.sampled_from([1, 2, 3]), data=st.data(), seed=st.integers(0, 999))
def test_reassemble_is_per_sample_including_large_batches(gridsize, data, seed):
    N = 8
    C = gridsize**2
    # B * C >= 64 is where upstream merged the whole batch into one canvas
    B = data.draw(st.sampled_from([2, 5, -(-64 // C), -(-80 // C)]), label="B")
    P = padded_size(N, gridsize)
    positions = data.draw(_positions_strategy(N, gridsize, B, integer=False), label="positions")
    rng = np.random.default_rng(seed)
    patches = _complex(rng, (B, N, N, C))
    together = ph.reassemble_patches(patches, positions, P)
    assert together.shape == (B, P, P, 1)
    for b in rng.choice(B, size=min(B, 3), replace=False):
        alone = ph.reassemble_patches(patches[b : b + 1], positions[b : b + 1], P)
        np.testing.assert_array_equal(together[b : b + 1], alone)
    # changing another sample leaves sample 0 untouched
    other = patches.copy()
    other[1:] = 0
    np.testing.assert_array_equal(ph.reassemble_patches(other, positions, P)[0], together[0])


@given(gridsize=st.integers(1, 3), N=st.sampled_from([8, 16]), data=st.data(), seed=st.integers(0, 999))
def test_extract_patches_integer_offsets_equal_slicing(gridsize, N, data, seed):
    B = data.draw(st.integers(1, 3), label="B")
    P = padded_size(N, gridsize)
    positions = data.draw(_positions_strategy(N, gridsize, B, integer=True), label="positions")
    rng = np.random.default_rng(seed)
    canvas = _complex(rng, (B, P, P, 1))
    out = ph.extract_patches(canvas, positions, N)
    s = (P - N) // 2
    for b in range(B):
        for c in range(gridsize**2):
            px, py = -positions[b, 0, :, c].astype(int)
            np.testing.assert_array_equal(out[b, :, :, c], canvas[b, s + py : s + py + N, s + px : s + px + N, 0])


def test_extract_patches_zero_offsets_equal_trim():
    rng = np.random.default_rng(4)
    canvas = _complex(rng, (2, 22, 22, 1))
    out = ph.extract_patches(canvas, np.zeros((2, 1, 2, 4)), 8)
    for c in range(4):
        np.testing.assert_array_equal(out[..., c : c + 1], ph.trim(canvas, 8))


def test_extract_patches_delta_sign():
    # canvas delta at (pos - centroid) = (x=+3, y=-2) from the canvas centre; coords_relative = (-3, +2)
    P, N = 18, 8
    canvas = np.zeros((1, P, P, 1), np.complex64)
    canvas[0, P // 2 - 2, P // 2 + 3, 0] = 1
    out = ph.extract_patches(canvas, np.array([-3.0, 2.0]).reshape(1, 1, 2, 1), N)[0, ..., 0]
    assert np.argwhere(out != 0).tolist() == [[N // 2, N // 2]]

"""Each torch physics op against the NumPy reference (ptycho.reference.physics) at float32 tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptycho import conventions as cv
from ptycho.reference import physics as ref
from ptycho_torch import physics as th

pytestmark = pytest.mark.torch

ATOL = 2e-5


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _cplx(rng, shape):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def _close(got, want, atol=ATOL, rtol=1e-5):
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)


@pytest.mark.parametrize("complex_input", [False, True])
def test_translate_matches_reference_including_out_of_bounds(rng, complex_input):
    K, H, W = 5, 12, 9
    imgs = _cplx(rng, (K, H, W)) if complex_input else rng.normal(size=(K, H, W)).astype(np.float32)
    offsets = np.array([[0.0, 0.0], [1.25, -2.5], [-3.7, 0.4], [8.5, 11.2], [-20.0, 3.0]])
    got = th.translate(_t(imgs), _t(offsets))
    assert got.dtype == (torch.complex64 if complex_input else torch.float32)
    _close(got, ref.translate(imgs, offsets))


def test_translate_moves_content_by_plus_offset():
    img = np.zeros((1, 8, 8), np.float32)
    img[0, 3, 2] = 1.0
    out = th.translate(_t(img), torch.tensor([[2.0, 1.0]])).numpy()
    assert out[0, 4, 4] == pytest.approx(1.0)
    assert out.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("B,C", [(1, 1), (3, 4), (20, 4)])
def test_reassemble_patches_matches_reference_per_sample(rng, B, C):
    N, gs = 16, int(np.sqrt(C))
    P = cv.padded_size(N, gs)
    patches = _cplx(rng, (B, N, N, C))
    positions = rng.uniform(-4, 4, size=(B, 1, 2, C))
    want = ref.reassemble_patches(patches, positions, P)
    got = th.reassemble_patches(_t(cv.tf_to_torch_images(patches)), _t(cv.tf_to_torch_positions(positions)), P)
    assert got.shape == (B, 1, P, P)
    _close(got, cv.tf_to_torch_images(want), atol=5e-3, rtol=1e-4)  # values reach ~1e3 outside the windows


def test_reassemble_batch_independent(rng):
    N, P = 16, 26
    patches = _cplx(rng, (6, 4, N, N))
    positions = rng.uniform(-3, 3, size=(6, 4, 1, 2))
    full = th.reassemble_patches(_t(patches), _t(positions), P)
    one = th.reassemble_patches(_t(patches[2:3]), _t(positions[2:3]), P)
    torch.testing.assert_close(full[2:3], one)


def test_extract_patches_matches_reference(rng):
    B, C, N, P = 3, 4, 16, 30
    canvas = _cplx(rng, (B, P, P, 1))
    positions = rng.uniform(-6, 6, size=(B, 1, 2, C))
    want = ref.extract_patches(canvas, positions, N)
    got = th.extract_patches(_t(cv.tf_to_torch_images(canvas)), _t(cv.tf_to_torch_positions(positions)), N)
    _close(got, cv.tf_to_torch_images(want))


def test_trim_pad_object_pad_to_center_crop(rng):
    canvas = _cplx(rng, (2, 26, 26, 1))
    _close(th.trim(_t(cv.tf_to_torch_images(canvas)), 16), cv.tf_to_torch_images(ref.trim(canvas, 16)))
    patch = _cplx(rng, (2, 16, 16, 1))
    _close(th.pad_object(_t(cv.tf_to_torch_images(patch)), 27), cv.tf_to_torch_images(ref.pad_object(patch, 27)))
    flat = rng.normal(size=(3, 8, 8)).astype(np.float32)
    _close(th.pad_to(_t(flat), 13), ref.pad_to(flat, 13))
    _close(th.center_crop(_t(flat), 5), ref.center_crop(flat, 5))


def test_masks_match_reference():
    for N in (16, 64):
        _close(th.center_mask(N), ref.center_mask(N), atol=0)
        _close(th.border_mask(N), ref.border_mask(N), atol=0)
        _close(th.probe_disk_mask(N), ref.probe_disk_mask(N), atol=0)


@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.3])
def test_gaussian_smooth_matches_reference(rng, sigma):
    x = _cplx(rng, (2, 12, 12, 3))
    got = th.gaussian_smooth3x3(_t(cv.tf_to_torch_images(x)), sigma)
    _close(got, cv.tf_to_torch_images(ref.gaussian_smooth3x3(x, sigma)))
    real = rng.normal(size=(1, 8, 8, 2)).astype(np.float32)
    _close(th.gaussian_smooth3x3(_t(cv.tf_to_torch_images(real)), sigma),
           cv.tf_to_torch_images(ref.gaussian_smooth3x3(real, sigma)))


def test_gaussian_smooth_rejects_negative_sigma():
    with pytest.raises(ValueError, match="gaussian_smoothing_sigma"):
        th.gaussian_smooth3x3(torch.zeros(1, 1, 4, 4), -1.0)


@pytest.mark.parametrize("probe_mask,sigma", [(False, 0.0), (True, 0.0), (True, 0.7)])
def test_illuminate_matches_reference(rng, probe_mask, sigma):
    patches = _cplx(rng, (2, 16, 16, 4))
    probe = _cplx(rng, (16, 16))
    want = ref.illuminate(patches, probe, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma)
    got = th.illuminate(_t(cv.tf_to_torch_images(patches)), _t(probe), probe_mask=probe_mask,
                        gaussian_smoothing_sigma=sigma)
    _close(got, cv.tf_to_torch_images(want), atol=1e-4)


def test_diffract_matches_reference_and_parseval(rng):
    psi = _cplx(rng, (2, 3, 16, 16))
    got = th.diffract(_t(psi))
    _close(got, ref.diffract(psi), atol=1e-4)
    np.testing.assert_allclose((got**2).sum(dim=(-2, -1)).numpy(), (np.abs(psi) ** 2).sum(axis=(-2, -1)), rtol=1e-4)


def test_losses_combine_and_normalize_match_reference(rng):
    yt = rng.uniform(0, 5, size=(2, 8, 8, 1)).astype(np.float32)
    yp = rng.uniform(0.1, 5, size=(2, 8, 8, 1)).astype(np.float32)
    assert float(th.poisson_nll(_t(yt), _t(yp))) == pytest.approx(ref.poisson_nll(yt, yp), rel=1e-5)
    assert float(th.mean_absolute_error(_t(yt), _t(yp))) == pytest.approx(ref.mean_absolute_error(yt, yp), rel=1e-5)
    bad = rng.uniform(size=(8, 8)) < 0.2
    cf = (0, 3, 1, 2)  # the torch helpers take channels-first [B, C, N, N]; the mask is [N, N] in both
    tyt, typ, tbad = _t(yt.transpose(cf)), _t(yp.transpose(cf)), torch.as_tensor(bad)
    assert float(th.poisson_nll(tyt, typ, tbad)) == pytest.approx(ref.poisson_nll(yt, yp, bad), rel=1e-5)
    assert float(th.mean_absolute_error(tyt, typ, tbad)) == pytest.approx(
        ref.mean_absolute_error(yt, yp, bad), rel=1e-5
    )
    amp, phase = rng.uniform(0, 1, (4, 4)).astype(np.float32), rng.uniform(-3, 3, (4, 4)).astype(np.float32)
    _close(th.combine_complex(_t(amp), _t(phase)), ref.combine_complex(amp, phase), atol=1e-6)
    d = rng.uniform(0, 3, size=(3, 8, 8, 4)).astype(np.float32)
    x_ref, n_ref = ref.normalize_x_full(d)
    x, n = th.normalize_x_full(_t(cv.tf_to_torch_images(d)))
    assert n == pytest.approx(n_ref, rel=1e-12)
    _close(x, cv.tf_to_torch_images(x_ref), atol=1e-6)


@pytest.mark.parametrize("object_big,gridsize", [(True, 1), (True, 2), (False, 1)])
def test_forward_physics_matches_reference(rng, object_big, gridsize):
    N, C = 16, gridsize**2
    Co = C if object_big else 1
    obj = (rng.uniform(0.5, 1, (3, N, N, Co)) * np.exp(1j * rng.uniform(-1, 1, (3, N, N, Co)))).astype(np.complex64)
    positions = rng.uniform(-2, 2, size=(3, 1, 2, C))
    probe = ref.normalize_probe(ref.default_probe(N), 4.0)
    want = ref.forward_physics(obj, positions, probe, 1.5, N=N, gridsize=gridsize, object_big=object_big,
                               probe_mask=True, gaussian_smoothing_sigma=0.0)
    got = th.forward_physics(_t(cv.tf_to_torch_images(obj)), _t(cv.tf_to_torch_positions(positions)), _t(probe),
                             torch.tensor(1.5), N=N, gridsize=gridsize, object_big=object_big, probe_mask=True,
                             gaussian_smoothing_sigma=0.0)
    for key, value in want.items():
        scale = max(1.0, float(np.abs(value).max()))
        _close(got[key], cv.tf_to_torch_images(value), atol=2e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("M", [4, 20])
def test_reassemble_position_matches_reference(rng, M):
    n, N = 30, 32
    obj = _cplx(rng, (n, N, N, 1))
    offsets = rng.uniform(20, 60, size=(n, 1, 2, 1))
    want = ref.reassemble_position(obj, offsets, M)
    got = th.reassemble_position(_t(cv.tf_to_torch_images(obj)), _t(offsets), M, chunk=7)
    assert got.shape == (1,) + want.shape[:2]
    _close(got[0], want[..., 0], atol=1e-5)


def test_gradients_flow_through_reassembly_and_extraction(rng):
    patches = torch.tensor(_cplx(rng, (2, 4, 16, 16)), requires_grad=True)
    positions = torch.tensor(rng.uniform(-2, 2, size=(2, 4, 1, 2)), dtype=torch.float32)
    canvas = th.reassemble_patches(patches, positions, 26)
    th.diffract(th.extract_patches(canvas, positions, 16)).sum().backward()
    assert patches.grad is not None and torch.isfinite(torch.view_as_real(patches.grad)).all()

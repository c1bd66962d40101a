"""ptycho_torch.parity_api against the NumPy reference (ptycho.reference.model / physics / optim)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptycho import conventions as cv
from ptycho import params
from ptycho.canonical_weights import init_canonical_weights
from ptycho.config.config import ModelConfig
from ptycho.network_spec import network_spec_from_config
from ptycho.reference import model as rmodel
from ptycho.reference import physics as ref
from ptycho.reference.optim import AdamState, adam_step
from ptycho_torch import parity_api as api

pytestmark = pytest.mark.torch


def _setup(gridsize, *, object_big=True, seed=0, log_scale=0.0, B=2, N=32, nfs=1, x_scale=3.0):
    mc = ModelConfig(N=N, gridsize=gridsize, n_filters_scale=nfs, object_big=object_big)
    spec = network_spec_from_config(mc)
    probe = ref.normalize_probe(ref.default_probe(N), 4.0)
    w = init_canonical_weights(spec, seed=seed, log_scale=log_scale, probe=probe)
    rng = np.random.default_rng(seed + 100)
    x = (x_scale * rng.random((B, N, N, spec.C))).astype(np.float32)
    pos = rng.uniform(-2.5, 2.5, size=(B, 1, 2, spec.C))
    return mc, spec, w, x, pos


@pytest.mark.parametrize("gridsize,object_big,probe_mask,sigma", [(1, True, False, 0.0), (2, True, True, 0.6),
                                                                  (2, False, False, 0.0)])
def test_forward_matches_reference_intermediates(gridsize, object_big, probe_mask, sigma):
    mc, spec, w, x, pos = _setup(gridsize, object_big=object_big, log_scale=0.7)
    h = api.build(mc, weights=w, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma)
    got = api.forward(h, x, pos)
    want = rmodel.forward(x, pos, w, spec, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma)
    assert list(got) == list(rmodel.OUTPUT_KEYS)
    for key, value in want.items():
        assert got[key].shape == value.shape, key
        scale = max(1.0, float(np.abs(value).max()))
        np.testing.assert_allclose(got[key], value, atol=3e-5 * scale, rtol=1e-4, err_msg=key)


def test_get_set_weights_round_trip_and_strictness():
    mc, spec, w, _x, _pos = _setup(2)
    h = api.build(mc, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    got = api.get_weights(h)
    assert list(got) == spec.param_names()
    for k in w:
        np.testing.assert_array_equal(got[k], w[k])
    w2 = dict(w)
    w2["encoder.block0.conv0.kernel"] = w["encoder.block0.conv0.kernel"] * 2
    api.set_weights(h, w2)
    np.testing.assert_array_equal(api.get_weights(h)["encoder.block0.conv0.kernel"], w2["encoder.block0.conv0.kernel"])
    bad = dict(w)
    bad.pop("probe.imag")
    with pytest.raises(ValueError, match="probe.imag"):
        api.set_weights(h, bad)


def test_build_without_weights_uses_params_probe_scale_and_seed():
    N = 32
    probe = ref.normalize_probe(ref.default_probe(N), 4.0) * (1 + 0.5j)
    params.cfg["probe"] = probe[..., None].astype(np.complex64)
    params.cfg["intensity_scale"] = 5.0
    params.cfg["subsample_seed"] = 11
    mc = ModelConfig(N=N, gridsize=1, n_filters_scale=1)
    w = api.get_weights(api.build(mc, weights=None, probe_mask=False, gaussian_smoothing_sigma=0.0))
    expected = init_canonical_weights(network_spec_from_config(mc), seed=11, log_scale=math.log(5.0), probe=probe)
    for k in expected:
        np.testing.assert_array_equal(w[k], expected[k], err_msg=k)


@pytest.mark.parametrize("nll,mae", [(1.0, 0.0), (0.0, 1.0), (0.7, 0.3)])
def test_losses_match_reference(nll, mae):
    mc, spec, w, x, pos = _setup(2)
    h = api.build(mc, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    losses, grads = api.loss_and_grads(h, x, pos, nll_weight=nll, mae_weight=mae)
    want = rmodel.losses(rmodel.forward(x, pos, w, spec, probe_mask=False, gaussian_smoothing_sigma=0.0), x,
                         nll_weight=nll, mae_weight=mae)
    for key in ("poisson_nll", "mae", "total"):
        assert losses[key] == pytest.approx(want[key], rel=2e-5, abs=1e-5), key
    # trainable by default: every conv parameter and the log scale, not the probe
    assert set(grads) == set(spec.param_names()) - {"probe.real", "probe.imag"}


def test_masked_losses_match_reference():
    mc, spec, w, x, pos = _setup(2)
    bad = np.zeros((mc.N, mc.N), bool)
    rows, cols = np.random.default_rng(3).integers(0, mc.N, (2, 20))
    bad[rows, cols] = True
    x = x.copy()
    x[:, bad, :] = 50.0 * x.max()
    h = api.build(mc, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    losses, _ = api.loss_and_grads(h, x, pos, nll_weight=1.0, mae_weight=0.5, bad_pixels=bad)
    out = rmodel.forward(x, pos, w, spec, probe_mask=False, gaussian_smoothing_sigma=0.0)
    want = rmodel.losses(out, x, nll_weight=1.0, mae_weight=0.5, bad_pixels=bad)
    for key in ("poisson_nll", "mae", "total"):
        assert losses[key] == pytest.approx(want[key], rel=2e-5, abs=1e-5), key
    unmasked = rmodel.losses(out, x, nll_weight=1.0, mae_weight=0.5)
    assert abs(want["total"] - unmasked["total"]) > 1e-2 * abs(unmasked["total"])


@pytest.mark.parametrize("gridsize,names", [
    (2, ["intensity_scale.log_scale"]),
    (2, ["encoder.block0.conv0.kernel"]),
    (1, ["decoder_amp.head.center.bias", "decoder_phase.block0.conv1.kernel", "decoder_amp.head.border.conv.bias"]),
])
def test_gradients_match_reference_finite_differences(gridsize, names):
    """Directional derivative of the reference loss (central differences, float64) vs the torch gradient."""
    mc, spec, w, x, pos = _setup(gridsize, log_scale=0.3)
    h = api.build(mc, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    _losses, grads = api.loss_and_grads(h, x, pos, nll_weight=1.0, mae_weight=0.5)
    rng = np.random.default_rng(7)
    direction = {n: rng.normal(size=w[n].shape) for n in names}
    norm = math.sqrt(sum(float(np.sum(d**2)) for d in direction.values()))
    direction = {n: d / norm for n, d in direction.items()}

    def loss_at(t):
        ww = {k: (v.astype(np.float64) + t * direction[k] if k in direction else v) for k, v in w.items()}
        out = rmodel.forward(x, pos, ww, spec, probe_mask=False, gaussian_smoothing_sigma=0.0)
        return rmodel.losses(out, x, nll_weight=1.0, mae_weight=0.5)["total"]

    eps = 1e-3
    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    analytic = sum(float(np.sum(grads[n].astype(np.float64) * direction[n])) for n in names)
    assert analytic == pytest.approx(fd, rel=2.5e-2, abs=1e-3)


def test_probe_and_scale_gradients_in_float64():
    """Probe gradients (Poisson loss near dark pixels is too stiff for float32 reference differences) in float64."""
    import torch

    from ptycho_torch.losses import LossWeights, compute_losses

    mc, spec, w, x, pos = _setup(2, log_scale=0.3)
    model = api.build(mc, weights=w, probe_mask=True, gaussian_smoothing_sigma=0.5, probe_trainable=True).model
    model.double()
    xt = torch.tensor(cv.tf_to_torch_images(x), dtype=torch.float64)
    pt = torch.tensor(cv.tf_to_torch_positions(pos), dtype=torch.float64)
    params_ = [model.probe_real, model.probe_imag, model.log_scale]

    def loss():
        return compute_losses(model.forward_intermediates(xt, pt), xt, LossWeights(1.0, 0.5))["total"]

    grads = torch.autograd.grad(loss(), params_)
    gen = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params_]
    eps = 1e-6
    with torch.no_grad():
        for p, d in zip(params_, direction, strict=True):
            p += eps * d
        up = float(loss())
        for p, d in zip(params_, direction, strict=True):
            p -= 2 * eps * d
        down = float(loss())
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True))
    assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-3)


def test_train_steps_follow_reference_adam():
    """Each step is the Keras Adam update (reference adam_step) of the loss gradient at the current weights."""
    mc, spec, w, x, pos = _setup(2, B=2)
    rng = np.random.default_rng(3)
    batches = [(x, pos), ((3 * rng.random(x.shape)).astype(np.float32), pos[::-1].copy()), (x, pos)]
    h = api.build(mc, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    probe_h = api.build(mc, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    state = AdamState()
    for i, (bx, bp) in enumerate(batches):
        current = api.get_weights(h)
        api.set_weights(probe_h, current)
        losses, grads = api.loss_and_grads(probe_h, bx, bp)
        expected = adam_step(current, grads, state, lr=2e-3)
        got_loss = api.train_steps(h, [(bx, bp)], lr=2e-3)  # the optimizer state persists across calls
        assert got_loss == pytest.approx([losses["total"]], rel=1e-6)
        got = api.get_weights(h)
        for k in expected:
            np.testing.assert_allclose(got[k], expected[k], rtol=1e-6, atol=1e-7, err_msg=f"step {i}: {k}")
    assert not np.array_equal(got["encoder.block0.conv0.kernel"], w["encoder.block0.conv0.kernel"])
    assert api.train_steps(h, [], lr=1e-3) == []


def test_physics_ops_match_reference(rng):
    N, C, B, P = 16, 4, 3, 26
    cplx = lambda *s: (rng.normal(size=s) + 1j * rng.normal(size=s)).astype(np.complex64)  # noqa: E731
    patches, positions = cplx(B, N, N, C), rng.uniform(-3, 3, (B, 1, 2, C))
    canvas, probe = cplx(B, P, P, 1), cplx(N, N)
    flat, offsets = cplx(5, N, N), rng.uniform(-4, 4, (5, 2))
    cases = {
        "translate": (flat, offsets),
        "reassemble_patches": (patches, positions, P),
        "extract_patches": (canvas, positions, N),
        "trim": (canvas, N),
        "pad_object": (patches[..., :1], P),
        "diffract_channels": (patches,),
        "diffract": (flat,),
        "gaussian_smooth3x3": (patches, 0.8),
        "reassemble_position": (patches[..., :1], rng.uniform(10, 30, (B, 1, 2, 1)), 8),
        "pad_to": (flat, 20),
        "center_crop": (flat, 10),
        "combine_complex": (rng.random((4, 4)), rng.uniform(-3, 3, (4, 4))),
    }
    for name, args in cases.items():
        got, want = api.physics_op(name, *args), getattr(ref, name)(*args)
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, atol=3e-5 * scale, rtol=1e-4, err_msg=name)
    kw = {"probe_mask": True, "gaussian_smoothing_sigma": 0.5}
    np.testing.assert_allclose(api.physics_op("illuminate", patches, probe, **kw),
                               ref.illuminate(patches, probe, **kw), atol=1e-4)
    yt, yp = rng.uniform(0, 4, (2, 8)), rng.uniform(0.5, 4, (2, 8))
    assert api.physics_op("poisson_nll", yt, yp) == pytest.approx(ref.poisson_nll(yt, yp), rel=1e-5)
    assert api.physics_op("mean_absolute_error", yt, yp) == pytest.approx(ref.mean_absolute_error(yt, yp), rel=1e-5)
    d = rng.uniform(0, 2, (2, N, N, C)).astype(np.float32)
    (xg, ng), (xw, nw) = api.physics_op("normalize_x_full", d), ref.normalize_x_full(d)
    assert ng == pytest.approx(nw)
    np.testing.assert_allclose(xg, xw, atol=1e-6)
    with pytest.raises(ValueError, match="unknown physics op"):
        api.physics_op("no_such_op")


def test_save_and_load_bundle_round_trip(tmp_path):
    mc, spec, w, x, pos = _setup(2)
    h = api.build(mc, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    snapshot = params.snapshot()
    snapshot.update({"N": 32, "gridsize": 2, "n_filters_scale": 1, "intensity_scale": 2.5})
    path = api.save_bundle(h, tmp_path, snapshot)
    assert path.name == "wts.h5.zip"
    params.cfg["intensity_scale"] = 99.0
    h2 = api.load_bundle(tmp_path)
    assert params.cfg["intensity_scale"] == 2.5
    assert (h2.model_config.N, h2.model_config.gridsize) == (32, 2)
    a, b = api.forward(h, x, pos), api.forward(h2, x, pos)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert cv.padded_size(32, 2) == a["padded_object"].shape[1]

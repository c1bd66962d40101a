"""``ptycho_tf.parity_api`` (TensorFlow) against the NumPy reference model, losses and optimiser."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ptycho import params
from ptycho.canonical_weights import init_canonical_weights
from ptycho.config.config import ModelConfig
from ptycho.network_spec import network_spec_from_config
from ptycho.reference import model as ref_model
from ptycho.reference import physics as ref
from ptycho.reference.optim import AdamState, adam_step
from ptycho_tf import parity_api as api

N = 32


def _config(**kw) -> ModelConfig:
    return ModelConfig(N=N, n_filters_scale=1, **kw)


def _weights(cfg: ModelConfig, seed: int = 5, scale: float = 3.0) -> dict[str, np.ndarray]:
    spec = network_spec_from_config(cfg)
    return init_canonical_weights(
        spec, seed=seed, log_scale=math.log(scale), probe=ref.normalize_probe(ref.default_probe(N), 4.0)
    )


def _batch(rng: np.random.Generator, cfg: ModelConfig, B: int = 3) -> tuple[np.ndarray, np.ndarray]:
    C = cfg.gridsize**2
    x = rng.uniform(0.0, 4.0, (B, N, N, C)).astype(np.float32)
    pos = rng.uniform(-4.0, 4.0, (B, 1, 2, C))
    if C > 1:
        pos -= pos.mean(axis=3, keepdims=True)
    return x, pos.astype(np.float32)


def _relerr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize(
    "kw,probe_mask,sigma",
    [
        (dict(gridsize=1), False, 0.0),
        (dict(gridsize=2), True, 0.0),
        (dict(gridsize=2, object_big=False), False, 0.9),
        (dict(gridsize=1, pad_object=False, amp_activation="softplus"), True, 0.5),
    ],
)
def test_forward_matches_the_reference_at_every_intermediate(rng, kw, probe_mask, sigma):
    cfg = _config(**kw)
    w = _weights(cfg)
    h = api.build(cfg, weights=w, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma)
    x, pos = _batch(rng, cfg)
    got = api.forward(h, x, pos)
    want = ref_model.forward(x, pos, w, h.spec, probe_mask=probe_mask, gaussian_smoothing_sigma=sigma)
    assert list(got) == list(ref_model.OUTPUT_KEYS)
    for key in ref_model.OUTPUT_KEYS:
        assert got[key].shape == want[key].shape and got[key].dtype == want[key].dtype, key
        assert _relerr(got[key], want[key]) < 2e-5, key


def test_weights_round_trip_through_the_handle():
    cfg = _config(gridsize=1)
    h = api.build(cfg, weights=_weights(cfg, seed=1), probe_mask=False, gaussian_smoothing_sigma=0.0)
    w2 = _weights(cfg, seed=2, scale=9.0)
    api.set_weights(h, w2)
    got = api.get_weights(h)
    assert list(got) == list(w2) and all(np.array_equal(got[k], w2[k]) for k in w2)


def test_build_without_weights_initialises_from_params():
    cfg = _config(gridsize=1)
    probe = ref.normalize_probe(ref.default_probe(N), 4.0)
    params.cfg["probe"] = probe[..., None]
    params.cfg["intensity_scale"] = 11.0
    h = api.build(cfg, weights=None, probe_mask=False, gaussian_smoothing_sigma=0.0, seed=4)
    want = init_canonical_weights(h.spec, seed=4, log_scale=math.log(11.0), probe=probe)
    assert all(np.array_equal(api.get_weights(h)[k], want[k]) for k in want)


@pytest.fixture(scope="module")
def gs2_handle():
    cfg = _config(gridsize=2)
    w = _weights(cfg)
    return cfg, w, api.build(cfg, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0, probe_trainable=True)


def test_losses_match_the_reference(gs2_handle, rng):
    cfg, w, h = gs2_handle
    api.set_weights(h, w)
    x, pos = _batch(rng, cfg)
    losses, grads = api.loss_and_grads(h, x, pos, nll_weight=1.0, mae_weight=0.5)
    out = ref_model.forward(x, pos, w, h.spec, probe_mask=False, gaussian_smoothing_sigma=0.0)
    want = ref_model.losses(out, x, nll_weight=1.0, mae_weight=0.5)
    for k in ("poisson_nll", "mae", "total"):
        assert losses[k] == pytest.approx(want[k], rel=2e-5, abs=1e-5), k
    spec = h.spec
    assert set(grads) == set(spec.param_names())  # probe_trainable=True, log scale trainable
    assert all(grads[k].shape == spec.param_shapes()[k] for k in grads)


def test_masked_losses_and_training_match_the_reference(gs2_handle, rng):
    cfg, w, h = gs2_handle
    api.set_weights(h, w)
    x, pos = _batch(rng, cfg)
    bad = np.zeros((cfg.N, cfg.N), bool)
    bad[rng.integers(0, cfg.N, 20), rng.integers(0, cfg.N, 20)] = True
    x[:, bad, :] = 50.0 * x.max()  # hot pixels: ignored only if the mask is honoured
    losses, _ = api.loss_and_grads(h, x, pos, nll_weight=1.0, mae_weight=0.5, bad_pixels=bad)
    out = ref_model.forward(x, pos, w, h.spec, probe_mask=False, gaussian_smoothing_sigma=0.0)
    want = ref_model.losses(out, x, nll_weight=1.0, mae_weight=0.5, bad_pixels=bad)
    for k in ("poisson_nll", "mae", "total"):
        assert losses[k] == pytest.approx(want[k], rel=2e-5, abs=1e-5), k
    unmasked = ref_model.losses(out, x, nll_weight=1.0, mae_weight=0.5)
    assert abs(want["total"] - unmasked["total"]) > 1e-2 * abs(unmasked["total"])
    steps = api.train_steps(h, [(x, pos)], lr=1e-3, nll_weight=1.0, mae_weight=0.5, bad_pixels=bad)
    assert steps[0] == pytest.approx(want["total"], rel=2e-5, abs=1e-5)


def _consistent_batch(cfg: ModelConfig, spec) -> tuple[np.ndarray, np.ndarray]:
    """Diffraction-like targets: the prediction of another network, so the loss is smooth near the weights."""
    x0, pos = _batch(np.random.default_rng(77), cfg)
    out = ref_model.forward(x0, pos, _weights(cfg, seed=6), spec, probe_mask=False, gaussian_smoothing_sigma=0.0)
    return out["pred_amplitude"], pos


@pytest.mark.parametrize(
    "name,index,eps",
    [
        ("intensity_scale.log_scale", (), 1e-4),
        ("decoder_amp.head.center.bias", (2,), 1e-3),
        ("decoder_phase.head.center.bias", (1,), 1e-3),
        ("encoder.block0.conv0.kernel", (1, 1, 0, 3), 1e-3),
        ("probe.real", (16, 15), 1e-4),
        ("probe.imag", (12, 17), 1e-4),
    ],
)
def test_gradients_match_central_differences_of_the_reference(gs2_handle, name, index, eps):
    cfg, w, h = gs2_handle
    api.set_weights(h, w)
    x, pos = _consistent_batch(cfg, h.spec)
    _, grads = api.loss_and_grads(h, x, pos, nll_weight=1.0, mae_weight=0.5)

    def total(delta: float) -> float:
        w2 = {k: v.copy() for k, v in w.items()}
        w2[name] = np.asarray(w2[name], np.float64)
        w2[name][index] += delta
        out = ref_model.forward(x, pos, w2, h.spec, probe_mask=False, gaussian_smoothing_sigma=0.0)
        return ref_model.losses(out, x, nll_weight=1.0, mae_weight=0.5)["total"]

    fd = (total(eps) - total(-eps)) / (2 * eps)
    got = float(np.asarray(grads[name])[index])
    assert got != 0.0
    assert got == pytest.approx(fd, rel=2e-2, abs=2e-6)


def test_train_steps_follow_the_reference_adam_update(rng):
    """Each step equals reference ``adam_step`` applied to the handle's weights with the same gradients.

    The gradients come from a second handle holding the same weights (same graph, same weights:
    the same numbers); the Adam moments carry over between steps and between calls.
    """
    cfg = _config(gridsize=1)
    w = _weights(cfg, seed=3)
    batches = [_batch(rng, cfg, B=2) for _ in range(3)]
    h = api.build(cfg, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    grads_h = api.build(cfg, weights=w, probe_mask=False, gaussian_smoothing_sigma=0.0)
    state = AdamState()
    for i, batch in enumerate(batches):
        before = api.get_weights(h)
        api.set_weights(grads_h, before)
        lo, grads = api.loss_and_grads(grads_h, *batch, nll_weight=1.0, mae_weight=0.25)
        want = adam_step(before, grads, state, lr=2e-3)
        (loss,) = api.train_steps(h, [batch], lr=2e-3, nll_weight=1.0, mae_weight=0.25)
        assert loss == pytest.approx(lo["total"], rel=1e-6), i
        got = api.get_weights(h)
        for k in want:
            # float32 (Keras) vs float64 (reference) arithmetic: ~1e-8, i.e. 5e-6 of one step of size lr
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=f"step {i}: {k}")
    assert state.step == 3
    assert not np.array_equal(got["encoder.block0.conv0.kernel"], w["encoder.block0.conv0.kernel"])
    np.testing.assert_array_equal(got["probe.real"], w["probe.real"])  # probe frozen by default


def test_physics_op_runs_the_tf_op_of_that_name(rng):
    imgs = rng.standard_normal((2, 8, 8)).astype(np.float32)
    off = np.array([[1.5, -0.5], [0.0, 2.0]], np.float32)
    np.testing.assert_allclose(api.physics_op("translate", imgs, off), ref.translate(imgs, off), atol=1e-6)
    x, norm = api.physics_op("normalize_x_full", rng.uniform(0, 3, (2, 8, 8, 1)).astype(np.float32))
    assert isinstance(x, np.ndarray) and isinstance(norm, float)
    assert isinstance(api.physics_op("poisson_nll", np.ones((2, 2)), np.ones((2, 2))), float)
    with pytest.raises(ValueError, match="unknown physics op"):
        api.physics_op("warp_drive")


def test_save_and_load_bundle_through_the_model_manager(tmp_path, rng):
    cfg = _config(gridsize=2)
    w = _weights(cfg, seed=8)
    h = api.build(cfg, weights=w, probe_mask=True, gaussian_smoothing_sigma=0.0)
    snap = params.snapshot()
    snap.update(intensity_scale=3.0, probe=ref.normalize_probe(ref.default_probe(N), 4.0)[..., None], N=N, gridsize=2)
    path = api.save_bundle(h, tmp_path, snap)
    assert path.name == "wts.h5.zip"
    params.cfg["N"] = 64
    h2 = api.load_bundle(path)
    assert params.cfg["N"] == N and params.cfg["intensity_scale"] == 3.0
    x, pos = _batch(rng, cfg)
    a, b = api.forward(h, x, pos), api.forward(h2, x, pos)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert h2.models.probe_mask is True

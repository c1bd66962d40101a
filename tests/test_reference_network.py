"""The NumPy CNN (ptycho.reference.network) and the full reference forward (ptycho.reference.model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import correlate2d

from ptycho.canonical_weights import init_canonical_weights
from ptycho.conventions import PHASE_SCALE
from ptycho.network_spec import build_network_spec
from ptycho.reference import physics
from ptycho.reference.model import OUTPUT_KEYS, forward, losses
from ptycho.reference.network import (
    activation,
    cnn_forward,
    conv2d_same,
    maxpool2x2,
    upsample_nearest,
)


def _weights(spec, seed=0, log_scale=0.0):
    N = spec.N
    return init_canonical_weights(spec, seed=seed, log_scale=log_scale, probe=physics.default_probe(N))


def _x(spec, B=2, seed=1):
    return np.random.default_rng(seed).random((B, spec.N, spec.N, spec.C)).astype(np.float32)


@pytest.fixture(scope="module")
def spec32():
    return build_network_spec(32, 2, n_filters_scale=1)


@pytest.fixture(scope="module")
def w32(spec32):
    return _weights(spec32, seed=5)


# ------------------------------------------------------------------ primitives
def test_conv_matches_scipy_correlate2d():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 2))
    k = rng.normal(size=(3, 3, 2, 3))
    b = rng.normal(size=3)
    y = conv2d_same(x, k, b)
    assert y.shape == (2, 5, 6, 3)
    for n in range(2):
        for o in range(3):
            ref = sum(correlate2d(x[n, :, :, c], k[:, :, c, o], mode="same") for c in range(2)) + b[o]
            np.testing.assert_allclose(y[n, :, :, o], ref, rtol=0, atol=1e-12)


def test_conv_is_cross_correlation_by_hand():
    # A kernel with a single 1 at [0, 0] reads xpad[h + 0, w + 0] = x[h - 1, w - 1]: content moves
    # down-right (a true convolution would move it up-left).
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1)
    k = np.zeros((3, 3, 1, 1))
    k[0, 0, 0, 0] = 1.0
    y = conv2d_same(x, k, np.zeros(1))[0, :, :, 0]
    np.testing.assert_array_equal(y, [[0, 0, 0], [0, 0, 1], [0, 3, 4]])
    # The 3x3 box sum of the centre pixel is the sum of everything.
    y = conv2d_same(x, np.ones((3, 3, 1, 1)), np.array([0.5]))[0, :, :, 0]
    assert y[1, 1] == 36.5 and y[0, 0] == 0 + 1 + 3 + 4 + 0.5


def test_conv_matches_torch_style_oihw_formula():
    # torch: y[b, o, h, w] = bias[o] + sum_{c, i, j} W[o, c, i, j] * xpad[b, c, h + i, w + j],
    # with W = HWIO.transpose(3, 2, 0, 1).
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 4, 4, 2))
    k = rng.normal(size=(3, 3, 2, 3))
    b = rng.normal(size=3)
    W = k.transpose(3, 2, 0, 1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).transpose(0, 3, 1, 2)
    ref = np.zeros((1, 3, 4, 4))
    for o in range(3):
        for h in range(4):
            for w in range(4):
                ref[0, o, h, w] = b[o] + np.sum(W[o] * xp[0, :, h : h + 3, w : w + 3])
    np.testing.assert_allclose(conv2d_same(x, k, b).transpose(0, 3, 1, 2), ref, atol=1e-12)


def test_conv_linearity_and_translation_equivariance():
    rng = np.random.default_rng(2)
    k = rng.normal(size=(3, 3, 3, 4))
    zero = np.zeros(4)
    a, c = rng.normal(size=(2, 1, 12, 12, 3))
    np.testing.assert_allclose(
        conv2d_same(2.0 * a - 3.0 * c, k, zero),
        2.0 * conv2d_same(a, k, zero) - 3.0 * conv2d_same(c, k, zero),
        atol=1e-12,
    )
    # Compact support away from the edges: zero padding equals the zero background, so an integer
    # shift of the input shifts the output exactly.
    img = np.zeros((1, 12, 12, 3))
    img[:, 3:6, 2:5, :] = rng.normal(size=(1, 3, 3, 3))
    shifted = np.roll(img, (2, 3), axis=(1, 2))
    np.testing.assert_allclose(
        conv2d_same(shifted, k, zero), np.roll(conv2d_same(img, k, zero), (2, 3), axis=(1, 2)), atol=1e-12
    )


def test_pool_and_upsample_by_hand():
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(maxpool2x2(x)[0, :, :, 0], [[5, 7], [13, 15]])
    u = upsample_nearest(np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1))[0, :, :, 0]
    np.testing.assert_array_equal(u, [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def test_activations():
    x = np.array([-800.0, -2.0, 0.0, 2.0, 800.0])
    with np.errstate(over="raise"):
        s = activation(x, "sigmoid")
    np.testing.assert_allclose(s, [0.0, 1 / (1 + math.e**2), 0.5, 1 / (1 + math.e**-2), 1.0])
    np.testing.assert_allclose(activation(x, "swish"), x * s)
    np.testing.assert_allclose(activation(x[1:4], "softplus"), np.log1p(np.exp(x[1:4])))
    assert activation(x, "softplus")[-1] == 800.0
    np.testing.assert_array_equal(activation(x, "relu"), [0, 0, 0, 2, 800])
    np.testing.assert_allclose(activation(x, "tanh", PHASE_SCALE), PHASE_SCALE * np.tanh(x))
    with pytest.raises(ValueError, match="unknown activation"):
        activation(x, "gelu")


# ------------------------------------------------------------------ the CNN
@pytest.mark.parametrize(
    "cfg",
    [
        dict(N=64, gridsize=1),
        dict(N=32, gridsize=2, n_filters_scale=1),
        dict(N=32, gridsize=2, n_filters_scale=1, object_big=False),
        dict(N=32, gridsize=3, n_filters_scale=1, pad_object=False),
        dict(N=32, gridsize=1, n_filters_scale=1, probe_big=False),
    ],
)
def test_cnn_shapes_and_dtypes(cfg):
    spec = build_network_spec(**cfg)
    out = cnn_forward(_x(spec), _weights(spec), spec)
    N, Co = spec.N, spec.Co
    assert out["encoded"].shape == (2, 8, 8, 128 * spec.n_filters_scale)
    assert out["encoded"].dtype == np.float32
    for key in ("amp", "phase"):
        assert out[key].shape == (2, N, N, Co) and out[key].dtype == np.float32
    assert out["object_patches"].shape == (2, N, N, Co) and out["object_patches"].dtype == np.complex64
    np.testing.assert_allclose(
        out["object_patches"], out["amp"] * np.exp(1j * out["phase"].astype(np.float64)), rtol=1e-6, atol=1e-7
    )


def test_keep_all_returns_every_layer(spec32, w32):
    out = cnn_forward(_x(spec32), w32, spec32, keep_all=True)
    for layer in spec32.layers:
        assert out[layer.name].shape == (2, *layer.out_shape), layer.name
    assert np.array_equal(out[spec32.amp_name], out["amp"])


def test_ranges_with_border_branch(spec32, w32):
    out = cnn_forward(3.0 * _x(spec32), w32, spec32)
    N = spec32.N
    centre = physics.center_mask(N).astype(bool)
    amp_c, ph_c = out["amp"][:, centre], out["phase"][:, centre]
    assert np.all((amp_c > 0) & (amp_c < 1))  # sigmoid
    assert np.all(np.abs(ph_c) <= np.pi)  # pi * tanh
    # Outside the centre only the swish border branch contributes (for both heads).
    for key in ("amp", "phase"):
        border = out[key][:, ~centre]
        assert np.all(border >= -0.2785)  # min of x * sigmoid(x) is about -0.27846
        assert np.any(border != 0)


@pytest.mark.parametrize("pad_object", [True, False])
def test_ranges_without_border_branch(pad_object):
    spec = build_network_spec(32, 1, n_filters_scale=1, probe_big=False, pad_object=pad_object)
    out = cnn_forward(3.0 * _x(spec), _weights(spec, seed=9), spec)
    assert np.all(np.abs(out["phase"]) <= np.pi)
    assert np.all((out["amp"] >= 0) & (out["amp"] < 1))
    if pad_object:  # the zero padding of the centre branch is all there is outside the centre
        border = physics.border_mask(32).astype(bool)
        assert not out["amp"][:, border].any() and not out["phase"][:, border].any()
    else:
        assert np.all(out["amp"] > 0)


@pytest.mark.parametrize(("act", "low"), [("relu", 0.0), ("softplus", 0.0), ("swish", -0.2785)])
def test_amp_activation_ranges(act, low):
    spec = build_network_spec(32, 1, n_filters_scale=1, probe_big=False, amp_activation=act)
    amp = cnn_forward(_x(spec), _weights(spec, seed=2), spec)["amp"]
    assert amp.min() >= low


def test_head_topology_by_hand(spec32, w32):
    # Zero every head kernel and set the biases: the centre block must be act(b_centre), the
    # border swish(b_border), independent of the input.
    w = dict(w32)
    bias = {"decoder_amp": (0.3, -1.2), "decoder_phase": (-0.7, 2.5)}
    for d, (bc, bb) in bias.items():
        for conv in ("center", "border.conv"):
            w[f"{d}.head.{conv}.kernel"] = np.zeros_like(w[f"{d}.head.{conv}.kernel"])
        w[f"{d}.head.center.bias"] = np.full(spec32.Co, bc, np.float32)
        w[f"{d}.head.border.conv.bias"] = np.full(spec32.Co, bb, np.float32)
    out = cnn_forward(_x(spec32), w, spec32)
    centre = physics.center_mask(32).astype(bool)
    swish = lambda v: v / (1 + math.exp(-v))  # noqa: E731
    f32 = np.float32
    expected = {
        "amp": (1 / (1 + math.exp(-f32(0.3))), swish(f32(-1.2))),
        "phase": (math.pi * math.tanh(f32(-0.7)), swish(f32(2.5))),
    }
    for key, (vc, vb) in expected.items():
        np.testing.assert_allclose(out[key][:, centre], vc, rtol=1e-6)
        np.testing.assert_allclose(out[key][:, ~centre], vb, rtol=1e-6)


def test_border_branch_reads_the_last_c_outer_channels(spec32, w32):
    # The last body conv feeds channels [:-4] to the centre conv and [-4:] to the border branch:
    # perturbing channel 0 changes only the centre block, the last channel only the border.
    x = _x(spec32)
    base = cnn_forward(x, w32, spec32)["amp"]
    centre = physics.center_mask(32).astype(bool)
    last = f"decoder_amp.block{len(spec32.decoder_filters) - 1}.conv1.bias"
    n_body = spec32.decoder_filters[-1]
    for channel, changes_centre in ((0, True), (n_body - 1, False)):
        w = dict(w32)
        b = w[last].copy()
        b[channel] += 5.0
        w[last] = b
        amp = cnn_forward(x, w, spec32)["amp"]
        diff = np.abs(amp - base)
        if changes_centre:
            assert diff[:, centre].max() > 1e-4 and diff[:, ~centre].max() == 0
        else:
            assert diff[:, ~centre].max() > 1e-4 and diff[:, centre].max() == 0
    # The phase decoder is untouched by amplitude weights.
    assert np.array_equal(cnn_forward(x, w, spec32)["phase"], cnn_forward(x, w32, spec32)["phase"])


def test_encoder_is_positively_homogeneous_without_biases(spec32, w32):
    # conv (no bias), ReLU and max-pool all commute with multiplication by a > 0.
    x = _x(spec32)
    out1 = cnn_forward(x, w32, spec32)["encoded"]  # init biases are zero
    out3 = cnn_forward(3.0 * x, w32, spec32)["encoded"]
    np.testing.assert_allclose(out3, 3.0 * out1, rtol=1e-5, atol=1e-6)


def test_cnn_rejects_wrong_input(spec32, w32):
    with pytest.raises(ValueError, match="shape"):
        cnn_forward(np.zeros((1, 32, 32, 1), np.float32), w32, spec32)
    w = dict(w32)
    del w["encoder.block0.conv0.kernel"]
    with pytest.raises(KeyError, match="encoder.block0.conv0.kernel"):
        cnn_forward(_x(spec32), w, spec32)


# ------------------------------------------------------------------ the full forward
def _positions(spec, B=2, seed=3):
    rng = np.random.default_rng(seed)
    p = rng.uniform(-3, 3, size=(B, 1, 2, spec.C))
    return (p - p.mean(axis=3, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    "cfg",
    [dict(N=32, gridsize=2, n_filters_scale=1), dict(N=32, gridsize=1, n_filters_scale=1, object_big=False)],
)
def test_forward_keys_shapes_and_identities(cfg):
    spec = build_network_spec(**cfg)
    s = 25.0
    w = _weights(spec, seed=4, log_scale=math.log(s))
    x_scaled = s * _x(spec)
    out = forward(x_scaled, _positions(spec), w, spec, probe_mask=False, gaussian_smoothing_sigma=0.0)
    assert tuple(out) == OUTPUT_KEYS
    N, C, Co = spec.N, spec.C, spec.Co
    P = out["padded_object"].shape[1]
    shapes = {
        "scaled_input": (2, N, N, C),
        "encoded": (2, 8, 8, 128),
        "amp": (2, N, N, Co),
        "phase": (2, N, N, Co),
        "decoder_object": (2, N, N, Co),
        "padded_object": (2, P, P, 1),
        "trimmed_object": (2, N, N, 1),
        "object_patches": (2, N, N, C),
        "illuminated": (2, N, N, C),
        "amplitude": (2, N, N, C),
        "pred_amplitude": (2, N, N, C),
        "pred_intensity": (2, N, N, C),
    }
    assert {k: v.shape for k, v in out.items()} == shapes
    np.testing.assert_allclose(out["scaled_input"], x_scaled / s, rtol=1e-6)
    np.testing.assert_allclose(out["pred_intensity"], out["pred_amplitude"].astype(np.float64) ** 2, rtol=1e-6)
    np.testing.assert_allclose(out["pred_amplitude"], s * out["amplitude"].astype(np.float64), rtol=1e-6)
    cnn = cnn_forward(out["scaled_input"], w, spec)
    assert np.array_equal(out["decoder_object"], cnn["object_patches"])
    probe = w["probe.real"] + 1j * w["probe.imag"]
    np.testing.assert_allclose(out["illuminated"], probe[None, :, :, None] * out["object_patches"], atol=1e-6)


def test_forward_is_invariant_to_the_intensity_scale(spec32):
    # Feeding s * X with log_scale = log(s) gives the same CNN input, hence the same object.
    X = _x(spec32)
    pos = _positions(spec32)
    outs = []
    for s in (1.0, 1000.0):
        w = _weights(spec32, seed=6, log_scale=math.log(s))
        outs.append(forward(s * X, pos, w, spec32, probe_mask=True, gaussian_smoothing_sigma=0.5))
    np.testing.assert_allclose(outs[0]["decoder_object"], outs[1]["decoder_object"], rtol=1e-5, atol=1e-6)
    big, small = outs[1]["pred_amplitude"], 1000.0 * outs[0]["pred_amplitude"]
    np.testing.assert_allclose(big, small, rtol=1e-4, atol=1e-5 * float(np.max(big)))


def test_losses(spec32):
    s = 10.0
    w = _weights(spec32, seed=8, log_scale=math.log(s))
    x_scaled = s * _x(spec32)
    out = forward(x_scaled, _positions(spec32), w, spec32, probe_mask=False, gaussian_smoothing_sigma=0.0)
    got = losses(out, x_scaled, nll_weight=1.0, mae_weight=0.5)
    y = x_scaled.astype(np.float64)
    pi = out["pred_intensity"].astype(np.float64)
    nll = np.mean(pi - y**2 * np.log(pi))
    mae = np.mean(np.abs(y - out["pred_amplitude"]))
    assert got["poisson_nll"] == pytest.approx(nll, rel=1e-12)
    assert got["mae"] == pytest.approx(mae, rel=1e-12)
    assert got["total"] == pytest.approx(nll + 0.5 * mae, rel=1e-12)
    assert losses(out, x_scaled, nll_weight=0.0, mae_weight=2.0)["total"] == pytest.approx(2 * mae)

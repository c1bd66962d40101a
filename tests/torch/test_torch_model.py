"""The torch network built from the spec: parameter counts, canonical weights, layouts, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptycho.canonical_weights import init_canonical_weights, read_canonical_weights
from ptycho.config.config import ModelConfig
from ptycho.errors import CanonicalWeightsError
from ptycho.network_spec import build_network_spec, network_spec_from_config
from ptycho.reference import physics as ref
from ptycho_torch.canonical import (
    export_canonical,
    grads_to_canonical,
    load_canonical,
    native_name,
    read_into,
    write_from,
)
from ptycho_torch.model import INTERMEDIATE_KEYS, DiffractionToObj, PtychoPINN, build_model

pytestmark = pytest.mark.torch


def _model(N=32, gridsize=1, nfs=1, **kw):
    spec = build_network_spec(N, gridsize, n_filters_scale=nfs, **{k: kw.pop(k) for k in list(kw)
                                                                  if k in ("object_big", "probe_big", "pad_object")})
    model = PtychoPINN(spec, **kw)
    w = init_canonical_weights(spec, seed=1, log_scale=0.5, probe=ref.normalize_probe(ref.default_probe(N), 4.0))
    return load_canonical(model, w), w


def _inputs(spec, B=3, seed=0):
    rng = np.random.default_rng(seed)
    return (torch.tensor(rng.random((B, spec.C, spec.N, spec.N)).astype(np.float32) * 5),
            torch.tensor(rng.uniform(-2, 2, (B, spec.C, 1, 2)).astype(np.float32)))


@pytest.mark.parametrize("N,gridsize,expected", [(64, 1, 2_331_772), (64, 2, 2_340_208), (128, 1, 4_661_212)])
def test_parameter_counts_match_the_spec_and_upstream(N, gridsize, expected):
    model = build_model(ModelConfig(N=N, gridsize=gridsize))
    conv = sum(p.numel() for n, p in model.named_parameters() if n.startswith("cnn."))
    assert conv == model.spec.conv_param_count() == expected
    assert sum(p.numel() for p in model.parameters()) == model.spec.param_count() == expected + 1 + 2 * N * N


def test_canonical_round_trip_and_names():
    model, w = _model(gridsize=2)
    got = export_canonical(model)
    assert list(got) == model.spec.param_names()
    for k, v in w.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    assert native_name("encoder.block0.conv0.kernel") == "cnn.encoder.block0.conv0.weight"
    # OIHW in torch, HWIO canonical
    assert tuple(model.cnn.encoder.block0.conv0.weight.shape) == (64, 4, 3, 3)
    assert w["encoder.block0.conv0.kernel"].shape == (3, 3, 4, 64)
    torch.testing.assert_close(model.cnn.encoder.block0.conv0.weight,
                               torch.from_numpy(np.transpose(w["encoder.block0.conv0.kernel"], (3, 2, 0, 1))))


def test_canonical_file_round_trip_and_strictness(tmp_path):
    model, w = _model(gridsize=2)
    path = write_from(model, tmp_path / "w.h5", metadata={"note": "t"})
    weights, attrs = read_canonical_weights(path)
    assert attrs["backend"] == "pytorch" and attrs["gridsize"] == 2
    other, _ = _model(gridsize=2)
    with torch.no_grad():
        other.log_scale.zero_()
    read_into(other, path)
    assert float(other.log_scale.detach()) == pytest.approx(0.5)
    with pytest.raises(CanonicalWeightsError):
        read_into(_model(gridsize=1)[0], path)  # a gridsize-1 network cannot take gridsize-2 weights
    bad = dict(w)
    bad["decoder_amp.head.center.bias"] = np.zeros(3, np.float32)
    with pytest.raises(CanonicalWeightsError, match="decoder_amp.head.center.bias"):
        load_canonical(model, bad)


def test_trainable_flags_follow_the_config():
    model, _ = _model(intensity_scale_trainable=False, probe_trainable=True)
    assert not model.log_scale.requires_grad and model.probe_real.requires_grad and model.probe_imag.requires_grad
    x, pos = _inputs(model.spec)
    model.forward(x, pos)[2].mean().backward()
    grads = grads_to_canonical(model)
    assert "intensity_scale.log_scale" not in grads and "probe.real" in grads and "probe.imag" in grads


def test_channel_mismatch_is_rejected():
    model, _ = _model(gridsize=2)
    x, pos = _inputs(build_network_spec(32, 1, n_filters_scale=1))
    with pytest.raises(ValueError, match="C=4"):
        model.diffraction_to_obj(x, pos)


def test_forward_outputs_and_diffraction_to_obj_per_sample():
    model, _ = _model(gridsize=2)
    x, pos = _inputs(model.spec, B=5)
    with torch.no_grad():
        out = model.forward_intermediates(x, pos)
        assert list(out) == list(INTERMEDIATE_KEYS)
        trimmed, pred_amp, pred_int = model(x, pos)
        d2o = DiffractionToObj(model)(x, pos)
        single = model.diffraction_to_obj(x[3:4], pos[3:4])
    assert trimmed.shape == (5, 1, 32, 32) and trimmed.dtype == torch.complex64
    assert pred_amp.shape == pred_int.shape == (5, 4, 32, 32)
    torch.testing.assert_close(d2o, trimmed)
    torch.testing.assert_close(single, d2o[3:4], rtol=1e-5, atol=1e-5)
    assert model.object_patches(x).shape == (5, 4, 32, 32)


def test_channels_last_gives_the_same_result():
    model, _ = _model(gridsize=2)
    x, pos = _inputs(model.spec)
    with torch.no_grad():
        a = model.forward_intermediates(x, pos)
        model.use_channels_last(True)
        assert model.cnn.encoder.block0.conv0.weight.is_contiguous(memory_format=torch.channels_last)
        b = model.forward_intermediates(x, pos)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4 * max(1.0, float(a[key].abs().max())))


def test_bf16_autocast_runs_cnn_in_bf16_and_physics_in_float32():
    model, _ = _model(gridsize=1)
    x, pos = _inputs(model.spec)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_intermediates(x, pos)
    assert out["encoded"].dtype == torch.bfloat16
    assert out["decoder_object"].dtype == torch.complex64 and out["pred_intensity"].dtype == torch.float32
    with torch.no_grad():
        ref32 = model.forward_intermediates(x, pos)
    err = (out["trimmed_object"] - ref32["trimmed_object"]).abs().max() / ref32["trimmed_object"].abs().max()
    assert float(err) < 0.05


def test_spec_walk_covers_pad_object_false_and_probe_big_false():
    for kw in ({"pad_object": False}, {"probe_big": False}, {"object_big": False}):
        mc = ModelConfig(N=32, gridsize=2, n_filters_scale=1, **kw)
        model = build_model(mc)
        assert sum(p.numel() for p in model.cnn.parameters()) == network_spec_from_config(mc).conv_param_count()
        x, pos = _inputs(model.spec, B=2)
        with torch.no_grad():
            assert model.diffraction_to_obj(x, pos).shape == (2, 1, 32, 32)


def test_upsample_nearest_equals_interpolate_in_both_layouts():
    from ptycho_torch.layers import upsample_nearest

    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    want = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    torch.testing.assert_close(upsample_nearest(x), want, rtol=0, atol=0)
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    got = upsample_nearest(xc)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    g = torch.randn_like(want)
    (got * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(xc.grad, x.grad)

"""The backend-neutral network spec: upstream parameter counts, channel rules, names, topology."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from ptycho.conventions import DECODER_C_OUTER, PHASE_SCALE, SUPPORTED_N
from ptycho.errors import ConfigError
from ptycho.network_spec import (
    ACTIVATIONS,
    AMP_ACTIVATIONS,
    CANONICAL_KERNEL_LAYOUT,
    INPUT_NAME,
    LAYER_KINDS,
    build_network_spec,
    network_spec_from_config,
)

# Upstream Keras count_params() of the default 'cnn' network (upstream-tf.md §5, verified there).
UPSTREAM_COUNTS = [
    (64, 1, 2_331_772),
    (64, 2, 2_340_208),
    (128, 1, 4_661_212),
    (128, 2, 4_667_056),
    (256, 1, 12_912_268),
]

# The canonical parameters of N=64, gridsize=1 and every default, in spec order.  Changing any
# name or shape breaks every canonical weight file ever written: do it only with a format bump.
GOLDEN_N64_GS1 = [
    ("encoder.block0.conv0.kernel", (3, 3, 1, 64)),
    ("encoder.block0.conv0.bias", (64,)),
    ("encoder.block0.conv1.kernel", (3, 3, 64, 64)),
    ("encoder.block0.conv1.bias", (64,)),
    ("encoder.block1.conv0.kernel", (3, 3, 64, 128)),
    ("encoder.block1.conv0.bias", (128,)),
    ("encoder.block1.conv1.kernel", (3, 3, 128, 128)),
    ("encoder.block1.conv1.bias", (128,)),
    ("encoder.block2.conv0.kernel", (3, 3, 128, 256)),
    ("encoder.block2.conv0.bias", (256,)),
    ("encoder.block2.conv1.kernel", (3, 3, 256, 256)),
    ("encoder.block2.conv1.bias", (256,)),
    ("decoder_amp.block0.conv0.kernel", (3, 3, 256, 128)),
    ("decoder_amp.block0.conv0.bias", (128,)),
    ("decoder_amp.block0.conv1.kernel", (3, 3, 128, 128)),
    ("decoder_amp.block0.conv1.bias", (128,)),
    ("decoder_amp.block1.conv0.kernel", (3, 3, 128, 64)),
    ("decoder_amp.block1.conv0.bias", (64,)),
    ("decoder_amp.block1.conv1.kernel", (3, 3, 64, 64)),
    ("decoder_amp.block1.conv1.bias", (64,)),
    ("decoder_amp.head.center.kernel", (3, 3, 60, 1)),
    ("decoder_amp.head.center.bias", (1,)),
    ("decoder_amp.head.border.block.conv0.kernel", (3, 3, 4, 64)),
    ("decoder_amp.head.border.block.conv0.bias", (64,)),
    ("decoder_amp.head.border.block.conv1.kernel", (3, 3, 64, 64)),
    ("decoder_amp.head.border.block.conv1.bias", (64,)),
    ("decoder_amp.head.border.conv.kernel", (3, 3, 64, 1)),
    ("decoder_amp.head.border.conv.bias", (1,)),
    ("decoder_phase.block0.conv0.kernel", (3, 3, 256, 128)),
    ("decoder_phase.block0.conv0.bias", (128,)),
    ("decoder_phase.block0.conv1.kernel", (3, 3, 128, 128)),
    ("decoder_phase.block0.conv1.bias", (128,)),
    ("decoder_phase.block1.conv0.kernel", (3, 3, 128, 64)),
    ("decoder_phase.block1.conv0.bias", (64,)),
    ("decoder_phase.block1.conv1.kernel", (3, 3, 64, 64)),
    ("decoder_phase.block1.conv1.bias", (64,)),
    ("decoder_phase.head.center.kernel", (3, 3, 60, 1)),
    ("decoder_phase.head.center.bias", (1,)),
    ("decoder_phase.head.border.block.conv0.kernel", (3, 3, 4, 64)),
    ("decoder_phase.head.border.block.conv0.bias", (64,)),
    ("decoder_phase.head.border.block.conv1.kernel", (3, 3, 64, 64)),
    ("decoder_phase.head.border.block.conv1.bias", (64,)),
    ("decoder_phase.head.border.conv.kernel", (3, 3, 64, 1)),
    ("decoder_phase.head.border.conv.bias", (1,)),
    ("intensity_scale.log_scale", ()),
    ("probe.real", (64, 64)),
    ("probe.imag", (64, 64)),
]

ALL_VARIANTS = [
    dict(N=N, gridsize=gs, object_big=ob, probe_big=pb, pad_object=po)
    for N in SUPPORTED_N
    for gs in (1, 2, 3)
    for ob in (True, False)
    for pb in (True, False)
    for po in (True, False)
]


# ------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize(("N", "gridsize", "expected"), UPSTREAM_COUNTS)
def test_upstream_parameter_counts(N, gridsize, expected):
    spec = build_network_spec(N, gridsize, n_filters_scale=2)
    assert spec.conv_param_count() == expected
    assert spec.param_count() == expected + 1 + 2 * N * N  # log_scale + probe real/imag


def test_n64_has_22_convs_like_upstream():
    # Upstream: 44 trainable tensors = 22 Conv2D x (kernel, bias).
    spec = build_network_spec(64, 1)
    assert len(spec.conv_layers()) == 22
    assert len(spec.conv_params()) == 44


def test_n64_gs1_count_by_hand():
    # Every term written out: (3*3*in + 1) * out per conv.
    def conv(cin, cout):
        return (9 * cin + 1) * cout

    encoder = conv(1, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128) + conv(128, 256) + conv(256, 256)
    body = conv(256, 128) + conv(128, 128) + conv(128, 64) + conv(64, 64)
    head = conv(60, 1) + conv(4, 64) + conv(64, 64) + conv(64, 1)
    assert encoder + 2 * (body + head) == 2_331_772 == build_network_spec(64, 1).conv_param_count()


def test_probe_big_false_drops_the_border_branch():
    spec = build_network_spec(64, 1, probe_big=False)
    names = spec.param_names()
    assert not any(".head.border" in n for n in names)
    assert "decoder_amp.head.center.kernel" in names
    border_params = (9 * 4 + 1) * 64 + (9 * 64 + 1) * 64 + (9 * 64 + 1) * 1
    assert spec.conv_param_count() == 2_331_772 - 2 * border_params
    assert spec.amp_name == "decoder_amp.head.center_pad"
    assert spec.phase_name == "decoder_phase.head.center_pad"
    assert not any(layer.kind in ("mask_multiply", "add") for layer in spec.layers)


@pytest.mark.parametrize("probe_big", [True, False])
def test_pad_object_false_uses_the_full_frame_head(probe_big):
    # Upstream: pad_object=False ignores probe_big; act(conv(Conv_Up_block(h, nfs*2048/N))).
    spec = build_network_spec(64, 1, pad_object=False, probe_big=probe_big)
    names = spec.param_names()
    assert not any(".head.center" in n or ".head.border" in n for n in names)
    for d in ("decoder_amp", "decoder_phase"):
        assert spec.param_shapes()[f"{d}.head.full.block.conv0.kernel"] == (3, 3, 64, 64)
        assert spec.param_shapes()[f"{d}.head.full.block.conv1.kernel"] == (3, 3, 64, 64)
        assert spec.param_shapes()[f"{d}.head.full.conv.kernel"] == (3, 3, 64, 1)
    head = (9 * 64 + 1) * 64 * 2 + (9 * 64 + 1) * 1
    pad_head = (9 * 60 + 1) + (9 * 4 + 1) * 64 + (9 * 64 + 1) * 64 + (9 * 64 + 1)
    assert spec.conv_param_count() == 2_331_772 + 2 * (head - pad_head)
    assert spec.layer(spec.amp_name).activation == "sigmoid"
    assert spec.layer(spec.phase_name).activation == "tanh"
    assert not any(layer.kind in ("slice_channels", "zero_pad2d", "mask_multiply") for layer in spec.layers)


# ------------------------------------------------------------------ channel rules
@pytest.mark.parametrize("gridsize", [1, 2, 3])
@pytest.mark.parametrize("object_big", [True, False])
def test_channel_rules(gridsize, object_big):
    spec = build_network_spec(64, gridsize, object_big=object_big)
    C = gridsize**2
    Co = C if object_big else 1
    assert (spec.C, spec.Co) == (C, Co)
    shapes = spec.param_shapes()
    # The encoder always sees all C channels, whatever object_big says.
    assert shapes["encoder.block0.conv0.kernel"] == (3, 3, C, 64)
    for d in ("decoder_amp", "decoder_phase"):
        assert shapes[f"{d}.head.center.kernel"] == (3, 3, 60, Co)
        assert shapes[f"{d}.head.center.bias"] == (Co,)
        assert shapes[f"{d}.head.border.conv.kernel"] == (3, 3, 64, Co)
    assert spec.layers[0].in_shape == (64, 64, C)
    for name in (spec.amp_name, spec.phase_name, spec.object_name):
        assert spec.layer(name).out_shape == (64, 64, Co)


# ------------------------------------------------------------------ names
def test_golden_names_and_shapes_n64_gs1():
    spec = build_network_spec(64, 1)
    assert [(p.name, p.shape) for p in spec.params()] == GOLDEN_N64_GS1
    assert spec.param_shapes() == dict(GOLDEN_N64_GS1)


@pytest.mark.parametrize("cfg", ALL_VARIANTS, ids=lambda c: "-".join(f"{k}{int(v)}" for k, v in c.items()))
def test_names_unique_and_graph_consistent(cfg):
    spec = build_network_spec(**cfg)
    names = spec.param_names()
    assert len(names) == len(set(names))
    layer_names = [layer.name for layer in spec.layers]
    assert len(layer_names) == len(set(layer_names))
    assert INPUT_NAME not in layer_names
    # Every layer reads only the graph input or earlier layers, with matching shapes.
    produced = {INPUT_NAME: (spec.N, spec.N, spec.C)}
    for layer in spec.layers:
        assert layer.kind in LAYER_KINDS
        for src in layer.inputs:
            assert src in produced, f"{layer.name} reads {src} before it exists"
        assert layer.in_shape == produced[layer.inputs[0]]
        if layer.kind in ("add", "combine_complex"):
            assert len(layer.inputs) == 2 and produced[layer.inputs[1]] == layer.in_shape
        if layer.kind == "conv2d":
            kernel, bias = layer.param("kernel"), layer.param("bias")
            assert kernel.name == f"{layer.name}.kernel" and bias.name == f"{layer.name}.bias"
            assert kernel.shape == (3, 3, layer.in_channels, layer.out_channels)
            assert bias.shape == (layer.out_channels,)
            assert layer.activation in ("relu", "linear")
        else:
            assert layer.params == ()
        if layer.activation is not None:
            assert layer.activation in ACTIVATIONS
        produced[layer.name] = layer.out_shape
    # Every parameter is a float32 owned by a conv layer, except the physics params.
    assert all(p.dtype == "float32" for p in spec.params())
    assert [p.name for p in spec.physics_params] == ["intensity_scale.log_scale", "probe.real", "probe.imag"]
    assert spec.layers[-1].name == spec.object_name == "object"
    assert spec.layer(spec.encoded_name).out_shape == (8, 8, 128 * spec.n_filters_scale)


def test_spec_is_stable_and_hashable():
    a = build_network_spec(128, 2)
    b = build_network_spec(128, 2)
    assert a == b and hash(a) == hash(b)
    assert a != build_network_spec(128, 2, amp_activation="swish")
    with pytest.raises(AttributeError):
        a.N = 64  # frozen


def test_trainable_flags_and_physics_shapes():
    spec = build_network_spec(32, 2)
    flags = {p.name: p.trainable_flag for p in spec.params()}
    assert flags.pop("intensity_scale.log_scale") == "intensity_scale_trainable"
    assert flags.pop("probe.real") == "probe_trainable"
    assert flags.pop("probe.imag") == "probe_trainable"
    assert set(flags.values()) == {None}
    shapes = spec.param_shapes()
    assert shapes["intensity_scale.log_scale"] == ()
    assert shapes["probe.real"] == shapes["probe.imag"] == (32, 32)
    assert CANONICAL_KERNEL_LAYOUT == "HWIO"


# ------------------------------------------------------------------ filter rules
@pytest.mark.parametrize(
    ("N", "encoder", "decoder", "head"),
    [
        (32, (64, 128), (32,), 64),
        (64, (32, 64, 128), (64, 32), 32),
        (128, (16, 32, 64, 128), (128, 64, 32), 16),
        (256, (8, 16, 32, 64, 128), (256, 128, 64, 32), 8),
    ],
)
@pytest.mark.parametrize("nfs", [1, 2, 3])
def test_filter_rules(N, encoder, decoder, head, nfs):
    spec = build_network_spec(N, 1, n_filters_scale=nfs)
    assert spec.encoder_filters == tuple(f * nfs for f in encoder)
    assert spec.decoder_filters == tuple(f * nfs for f in decoder)
    assert spec.head_filters == head * nfs == nfs * 2048 // N
    assert len(spec.encoder_filters) == int(math.log2(N // 8))
    assert spec.layer(spec.encoded_name).out_shape == (8, 8, 128 * nfs)
    body = f"decoder_amp.block{len(decoder) - 1}.up"
    assert spec.layer(body).out_shape == (N // 2, N // 2, 32 * nfs)


def test_head_topology_n64():
    spec = build_network_spec(64, 2, amp_activation="softplus")
    body = 32 * 2
    for d, act, scale in (("decoder_amp", "softplus", 1.0), ("decoder_phase", "tanh", PHASE_SCALE)):
        cs = spec.layer(f"{d}.head.center_slice")
        bs = spec.layer(f"{d}.head.border_slice")
        assert (cs.channel_start, cs.channel_stop) == (0, body - DECODER_C_OUTER)
        assert (bs.channel_start, bs.channel_stop) == (body - DECODER_C_OUTER, body)
        assert cs.inputs == bs.inputs == (f"{d}.block1.up",)
        assert spec.layer(f"{d}.head.center").activation == "linear"
        ca = spec.layer(f"{d}.head.center_act")
        assert (ca.activation, ca.scale) == (act, scale)
        pad = spec.layer(f"{d}.head.center_pad")
        assert pad.padding == 64 // 4 and pad.out_shape == (64, 64, 4)
        assert spec.layer(f"{d}.head.border.block.conv0").in_shape == (32, 32, DECODER_C_OUTER)
        assert spec.layer(f"{d}.head.border.block.up").out_shape == (64, 64, 64)
        assert spec.layer(f"{d}.head.border.conv").activation == "linear"
        assert spec.layer(f"{d}.head.border_act").activation == "swish"  # swish for both heads
        assert spec.layer(f"{d}.head.border_mask").mask == "border"
        s = spec.layer(f"{d}.head.sum")
        assert s.kind == "add" and s.inputs == (f"{d}.head.center_pad", f"{d}.head.border_mask")
    assert spec.layer("object").inputs == ("decoder_amp.head.sum", "decoder_phase.head.sum")


@pytest.mark.parametrize("act", AMP_ACTIVATIONS)
def test_amp_activation_reaches_the_amp_head_only(act):
    spec = build_network_spec(64, 1, amp_activation=act)
    assert spec.layer("decoder_amp.head.center_act").activation == act
    assert spec.layer("decoder_phase.head.center_act").activation == "tanh"


# ------------------------------------------------------------------ validation and config
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(N=0, gridsize=1), "N"),
        (dict(N=48, gridsize=1), "N"),
        (dict(N=512, gridsize=1), "N"),
        (dict(N=64.0, gridsize=1), "N"),
        (dict(N=64, gridsize=0), "gridsize"),
        (dict(N=64, gridsize=True), "gridsize"),
        (dict(N=64, gridsize=1, n_filters_scale=0), "n_filters_scale"),
        (dict(N=64, gridsize=1, object_big="yes"), "object_big"),
        (dict(N=64, gridsize=1, probe_big=1), "probe_big"),
        (dict(N=64, gridsize=1, pad_object=None), "pad_object"),
        (dict(N=64, gridsize=1, amp_activation="gelu"), "amp_activation"),
    ],
)
def test_invalid_config_raises_config_error(kwargs, field):
    with pytest.raises(ConfigError) as info:
        build_network_spec(**kwargs)
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_n0_placeholder_error_says_how_to_fix():
    with pytest.raises(ConfigError, match="placeholder"):
        build_network_spec(0, 1)


def test_numpy_scalars_are_accepted():
    spec = build_network_spec(np.int64(64), np.int32(2), np.int64(2), np.bool_(True))
    assert spec == build_network_spec(64, 2)
    assert type(spec.N) is int and type(spec.object_big) is bool


def test_network_spec_from_duck_typed_config():
    cfg = SimpleNamespace(
        N=128,
        gridsize=2,
        n_filters_scale=2,
        object_big=False,
        probe_big=True,
        pad_object=True,
        amp_activation="swish",
    )
    spec = network_spec_from_config(cfg)
    assert spec == build_network_spec(128, 2, 2, False, True, True, "swish")
    assert spec.Co == 1 and spec.C == 4


def test_network_spec_from_model_config():
    from ptycho.config.config import ModelConfig

    spec = network_spec_from_config(ModelConfig(N=64, gridsize=2))
    assert spec.conv_param_count() == 2_340_208
    placeholder = ModelConfig(N=0)  # Ptychodus builds this first and sets N later
    with pytest.raises(ConfigError):
        network_spec_from_config(placeholder)
    placeholder.N = 64
    assert network_spec_from_config(placeholder).conv_param_count() == 2_331_772


def test_core_modules_do_not_import_frameworks():
    code = (
        "import sys\n"
        "import ptycho.network_spec, ptycho.canonical_weights, ptycho.reference.network, ptycho.reference.model\n"
        "bad = [m for m in ('tensorflow', 'torch', 'keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_specs_network_md_tables_match_the_code():
    from pathlib import Path

    from ptycho.network_spec import layer_table_markdown

    doc = (Path(__file__).resolve().parents[1] / "specs" / "network.md").read_text()
    for N in SUPPORTED_N:
        assert layer_table_markdown(build_network_spec(N, 1)) in doc, f"specs/network.md table for N={N}"
    for N, gridsize, expected in UPSTREAM_COUNTS:
        assert f"| {N} | {gridsize} | {expected:,} | {expected:,} |" in doc


def test_kernel_layout_helpers():
    from ptycho.network_spec import kernel_hwio_to_oihw, kernel_oihw_to_hwio

    k = np.arange(3 * 3 * 2 * 5, dtype=np.float32).reshape(3, 3, 2, 5)
    oihw = kernel_hwio_to_oihw(k)
    assert oihw.shape == (5, 2, 3, 3) and oihw.flags.c_contiguous
    assert oihw[4, 1, 0, 2] == k[0, 2, 1, 4]
    assert np.array_equal(kernel_oihw_to_hwio(oihw), k)

"""Backend-neutral description of the default ('cnn') PtychoPINN network.

Both backends (Keras in ``ptycho``, PyTorch in ``ptycho_torch``) and the NumPy
reference (:mod:`ptycho.reference.network`) BUILD the network by walking the
ordered :attr:`NetworkSpec.layers` of a spec returned by
:func:`build_network_spec`.  The spec is a small static dataflow graph: the
graph input is the tensor named :data:`INPUT_NAME` (the diffraction amplitude
already divided by the intensity scale, ``[B, N, N, C]``), every layer reads the
outputs of earlier layers by name (:attr:`LayerSpec.inputs`) and produces one
tensor named after itself.  ``specs/network.md`` is the prose version with a
table per ``N``.

Parameters have canonical, backend-neutral names (for example
``encoder.block0.conv1.kernel``) and shapes in the canonical layout: convolution
kernels are ``HWIO = [kh, kw, in, out]`` (Keras' native layout; PyTorch's
``Conv2d.weight`` is ``OIHW = kernel.transpose(3, 2, 0, 1)``), biases are
``[out]``.  The canonical weight file (:mod:`ptycho.canonical_weights`) stores
exactly the parameters listed by :meth:`NetworkSpec.params`.

Topology (upstream ``ptycho_tf/model.py``, see ``specs/network.md``):

* encoder: ``log2(N/8)`` blocks ``conv3x3+ReLU, conv3x3+ReLU, maxpool 2x2``
  with filters ``[.., 32, 64, 128] * n_filters_scale`` ending at ``128*nfs``;
  the bottleneck is ``[8, 8, 128*nfs]``;
* two decoders (amplitude, phase) with separate weights: ``log2(N/8) - 1``
  blocks ``conv3x3+ReLU, conv3x3+ReLU, nearest upsample x2`` with filters
  ``[.., 128, 64, 32] * nfs`` ending at ``32*nfs``; body output
  ``[N/2, N/2, 32*nfs]``;
* a head per decoder (``pad_object=True``): the centre branch convolves all body
  channels but the last :data:`~ptycho.conventions.DECODER_C_OUTER` to ``Co``
  channels, applies the head activation and zero-pads by ``N/4`` to ``N x N``;
  with ``probe_big`` the border branch takes the last ``DECODER_C_OUTER``
  channels through an up-block of width ``nfs*2048/N`` and a conv to ``Co``
  channels, applies swish and is multiplied by the border mask (zero on the
  central ``N/2 x N/2`` block); the head output is their sum.  With
  ``pad_object=False`` the head is an up-block of width ``nfs*2048/N`` on all
  body channels, a conv to ``Co`` channels and the head activation.
* head activations: amplitude ``amp_activation`` (sigmoid, swish, softplus or
  relu), phase ``PHASE_SCALE * tanh``; the object is ``amp * exp(i * phase)``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ptycho.conventions import AMP_ACTIVATIONS, DECODER_C_OUTER, PHASE_SCALE, SUPPORTED_N, channels
from ptycho.errors import ConfigError

__all__ = [
    "AMP_ACTIVATIONS",
    "ACTIVATIONS",
    "CANONICAL_KERNEL_LAYOUT",
    "CANONICAL_DTYPE",
    "INPUT_NAME",
    "LAYER_KINDS",
    "LayerSpec",
    "NetworkSpec",
    "ParamSpec",
    "build_network_spec",
    "kernel_hwio_to_oihw",
    "kernel_oihw_to_hwio",
    "layer_table_markdown",
    "network_spec_from_config",
]

#: Layout of every convolution kernel in the canonical description: ``[kh, kw, in, out]``.
CANONICAL_KERNEL_LAYOUT: str = "HWIO"
#: dtype of every canonical parameter.
CANONICAL_DTYPE: str = "float32"
#: Name of the graph input: the network input already divided by ``exp(log_scale)``.
INPUT_NAME: str = "scaled_input"
#: Allowed values of ``amp_activation`` (the amplitude head activation).
#: Every activation name that appears in a spec (``activation`` of conv2d / activation layers).
#: ``linear``: identity; ``relu``: max(0, x); ``sigmoid``: 1/(1+exp(-x)); ``swish``: x*sigmoid(x)
#: (= SiLU); ``softplus``: log(1+exp(x)); ``tanh``: tanh(x).  An activation layer multiplies the
#: result by :attr:`LayerSpec.scale`.
ACTIVATIONS: tuple[str, ...] = ("linear", "relu", "sigmoid", "swish", "softplus", "tanh")
#: Every layer kind (see :class:`LayerSpec`).
LAYER_KINDS: tuple[str, ...] = (
    "conv2d",
    "maxpool2d",
    "upsample2d",
    "slice_channels",
    "activation",
    "zero_pad2d",
    "mask_multiply",
    "add",
    "combine_complex",
)

TrainableFlag = Literal["intensity_scale_trainable", "probe_trainable"] | None
ParamRole = Literal["kernel", "bias", "log_scale", "probe_real", "probe_imag"]


@dataclass(frozen=True)
class ParamSpec:
    """One canonical parameter.

    Attributes:
        name: canonical dotted name, e.g. ``decoder_amp.head.center.kernel``.
        shape: shape in the canonical layout (kernels ``[kh, kw, in, out]``, biases ``[out]``,
            ``intensity_scale.log_scale`` ``()``, ``probe.real`` / ``probe.imag`` ``[N, N]``).
        dtype: numpy dtype name, always :data:`CANONICAL_DTYPE`.
        role: ``'kernel'``, ``'bias'``, ``'log_scale'``, ``'probe_real'`` or ``'probe_imag'``.
        trainable_flag: ``None`` for network weights (always trainable); otherwise the config
            flag that decides whether the backend trains it (``'intensity_scale_trainable'`` for
            the log scale, ``'probe_trainable'`` for the probe).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: ParamRole
    trainable_flag: TrainableFlag = None

    @property
    def size(self) -> int:
        """Number of scalars in the parameter."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class LayerSpec:
    """One node of the network graph.

    Every layer reads the tensors named in ``inputs`` (the graph input
    :data:`INPUT_NAME` or the ``name`` of an earlier layer) and produces one
    tensor named ``name``.  Shapes are per sample, channels-last ``(H, W, C)``;
    a backend with another layout (PyTorch ``[B, C, H, W]``) transposes them.

    Kinds and the fields they use:

    ``conv2d``
        ``kernel_size x kernel_size`` convolution, stride 1, ``'same'`` zero padding of
        ``kernel_size // 2`` on every side (Keras ``padding='same'`` = torch ``padding=1``),
        cross-correlation as in Keras and torch, with bias, followed by ``activation``
        (``'relu'`` or ``'linear'``).  ``in_channels -> out_channels``.  Owns
        ``<name>.kernel`` (HWIO) and ``<name>.bias``.
    ``maxpool2d``
        max over non-overlapping ``factor x factor`` windows (stride ``factor``; the sizes
        are always even so ``'same'`` padding never pads).
    ``upsample2d``
        nearest-neighbour upsampling by ``factor`` (each pixel repeated ``factor x factor``).
    ``slice_channels``
        channels ``channel_start .. channel_stop - 1`` of the input.
    ``activation``
        ``scale * activation(x)``.
    ``zero_pad2d``
        ``padding`` zero rows/columns on each of the four sides.
    ``mask_multiply``
        elementwise product with a constant ``[H, W]`` mask broadcast over channels;
        ``mask == 'border'`` is :func:`ptycho.reference.physics.border_mask` of ``H``
        (ones everywhere except the central ``H/2 x H/2`` block, rows/cols ``H/4 .. 3H/4-1``).
    ``add``
        elementwise sum of the two inputs.
    ``combine_complex``
        ``inputs = (amp, phase)`` -> complex64 ``amp * exp(i * phase)``.
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel_size: int | None = None
    activation: str | None = None
    scale: float = 1.0
    factor: int | None = None
    padding: int | None = None
    channel_start: int | None = None
    channel_stop: int | None = None
    mask: str | None = None
    params: tuple[ParamSpec, ...] = ()

    @property
    def in_channels(self) -> int:
        """Channels of the (first) input."""
        return self.in_shape[2]

    @property
    def out_channels(self) -> int:
        """Channels of the output."""
        return self.out_shape[2]

    def param(self, role: str) -> ParamSpec:
        """The parameter of this layer with the given role (``'kernel'`` or ``'bias'``)."""
        for p in self.params:
            if p.role == role:
                return p
        raise KeyError(f"layer {self.name!r} ({self.kind}) has no {role!r} parameter")


@dataclass(frozen=True)
class NetworkSpec:
    """The complete, backend-neutral description of one PtychoPINN network.

    Build it with :func:`build_network_spec` or :func:`network_spec_from_config`.

    Attributes:
        N, gridsize, n_filters_scale, object_big, probe_big, pad_object, amp_activation:
            the configuration it was built from (upstream meaning).
        C: encoder input channels, ``gridsize**2``.
        Co: head output channels, ``C`` if ``object_big`` else 1.
        encoder_filters: output channels of each encoder block.
        decoder_filters: output channels of each decoder body block.
        head_filters: width of the border (or, with ``pad_object=False``, full) head up-block,
            ``n_filters_scale * 2048 // N``.
        c_outer: body channels routed to the border branch (:data:`DECODER_C_OUTER`).
        layers: the graph in build order (encoder, amplitude decoder, phase decoder, object).
        physics_params: the non-convolutional parameters (log scale, probe real/imag).
        encoded_name, amp_name, phase_name, object_name: names of the layers whose outputs
            are the bottleneck, the amplitude ``[N, N, Co]``, the phase ``[N, N, Co]`` and the
            complex object patches ``[N, N, Co]``.
    """

    N: int
    gridsize: int
    n_filters_scale: int
    object_big: bool
    probe_big: bool
    pad_object: bool
    amp_activation: str
    C: int
    Co: int
    encoder_filters: tuple[int, ...]
    decoder_filters: tuple[int, ...]
    head_filters: int
    c_outer: int
    layers: tuple[LayerSpec, ...]
    physics_params: tuple[ParamSpec, ...]
    encoded_name: str
    amp_name: str
    phase_name: str
    object_name: str

    # ------------------------------------------------------------------ queries
    def config(self) -> dict[str, Any]:
        """The seven configuration values as plain Python types (used as file attributes)."""
        return {
            "N": self.N,
            "gridsize": self.gridsize,
            "n_filters_scale": self.n_filters_scale,
            "object_big": self.object_big,
            "probe_big": self.probe_big,
            "pad_object": self.pad_object,
            "amp_activation": self.amp_activation,
        }

    def layer(self, name: str) -> LayerSpec:
        """The layer called ``name`` (KeyError if absent)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in this network spec")

    def conv_layers(self) -> tuple[LayerSpec, ...]:
        """The ``conv2d`` layers in build order."""
        return tuple(layer for layer in self.layers if layer.kind == "conv2d")

    def conv_params(self) -> list[ParamSpec]:
        """Kernel and bias of every conv layer, in build order (kernel before bias)."""
        return [p for layer in self.layers for p in layer.params]

    def params(self) -> list[ParamSpec]:
        """Every canonical parameter: :meth:`conv_params` then :attr:`physics_params`."""
        return self.conv_params() + list(self.physics_params)

    def param_names(self) -> list[str]:
        """Canonical names of :meth:`params`, in order."""
        return [p.name for p in self.params()]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """``{canonical name: shape}`` for every parameter, in order."""
        return {p.name: p.shape for p in self.params()}

    def param_spec(self, name: str) -> ParamSpec:
        """The :class:`ParamSpec` called ``name`` (KeyError if absent)."""
        for p in self.params():
            if p.name == name:
                return p
        raise KeyError(f"no parameter named {name!r} in this network spec")

    def conv_param_count(self) -> int:
        """Scalars in the convolutional network (what Keras' ``count_params`` reports upstream)."""
        return sum(p.size for p in self.conv_params())

    def param_count(self) -> int:
        """Every scalar including the physics parameters (``1 + 2*N*N`` more)."""
        return sum(p.size for p in self.params())


# ---------------------------------------------------------------------- construction
def _n_levels(N: int) -> int:
    """Number of encoder blocks, ``log2(N / 8)``."""
    return int(round(math.log2(N // 8)))


def _as_int(field: str, value: Any) -> int:
    """``value`` as a Python int if it is an integer (not a bool), else ConfigError."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        allowed = f"one of {SUPPORTED_N}" if field == "N" else "a positive integer"
        raise ConfigError(field, value, allowed)
    return int(value)


def _as_bool(field: str, value: Any) -> bool:
    """``value`` as a Python bool if it is one (numpy bools included), else ConfigError."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(field, value, "a bool (True or False)")
    return bool(value)


def _validate(
    N: Any,
    gridsize: Any,
    n_filters_scale: Any,
    object_big: Any,
    probe_big: Any,
    pad_object: Any,
    amp_activation: Any,
) -> tuple[int, int, int, bool, bool, bool, str]:
    """Check the configuration and return it as plain Python types."""
    N = _as_int("N", N)
    if N not in SUPPORTED_N:
        fix = (
            "N=0 is the Ptychodus placeholder; set ModelConfig.N to the patch size of the data"
            if N == 0
            else "resample or crop the diffraction patterns to a supported size"
        )
        raise ConfigError("N", N, f"one of {SUPPORTED_N}", fix=fix)
    gridsize = _as_int("gridsize", gridsize)
    if gridsize < 1:
        raise ConfigError("gridsize", gridsize, "a positive integer")
    n_filters_scale = _as_int("n_filters_scale", n_filters_scale)
    if n_filters_scale < 1:
        raise ConfigError("n_filters_scale", n_filters_scale, "a positive integer")
    flags = tuple(
        _as_bool(f, v) for f, v in (("object_big", object_big), ("probe_big", probe_big), ("pad_object", pad_object))
    )
    if not isinstance(amp_activation, str) or amp_activation not in AMP_ACTIVATIONS:
        raise ConfigError("amp_activation", amp_activation, f"one of {AMP_ACTIVATIONS}")
    return (N, gridsize, n_filters_scale, *flags, amp_activation)


class _GraphBuilder:
    """Appends layers while tracking the per-sample shape of every named tensor."""

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        self.layers: list[LayerSpec] = []
        self.shapes: dict[str, tuple[int, int, int]] = {INPUT_NAME: input_shape}

    def _add(self, name: str, kind: str, inputs: tuple[str, ...], out_shape: tuple[int, int, int], **kw: Any):
        if name in self.shapes:
            raise ValueError(f"duplicate layer name {name!r}")
        layer = LayerSpec(
            name=name, kind=kind, inputs=inputs, in_shape=self.shapes[inputs[0]], out_shape=out_shape, **kw
        )
        self.layers.append(layer)
        self.shapes[name] = out_shape
        return name

    def conv(self, name: str, src: str, out_channels: int, activation: str) -> str:
        h, w, c = self.shapes[src]
        params = (
            ParamSpec(f"{name}.kernel", (3, 3, c, out_channels), CANONICAL_DTYPE, "kernel"),
            ParamSpec(f"{name}.bias", (out_channels,), CANONICAL_DTYPE, "bias"),
        )
        return self._add(
            name, "conv2d", (src,), (h, w, out_channels), kernel_size=3, activation=activation, params=params
        )

    def pool(self, name: str, src: str) -> str:
        h, w, c = self.shapes[src]
        return self._add(name, "maxpool2d", (src,), (h // 2, w // 2, c), factor=2)

    def up(self, name: str, src: str) -> str:
        h, w, c = self.shapes[src]
        return self._add(name, "upsample2d", (src,), (2 * h, 2 * w, c), factor=2)

    def slice(self, name: str, src: str, start: int, stop: int) -> str:
        h, w, _ = self.shapes[src]
        return self._add(name, "slice_channels", (src,), (h, w, stop - start), channel_start=start, channel_stop=stop)

    def act(self, name: str, src: str, activation: str, scale: float = 1.0) -> str:
        return self._add(name, "activation", (src,), self.shapes[src], activation=activation, scale=scale)

    def zero_pad(self, name: str, src: str, pad: int) -> str:
        h, w, c = self.shapes[src]
        return self._add(name, "zero_pad2d", (src,), (h + 2 * pad, w + 2 * pad, c), padding=pad)

    def mask(self, name: str, src: str, mask: str) -> str:
        return self._add(name, "mask_multiply", (src,), self.shapes[src], mask=mask)

    def add(self, name: str, a: str, b: str) -> str:
        if self.shapes[a] != self.shapes[b]:
            raise ValueError(f"cannot add {a} {self.shapes[a]} and {b} {self.shapes[b]}")
        return self._add(name, "add", (a, b), self.shapes[a])

    def combine(self, name: str, amp: str, phase: str) -> str:
        return self._add(name, "combine_complex", (amp, phase), self.shapes[amp])

    def block(self, prefix: str, src: str, filters: int, last: str) -> str:
        """Two ReLU convs then ``last`` ('pool' or 'up') named ``prefix.conv0/.conv1/.pool|.up``."""
        x = self.conv(f"{prefix}.conv0", src, filters, "relu")
        x = self.conv(f"{prefix}.conv1", x, filters, "relu")
        return self.pool(f"{prefix}.pool", x) if last == "pool" else self.up(f"{prefix}.up", x)


def build_network_spec(
    N: int,
    gridsize: int,
    n_filters_scale: int = 2,
    object_big: bool = True,
    probe_big: bool = True,
    pad_object: bool = True,
    amp_activation: str = "sigmoid",
) -> NetworkSpec:
    """Describe the default 'cnn' PtychoPINN network for one configuration.

    Args:
        N: patch size in pixels, one of :data:`~ptycho.conventions.SUPPORTED_N`.
        gridsize: scan positions per group side; ``C = gridsize**2`` input channels.
        n_filters_scale: width multiplier of every conv layer (upstream default 2).
        object_big: heads emit ``C`` channels (one patch per scan position) if True, else 1.
        probe_big: add the border branch to each head (only with ``pad_object``).
        pad_object: centre-plus-border head (True, upstream default) or the full-frame head.
        amp_activation: amplitude head activation, one of :data:`AMP_ACTIVATIONS`.

    Returns:
        A frozen :class:`NetworkSpec`.

    Raises:
        ConfigError: a value outside what the field allows (N=0, the Ptychodus placeholder,
            is rejected here, at use).
    """
    N, gridsize, n_filters_scale, object_big, probe_big, pad_object, amp_activation = _validate(
        N, gridsize, n_filters_scale, object_big, probe_big, pad_object, amp_activation
    )
    nfs = n_filters_scale
    C = channels(gridsize)
    Co = C if object_big else 1
    levels = _n_levels(N)
    encoder_filters = tuple(128 * nfs // 2 ** (levels - 1 - i) for i in range(levels))
    decoder_filters = tuple(32 * nfs * 2 ** (levels - 2 - i) for i in range(levels - 1))
    head_filters = nfs * 2048 // N
    c_outer = DECODER_C_OUTER

    g = _GraphBuilder((N, N, C))
    x = INPUT_NAME
    for i, f in enumerate(encoder_filters):
        x = g.block(f"encoder.block{i}", x, f, "pool")
    encoded = x

    outputs: dict[str, str] = {}
    for branch, act, scale in (("amp", amp_activation, 1.0), ("phase", "tanh", PHASE_SCALE)):
        d = f"decoder_{branch}"
        h = encoded
        for i, f in enumerate(decoder_filters):
            h = g.block(f"{d}.block{i}", h, f, "up")
        body_channels = g.shapes[h][2]
        if pad_object:
            c = g.slice(f"{d}.head.center_slice", h, 0, body_channels - c_outer)
            c = g.conv(f"{d}.head.center", c, Co, "linear")
            c = g.act(f"{d}.head.center_act", c, act, scale)
            out = g.zero_pad(f"{d}.head.center_pad", c, N // 4)
            if probe_big:
                b = g.slice(f"{d}.head.border_slice", h, body_channels - c_outer, body_channels)
                b = g.block(f"{d}.head.border.block", b, head_filters, "up")
                b = g.conv(f"{d}.head.border.conv", b, Co, "linear")
                b = g.act(f"{d}.head.border_act", b, "swish")
                b = g.mask(f"{d}.head.border_mask", b, "border")
                out = g.add(f"{d}.head.sum", out, b)
        else:
            f_ = g.block(f"{d}.head.full.block", h, head_filters, "up")
            f_ = g.conv(f"{d}.head.full.conv", f_, Co, "linear")
            out = g.act(f"{d}.head.full_act", f_, act, scale)
        if g.shapes[out] != (N, N, Co):
            raise AssertionError(f"{d} head produced {g.shapes[out]}, expected {(N, N, Co)}")
        outputs[branch] = out
    obj = g.combine("object", outputs["amp"], outputs["phase"])

    physics_params = (
        ParamSpec("intensity_scale.log_scale", (), CANONICAL_DTYPE, "log_scale", "intensity_scale_trainable"),
        ParamSpec("probe.real", (N, N), CANONICAL_DTYPE, "probe_real", "probe_trainable"),
        ParamSpec("probe.imag", (N, N), CANONICAL_DTYPE, "probe_imag", "probe_trainable"),
    )
    return NetworkSpec(
        N=N,
        gridsize=gridsize,
        n_filters_scale=nfs,
        object_big=object_big,
        probe_big=probe_big,
        pad_object=pad_object,
        amp_activation=amp_activation,
        C=C,
        Co=Co,
        encoder_filters=encoder_filters,
        decoder_filters=decoder_filters,
        head_filters=head_filters,
        c_outer=c_outer,
        layers=tuple(g.layers),
        physics_params=physics_params,
        encoded_name=encoded,
        amp_name=outputs["amp"],
        phase_name=outputs["phase"],
        object_name=obj,
    )


def network_spec_from_config(model_config: Any) -> NetworkSpec:
    """:func:`build_network_spec` from any object with the ModelConfig attributes.

    Reads ``.N``, ``.gridsize``, ``.n_filters_scale``, ``.object_big``, ``.probe_big``,
    ``.pad_object`` and ``.amp_activation`` (duck-typed: a ``ModelConfig`` or anything alike).
    """
    return build_network_spec(
        N=model_config.N,
        gridsize=model_config.gridsize,
        n_filters_scale=model_config.n_filters_scale,
        object_big=model_config.object_big,
        probe_big=model_config.probe_big,
        pad_object=model_config.pad_object,
        amp_activation=model_config.amp_activation,
    )


# ---------------------------------------------------------------------- layout helpers
def kernel_hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    """Canonical HWIO ``[kh, kw, in, out]`` -> torch ``Conv2d.weight`` OIHW ``[out, in, kh, kw]``."""
    return np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))


def kernel_oihw_to_hwio(weight: np.ndarray) -> np.ndarray:
    """torch ``Conv2d.weight`` OIHW ``[out, in, kh, kw]`` -> canonical HWIO ``[kh, kw, in, out]``."""
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


# ---------------------------------------------------------------------- documentation
def _describe(layer: LayerSpec) -> str:
    if layer.kind == "conv2d":
        return f"3x3 same, {layer.activation}"
    if layer.kind == "maxpool2d":
        return f"max {layer.factor}x{layer.factor}, stride {layer.factor}"
    if layer.kind == "upsample2d":
        return f"nearest x{layer.factor}"
    if layer.kind == "slice_channels":
        return f"channels {layer.channel_start}..{layer.channel_stop - 1}"
    if layer.kind == "activation":
        return f"{layer.activation}" if layer.scale == 1.0 else f"{layer.scale:.6g} * {layer.activation}"
    if layer.kind == "zero_pad2d":
        return f"{layer.padding} each side"
    if layer.kind == "mask_multiply":
        return f"{layer.mask} mask"
    return ""


def layer_table_markdown(spec: NetworkSpec, prefixes: tuple[str, ...] = ("encoder", "decoder_amp")) -> str:
    """A Markdown table of the layers whose names start with one of ``prefixes``.

    Columns: layer name, kind, detail, input layer(s), output shape ``H x W x C``, parameter
    count.  ``specs/network.md`` embeds these tables (a test keeps them in sync).
    """
    rows = [
        "| layer | kind | detail | input | output (H x W x C) | params |",
        "|---|---|---|---|---|---:|",
    ]
    for layer in spec.layers:
        if not layer.name.startswith(prefixes):
            continue
        h, w, c = layer.out_shape
        n = sum(p.size for p in layer.params)
        rows.append(
            f"| `{layer.name}` | {layer.kind} | {_describe(layer)} | "
            f"{', '.join(f'`{i}`' for i in layer.inputs)} | {h} x {w} x {c} | {n:,} |"
        )
    return "\n".join(rows)

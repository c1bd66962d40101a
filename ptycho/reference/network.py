"""NumPy forward of the PtychoPINN CNN from canonical weights: the executable network spec.

:func:`cnn_forward` walks :attr:`ptycho.network_spec.NetworkSpec.layers` in order,
exactly as each backend builds its network, and evaluates every layer in float64
(the result is rounded once, to float32 / complex64, at the end).  Layouts are
channels-last (``[B, H, W, C]``); kernels are the canonical HWIO ``[kh, kw, in, out]``.

Layer semantics (see :class:`ptycho.network_spec.LayerSpec`):

* ``conv2d``: ``y[b, h, w, o] = bias[o] + sum_{i, j, c} xpad[b, h + i, w + j, c] * K[i, j, c, o]``
  with ``xpad`` the input zero-padded by ``k // 2`` on every side (``'same'``; a
  cross-correlation, as Keras and torch compute it), then the layer's activation;
* ``maxpool2d``: max over non-overlapping 2x2 windows;
* ``upsample2d``: nearest neighbour, each pixel repeated 2x2;
* ``slice_channels``, ``activation``, ``zero_pad2d``, ``add`` as named;
* ``mask_multiply`` with mask ``'border'``: :func:`ptycho.reference.physics.border_mask`;
* ``combine_complex``: :func:`ptycho.reference.physics.combine_complex`.

This module never imports tensorflow or torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from ptycho.network_spec import INPUT_NAME, LayerSpec, NetworkSpec
from ptycho.reference.physics import border_mask, combine_complex

__all__ = ["ACTIVATION_FUNCTIONS", "activation", "conv2d_same", "cnn_forward", "maxpool2x2", "upsample_nearest"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Numerically stable logistic: never overflows exp for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


#: Activation name (as used in network specs) -> float64 NumPy function.
ACTIVATION_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": _sigmoid,
    "swish": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.logaddexp(0.0, x),
    "tanh": np.tanh,
}


def activation(x: np.ndarray, name: str, scale: float = 1.0) -> np.ndarray:
    """``scale * f(x)`` for the activation ``name`` (see :data:`ACTIVATION_FUNCTIONS`), float64."""
    try:
        f = ACTIVATION_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATION_FUNCTIONS)}") from None
    y = f(np.asarray(x, dtype=np.float64))
    return y if scale == 1.0 else scale * y


def conv2d_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Stride-1 'same' 2-D cross-correlation with bias, channels-last, float64.

    Args:
        x: ``[B, H, W, Cin]``.
        kernel: HWIO ``[kh, kw, Cin, Cout]`` with odd ``kh``, ``kw``.
        bias: ``[Cout]``.

    Returns:
        ``[B, H, W, Cout]`` float64:
        ``y[b,h,w,o] = bias[o] + sum_{i,j,c} xpad[b, h+i, w+j, c] * kernel[i, j, c, o]``,
        ``xpad`` = ``x`` zero-padded by ``kh//2`` rows and ``kw//2`` columns on each side.
    """
    x = np.asarray(x, dtype=np.float64)
    k = np.asarray(kernel, dtype=np.float64)
    kh, kw, cin, cout = k.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"'same' convolution needs odd kernel sizes, got {kh}x{kw}")
    if x.ndim != 4 or x.shape[3] != cin:
        raise ValueError(f"input {x.shape} does not match kernel {k.shape} ([B, H, W, {cin}] expected)")
    B, H, W, _ = x.shape
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))  # [B, H, W, Cin, kh, kw]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(B * H * W, kh * kw * cin)  # (i, j, c) order = HWI
    y = cols @ k.reshape(kh * kw * cin, cout)
    y += np.asarray(bias, dtype=np.float64)
    return y.reshape(B, H, W, cout)


def maxpool2x2(x: np.ndarray) -> np.ndarray:
    """Max over non-overlapping 2x2 windows of ``[B, H, W, C]`` (H, W even)."""
    B, H, W, C = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"maxpool2x2 needs even spatial sizes, got {H}x{W}")
    return x.reshape(B, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


def upsample_nearest(x: np.ndarray, factor: int = 2) -> np.ndarray:
    """Nearest-neighbour upsampling of ``[B, H, W, C]`` by ``factor`` along H and W."""
    return np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)


def _mask(name: str, size: int) -> np.ndarray:
    if name == "border":
        return border_mask(size).astype(np.float64)
    raise ValueError(f"unknown mask {name!r} in network spec")


def _apply(layer: LayerSpec, args: list[np.ndarray], weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """Evaluate one layer on its (float64) inputs."""
    x = args[0]
    kind = layer.kind
    if kind == "conv2d":
        y = conv2d_same(x, weights[layer.param("kernel").name], weights[layer.param("bias").name])
        return activation(y, layer.activation or "linear")
    if kind == "maxpool2d":
        return maxpool2x2(x)
    if kind == "upsample2d":
        return upsample_nearest(x, layer.factor or 2)
    if kind == "slice_channels":
        return x[..., layer.channel_start : layer.channel_stop]
    if kind == "activation":
        return activation(x, layer.activation or "linear", layer.scale)
    if kind == "zero_pad2d":
        p = int(layer.padding or 0)
        return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    if kind == "mask_multiply":
        return x * _mask(layer.mask or "", x.shape[1])[None, :, :, None]
    if kind == "add":
        return args[0] + args[1]
    if kind == "combine_complex":
        return combine_complex(args[0], args[1])  # float64 inside, complex64 out (the last layer)
    raise ValueError(f"layer {layer.name!r} has unknown kind {kind!r}")


def cnn_forward(
    x: np.ndarray, weights: Mapping[str, np.ndarray], spec: NetworkSpec, *, keep_all: bool = False
) -> dict[str, np.ndarray]:
    """Run the CNN of ``spec`` with canonical ``weights`` on ``x``.

    Args:
        x: float ``[B, N, N, C]``, the network input already divided by the intensity scale
            (``X_full`` for a correctly scaled input).
        weights: ``{canonical name: array}`` (HWIO kernels); the conv parameters of ``spec``
            must be present (extra names such as the probe are ignored here).
        spec: the network description.
        keep_all: also return every layer output under its layer name (float32/complex64).

    Returns:
        ``'encoded'`` float32 ``[B, 8, 8, 128*nfs]`` (bottleneck), ``'amp'`` float32
        ``[B, N, N, Co]``, ``'phase'`` float32 ``[B, N, N, Co]``, ``'object_patches'``
        complex64 ``[B, N, N, Co]`` = ``amp * exp(i * phase)``; plus each layer output when
        ``keep_all``.  Everything is computed in float64 and rounded once at the end.
    """
    x = np.asarray(x)
    expected = (spec.N, spec.N, spec.C)
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
        raise ValueError(f"x must have shape [B, {spec.N}, {spec.N}, {spec.C}], got {x.shape}")
    missing = [p.name for p in spec.conv_params() if p.name not in weights]
    if missing:
        raise KeyError(f"weights lack {len(missing)} conv parameter(s) of the spec, e.g. {missing[:3]}")
    for p in spec.conv_params():
        if tuple(np.shape(weights[p.name])) != p.shape:
            raise ValueError(f"weight {p.name} has shape {np.shape(weights[p.name])}, expected {p.shape}")

    tensors: dict[str, np.ndarray] = {INPUT_NAME: x.astype(np.float64)}
    for layer in spec.layers:
        tensors[layer.name] = _apply(layer, [tensors[n] for n in layer.inputs], weights)

    out = {
        "encoded": tensors[spec.encoded_name].astype(np.float32),
        "amp": tensors[spec.amp_name].astype(np.float32),
        "phase": tensors[spec.phase_name].astype(np.float32),
        "object_patches": tensors[spec.object_name].astype(np.complex64),
    }
    if keep_all:
        for name, t in tensors.items():
            if name not in out:
                out[name] = t.astype(np.complex64 if np.iscomplexobj(t) else np.float32)
    return out

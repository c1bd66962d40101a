"""The PtychoPINN CNN in PyTorch, built by walking ``ptycho.network_spec.NetworkSpec.layers``.

Nothing about the architecture is written here: every layer comes from the spec (the same spec
the Keras backend and the NumPy reference walk).  Layout is channels-first: the spec's per-sample
shapes ``(H, W, C)`` become ``[B, C, H, W]`` tensors.

Module hierarchy = canonical names.  Conv layer ``encoder.block0.conv0`` is the ``nn.Conv2d`` at
``self.encoder.block0.conv0`` (intermediate containers are plain ``nn.Module``s), so its state-dict
keys are ``encoder.block0.conv0.weight`` (OIHW ``[out, in, 3, 3]``) and ``.bias``; the canonical
names are ``encoder.block0.conv0.kernel`` (HWIO) and ``.bias`` (:mod:`ptycho_torch.canonical`).

Layer kinds (see ``ptycho.network_spec.LayerSpec``): ``conv2d`` -> ``nn.Conv2d(in, out, 3,
padding=1)`` then the activation; ``maxpool2d`` -> ``F.max_pool2d(2)``; ``upsample2d`` ->
nearest x2 (:func:`upsample_nearest`); ``slice_channels`` -> ``x[:, start:stop]``; ``activation`` -> ``scale * f(x)``;
``zero_pad2d`` -> ``F.pad``; ``mask_multiply`` -> times the border mask (a non-persistent
buffer); ``add``; ``combine_complex`` is left to the caller (:class:`SpecCNN` returns the real
amplitude and phase so the whole CNN stays real-valued, which ``torch.compile`` and autocast need).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ptycho.network_spec import INPUT_NAME, LayerSpec, NetworkSpec
from ptycho_torch.physics import border_mask

__all__ = ["ACTIVATIONS", "SpecCNN", "upsample_nearest"]

#: Spec activation name -> torch function (float tensors in, same shape out).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": F.relu,
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
    "softplus": F.softplus,
    "tanh": torch.tanh,
}


def upsample_nearest(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling ``[B, C, H, W] -> [B, C, f*H, f*W]`` as a broadcast and a reshape.

    Identical values to ``F.interpolate(mode='nearest')``, but its backward is a plain sum over the
    repeated pixels instead of a scatter (``index_put``), and a channels-last input stays
    channels-last (no layout conversion before the next convolution).
    """
    B, C, H, W = x.shape
    f = int(factor)
    if C > 1 and x.is_contiguous(memory_format=torch.channels_last):
        y = x.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(B, H, f, W, f, C).reshape(B, f * H, f * W, C)
        return y.permute(0, 3, 1, 2)
    return x[:, :, :, None, :, None].expand(B, C, H, f, W, f).reshape(B, C, f * H, f * W)


def _activate(x: torch.Tensor, name: str | None, scale: float = 1.0) -> torch.Tensor:
    y = ACTIVATIONS[name or "linear"](x)
    return y if scale == 1.0 else y * scale


class SpecCNN(nn.Module):
    """The encoder and the two decoders of one :class:`~ptycho.network_spec.NetworkSpec`.

    ``forward(x)`` takes the scaled network input ``[B, C, N, N]`` float (``C = spec.C``) and
    returns ``(encoded [B, 128*nfs, 8, 8], amp [B, Co, N, N], phase [B, Co, N, N])``.

    Attributes:
        spec: the network description (not a module; frozen).
        channels_last: convert the input to ``torch.channels_last`` memory format (call
            :meth:`use_channels_last` to convert the weights too).
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        self.spec = spec
        self.channels_last = False
        self._plan: list[tuple[LayerSpec, nn.Module | None]] = []
        for layer in spec.layers:
            if layer.kind == "combine_complex":
                continue
            module: nn.Module | None = None
            if layer.kind == "conv2d":
                module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size or 3,
                                   padding=(layer.kernel_size or 3) // 2)
                self._place(layer.name, module)
            elif layer.kind == "mask_multiply":
                if layer.mask != "border":
                    raise ValueError(f"layer {layer.name!r}: unknown mask {layer.mask!r}")
                self.register_buffer(self._mask_buffer(layer), border_mask(layer.in_shape[0]).clone(),
                                     persistent=False)
            elif layer.kind not in ("maxpool2d", "upsample2d", "slice_channels", "activation", "zero_pad2d", "add"):
                raise ValueError(f"layer {layer.name!r} has unknown kind {layer.kind!r}")
            self._plan.append((layer, module))

    # ------------------------------------------------------------------ construction helpers
    def _place(self, dotted: str, module: nn.Module) -> None:
        """Register ``module`` at the nested attribute path ``dotted`` (creating containers)."""
        parent: nn.Module = self
        *path, leaf = dotted.split(".")
        for part in path:
            child = parent._modules.get(part)
            if child is None:
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, module)

    @staticmethod
    def _mask_buffer(layer: LayerSpec) -> str:
        return "mask_" + layer.name.replace(".", "_")

    def use_channels_last(self, enabled: bool = True) -> SpecCNN:
        """Switch weights and inputs to (or back from) ``torch.channels_last`` memory format."""
        fmt = torch.channels_last if enabled else torch.contiguous_format
        self.to(memory_format=fmt)
        self.channels_last = enabled
        return self

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the CNN; see the class docstring for shapes."""
        spec = self.spec
        if x.ndim != 4 or x.shape[1] != spec.C or x.shape[2] != spec.N or x.shape[3] != spec.N:
            raise ValueError(
                f"network input must have shape [B, C={spec.C}, {spec.N}, {spec.N}] (C = gridsize**2 = "
                f"{spec.gridsize}**2), got {list(x.shape)}"
            )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t: dict[str, torch.Tensor] = {INPUT_NAME: x}
        for layer, module in self._plan:
            src = t[layer.inputs[0]]
            kind = layer.kind
            if kind == "conv2d":
                y = _activate(module(src), layer.activation)  # type: ignore[misc]
            elif kind == "maxpool2d":
                y = F.max_pool2d(src, layer.factor or 2)
            elif kind == "upsample2d":
                y = upsample_nearest(src, layer.factor or 2)
            elif kind == "slice_channels":
                y = src[:, layer.channel_start : layer.channel_stop]
                if self.channels_last:  # a channel slice of NHWC is strided: give the next conv dense NHWC
                    y = y.contiguous(memory_format=torch.channels_last)
            elif kind == "activation":
                y = _activate(src, layer.activation, layer.scale)
            elif kind == "zero_pad2d":
                p = int(layer.padding or 0)
                y = F.pad(src, (p, p, p, p))
            elif kind == "mask_multiply":
                y = src * getattr(self, self._mask_buffer(layer)).to(src.dtype)
            else:  # add
                y = src + t[layer.inputs[1]]
            t[layer.name] = y
        return t[spec.encoded_name], t[spec.amp_name], t[spec.phase_name]

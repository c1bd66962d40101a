"""The PtychoPINN model in PyTorch: CNN from the network spec plus the physics of ``ptycho_torch.physics``.

Forward pass (the same as ``ptycho.reference.model.forward``; layouts channels-first)::

    scaled_input   = x_scaled / exp(log_scale)                       [B, C, N, N]   float32
    encoded, amp, phase = SpecCNN(scaled_input)                      [B, 128nfs, 8, 8], [B, Co, N, N] x2
    decoder_object = amp * exp(i * phase)                            [B, Co, N, N]  complex64
    padded_object  = reassemble_patches (object_big) | pad_object    [B, 1, P, P]
    trimmed_object = trim(padded_object, N)                          [B, 1, N, N]
    object_patches = extract_patches(padded_object, positions, N)    [B, C, N, N]
    illuminated    = illuminate(object_patches, probe, mask, sigma)  [B, C, N, N]
    amplitude      = diffract(illuminated)                           [B, C, N, N]
    pred_amplitude = exp(log_scale) * amplitude;  pred_intensity = pred_amplitude**2

``x_scaled`` is ``intensity_scale * X_full`` ``[B, C, N, N]``; positions are ``coords_relative``
``[B, C, 1, 2]`` (x, y).  ``C = gridsize**2`` comes from the spec (the config), and an input with
another channel count is rejected, so a channel mismatch cannot be configured.

Parameters: the conv layers (canonical names, :mod:`ptycho_torch.canonical`), ``log_scale`` (0-d,
``requires_grad = intensity_scale_trainable``) and ``probe_real`` / ``probe_imag`` (``[N, N]``,
``requires_grad = probe_trainable``).  The CNN may run under autocast (bf16/fp16) and in
channels-last memory format; the physics always runs in float32 / complex64.

``PtychoPINN_Lightning`` (the LightningModule) lives in :mod:`ptycho_torch.training`, which
imports this module (never the other way round).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ptycho.config.config import TrainingConfig
from ptycho.conventions import padded_size
from ptycho.network_spec import NetworkSpec, network_spec_from_config
from ptycho.reference.model import OUTPUT_KEYS
from ptycho_torch import physics
from ptycho_torch.canonical import load_canonical
from ptycho_torch.layers import SpecCNN

#: The training options' defaults come from the core's TrainingConfig (dataclass field defaults).
_TRAINING_DEFAULTS = TrainingConfig

__all__ = [
    "INTERMEDIATE_KEYS",
    "DiffractionToObj",
    "PtychoPINN",
    "build_model",
]

#: Keys of :meth:`PtychoPINN.forward_intermediates` (the reference's ``OUTPUT_KEYS``: one list).
INTERMEDIATE_KEYS: tuple[str, ...] = OUTPUT_KEYS


def _physics_float(t: torch.Tensor) -> torch.Tensor:
    """Half-precision CNN outputs (autocast) as float32; float32/float64 unchanged."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class PtychoPINN(nn.Module):
    """The autoencoder: diffraction -> object -> predicted diffraction.

    Args:
        spec: the network description (``network_spec_from_config(model_config)``).
        probe_mask: multiply the exit wave by the probe disk mask (``ModelConfig.probe_mask``).
        gaussian_smoothing_sigma: 3x3 smoothing of the exit wave (0 = off).
        intensity_scale_trainable: ``log_scale.requires_grad``.
        probe_trainable: ``probe_real/probe_imag.requires_grad``.
        P: canvas size (default ``conventions.padded_size(N, gridsize)``).

    The weights start at zero (probe and scale included): load real ones with
    :func:`ptycho_torch.canonical.load_canonical` (e.g. from ``init_canonical_weights``).
    """

    def __init__(
        self,
        spec: NetworkSpec,
        *,
        probe_mask: bool = False,
        gaussian_smoothing_sigma: float = 0.0,
        intensity_scale_trainable: bool = _TRAINING_DEFAULTS.intensity_scale_trainable,
        probe_trainable: bool = _TRAINING_DEFAULTS.probe_trainable,
        P: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.probe_mask = bool(probe_mask)
        self.gaussian_smoothing_sigma = float(gaussian_smoothing_sigma)
        self.P = padded_size(spec.N, spec.gridsize) if P is None else int(P)
        self.cnn = SpecCNN(spec)
        self.log_scale = nn.Parameter(torch.zeros(()), requires_grad=bool(intensity_scale_trainable))
        self.probe_real = nn.Parameter(torch.zeros(spec.N, spec.N), requires_grad=bool(probe_trainable))
        self.probe_imag = nn.Parameter(torch.zeros(spec.N, spec.N), requires_grad=bool(probe_trainable))
        self.__dict__["_cnn_fn"] = None  # optional torch.compile'd CNN (not a registered submodule)

    # ------------------------------------------------------------------ options
    def use_channels_last(self, enabled: bool = True) -> PtychoPINN:
        """Run the CNN in channels-last memory format (faster convolutions on CPU/oneDNN and GPUs)."""
        self.cnn.use_channels_last(enabled)
        return self

    def compile_cnn(self, enabled: bool = True, **compile_kwargs: Any) -> PtychoPINN:
        """Run the CNN through ``torch.compile`` (the physics stays eager: it is complex-valued)."""
        self.__dict__["_cnn_fn"] = torch.compile(self.cnn, **compile_kwargs) if enabled else None
        return self

    @property
    def C(self) -> int:
        """Input channels, ``gridsize**2``."""
        return self.spec.C

    def complex_probe(self) -> torch.Tensor:
        """The probe ``probe_real + i probe_imag``, complex64 ``[N, N]``."""
        return torch.complex(self.probe_real, self.probe_imag)

    # ------------------------------------------------------------------ pieces
    def _check_inputs(self, x_scaled: torch.Tensor, positions: torch.Tensor) -> None:
        spec = self.spec
        if x_scaled.ndim != 4 or tuple(x_scaled.shape[1:]) != (spec.C, spec.N, spec.N):
            raise ValueError(
                f"x_scaled must have shape [B, C={spec.C}, {spec.N}, {spec.N}] (C = gridsize**2 with "
                f"gridsize={spec.gridsize}), got {list(x_scaled.shape)}"
            )
        if positions.shape != (x_scaled.shape[0], spec.C, 1, 2):
            raise ValueError(
                f"positions must have shape [B, C, 1, 2] = {[x_scaled.shape[0], spec.C, 1, 2]}, "
                f"got {list(positions.shape)}"
            )

    def decode(self, x_scaled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Intensity scaler + CNN: ``scaled_input``, ``encoded``, ``amp``, ``phase``, ``decoder_object``.

        ``decoder_object`` is the per-channel object patches, complex64 ``[B, Co, N, N]``.
        """
        scaled = x_scaled / torch.exp(self.log_scale)
        cnn = self._cnn_fn if self._cnn_fn is not None else self.cnn
        encoded, amp, phase = cnn(scaled)
        with physics.physics_autocast_off(x_scaled.device.type):
            amp32, phase32 = _physics_float(amp).contiguous(), _physics_float(phase).contiguous()
            obj = physics.combine_complex(amp32, phase32)
        return {"scaled_input": scaled, "encoded": encoded, "amp": amp32, "phase": phase32, "decoder_object": obj}

    def assemble(self, decoder_object: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The group canvas ``[B, 1, P, P]``: reassembly (``object_big``) or zero padding."""
        with physics.physics_autocast_off(decoder_object.device.type):
            pos = positions.to(self.log_scale.dtype)
            if self.spec.object_big:
                return physics.reassemble_patches(decoder_object, pos, self.P)
            return physics.pad_object(decoder_object, self.P)

    # ------------------------------------------------------------------ public forwards
    def forward_intermediates(self, x_scaled: torch.Tensor, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every named intermediate of :data:`INTERMEDIATE_KEYS` (shapes in the module docstring)."""
        self._check_inputs(x_scaled, positions)
        out = self.decode(x_scaled)
        with physics.physics_autocast_off(x_scaled.device.type):
            phys_out = physics.forward_physics(
                out["decoder_object"],
                positions.to(self.log_scale.dtype),
                self.complex_probe(),
                self.log_scale,
                N=self.spec.N,
                gridsize=self.spec.gridsize,
                object_big=self.spec.object_big,
                probe_mask=self.probe_mask,
                gaussian_smoothing_sigma=self.gaussian_smoothing_sigma,
                P=self.P,
            )
        out.update(phys_out)
        return out

    def forward(
        self, x_scaled: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(trimmed_object [B,1,N,N] complex64, pred_amplitude [B,C,N,N], pred_intensity [B,C,N,N])``.

        The three outputs of the Keras ``autoencoder``, channels-first.
        """
        out = self.forward_intermediates(x_scaled, positions)
        return out["trimmed_object"], out["pred_amplitude"], out["pred_intensity"]

    def diffraction_to_obj(self, x_scaled: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The trimmed object per group, complex64 ``[B, 1, N, N]`` (TF ``diffraction_to_obj``, channels-first).

        Runs only the CNN, the reassembly and the trim (no illumination or diffraction).  Each
        sample of any batch size gives its own object.
        """
        self._check_inputs(x_scaled, positions)
        obj = self.decode(x_scaled)["decoder_object"]
        return physics.trim(self.assemble(obj, positions), self.spec.N)

    def object_patches(self, x_scaled: torch.Tensor) -> torch.Tensor:
        """The decoder's per-channel object patches, complex64 ``[B, Co, N, N]`` (before reassembly)."""
        return self.decode(x_scaled)["decoder_object"]


class DiffractionToObj(nn.Module):
    """``diffraction_to_obj`` as a module sharing the weights of a :class:`PtychoPINN`.

    ``forward(x_scaled [B,C,N,N], positions [B,C,1,2]) -> complex64 [B, 1, N, N]``.  Its state dict
    is the autoencoder's with the prefix ``autoencoder.``.
    """

    def __init__(self, autoencoder: PtychoPINN) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    @property
    def spec(self) -> NetworkSpec:
        return self.autoencoder.spec

    def forward(self, x_scaled: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.diffraction_to_obj(x_scaled, positions)


def build_model(
    model_config: Any,
    *,
    intensity_scale_trainable: bool = _TRAINING_DEFAULTS.intensity_scale_trainable,
    probe_trainable: bool = _TRAINING_DEFAULTS.probe_trainable,
    weights: dict[str, np.ndarray] | None = None,
) -> PtychoPINN:
    """A :class:`PtychoPINN` for a ``ModelConfig`` (duck-typed), optionally loaded with canonical ``weights``."""
    model = PtychoPINN(
        network_spec_from_config(model_config),
        probe_mask=bool(model_config.probe_mask),
        gaussian_smoothing_sigma=float(model_config.gaussian_smoothing_sigma),
        intensity_scale_trainable=intensity_scale_trainable,
        probe_trainable=probe_trainable,
    )
    if weights is not None:
        load_canonical(model, weights)
    return model


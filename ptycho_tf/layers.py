"""Keras 3 layers of the TensorFlow PtychoPINN model.

Every custom layer is registered with ``keras.saving.register_keras_serializable``
(package ``ptycho``), so a saved ``model.keras`` loads with ``safe_mode=True`` once this
module is imported; there are no ``Lambda`` layers.  Every parameter is a tracked Keras
weight created with ``add_weight`` (upstream kept the intensity scale and the probe in
raw, untracked ``tf.Variable`` objects, which Keras 3 neither trains nor saves).

The network layers implement the :class:`ptycho.network_spec.LayerSpec` kinds that Keras
does not provide (``slice_channels``, ``activation`` with a scale, ``mask_multiply``,
``combine_complex``); the physics layers wrap :mod:`ptycho_tf.physics`.  Shapes are
channels-last: images ``[B, H, W, C]``, positions ``[B, 1, 2, C]``.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ptycho.reference.physics import border_mask
from ptycho_tf import physics

__all__ = [
    "ACTIVATIONS",
    "CombineComplex",
    "Diffract",
    "ExtractPatches",
    "IntensityScale",
    "MaskMultiply",
    "PadObject",
    "ProbeIllumination",
    "ReassemblePatches",
    "ScaledActivation",
    "SliceChannels",
    "Square",
    "TrimObject",
]

_PACKAGE = "ptycho"

#: Activation name (``LayerSpec.activation``) -> TensorFlow function; same formulas as
#: ``ptycho.network_spec.ACTIVATIONS`` (swish = x * sigmoid(x)).
ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": tf.nn.relu,
    "sigmoid": tf.sigmoid,
    "swish": tf.nn.silu,
    "softplus": tf.nn.softplus,
    "tanh": tf.tanh,
}


# =========================================================================== network layers
@keras.saving.register_keras_serializable(package=_PACKAGE)
class SliceChannels(keras.layers.Layer):
    """Channels ``start .. stop - 1`` of ``[B, H, W, C]`` (spec kind ``slice_channels``)."""

    def __init__(self, start: int, stop: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start = int(start)
        self.stop = int(stop)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ScaledActivation(keras.layers.Layer):
    """``scale * f(x)`` for an activation name of :data:`ACTIVATIONS` (spec kind ``activation``)."""

    def __init__(self, activation: str, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        self.scale = float(scale)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        y = ACTIVATIONS[self.activation](x)
        return y if self.scale == 1.0 else self.scale * y

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": self.activation, "scale": self.scale}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MaskMultiply(keras.layers.Layer):
    """Multiply ``[B, H, W, C]`` by a constant ``[H, W]`` mask (spec kind ``mask_multiply``).

    ``mask='border'`` is :func:`ptycho.reference.physics.border_mask` of ``H`` (0 on the
    central ``H/2 x H/2`` block, 1 elsewhere).  The mask is a constant, not a weight.
    """

    def __init__(self, mask: str = "border", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mask != "border":
            raise ValueError(f"unknown mask {mask!r}; expected 'border'")
        self.mask = mask

    def call(self, x: tf.Tensor) -> tf.Tensor:
        m = tf.constant(border_mask(int(x.shape[1])), dtype=x.dtype)
        return x * m[None, :, :, None]

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mask": self.mask}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CombineComplex(keras.layers.Layer):
    """``[amp, phase]`` -> complex64 ``amp * exp(i * phase)`` (spec kind ``combine_complex``)."""

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        amp, phase = inputs
        return physics.combine_complex(amp, phase)

    def compute_output_spec(self, inputs: list) -> keras.KerasTensor:
        return keras.KerasTensor(inputs[0].shape, dtype="complex64")


# =========================================================================== physics parameters
@keras.saving.register_keras_serializable(package=_PACKAGE)
class IntensityScale(keras.layers.Layer):
    """The learned intensity scale ``s = exp(log_scale)``; one weight, used twice in the model.

    ``call(x)`` returns ``x / exp(log_scale)`` (the network input); ``call(x, inverse=True)``
    returns ``x * exp(log_scale)`` (the predicted scaled amplitude).  Weight ``log_scale``,
    shape ``()``, canonical name ``intensity_scale.log_scale``; it is trainable iff the
    layer is (``trainable=TrainingConfig.intensity_scale_trainable``).
    """

    def build(self, input_shape: tuple) -> None:
        self.log_scale = self.add_weight(name="log_scale", shape=(), initializer="zeros", dtype="float32")

    def call(self, x: tf.Tensor, inverse: bool = False) -> tf.Tensor:
        s = tf.exp(self.log_scale)
        return x * s if inverse else x / s

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ProbeIllumination(keras.layers.Layer):
    """Exit wave ``psi = illuminate(patches, probe)`` with a learnable complex probe.

    Weights ``real`` and ``imag`` (float32 ``[N, N]``; canonical ``probe.real`` /
    ``probe.imag`` when the layer is named ``probe``), trainable iff the layer is
    (``trainable=TrainingConfig.probe_trainable``).  Then 3x3 Gaussian smoothing when
    ``gaussian_smoothing_sigma != 0`` and the disk mask when ``probe_mask`` (both fixed at
    construction and saved in the layer config).  Input/output complex64 ``[B, N, N, C]``.
    """

    def __init__(self, N: int, probe_mask: bool = False, gaussian_smoothing_sigma: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.N = int(N)
        self.probe_mask = bool(probe_mask)
        self.gaussian_smoothing_sigma = float(gaussian_smoothing_sigma)

    def build(self, input_shape: tuple) -> None:
        self.real = self.add_weight(name="real", shape=(self.N, self.N), initializer="ones", dtype="float32")
        self.imag = self.add_weight(name="imag", shape=(self.N, self.N), initializer="zeros", dtype="float32")

    def call(self, patches: tf.Tensor) -> tf.Tensor:
        probe = tf.complex(tf.convert_to_tensor(self.real), tf.convert_to_tensor(self.imag))
        return physics.illuminate(
            patches,
            probe,
            probe_mask=self.probe_mask,
            gaussian_smoothing_sigma=self.gaussian_smoothing_sigma,
        )

    def compute_output_spec(self, patches: keras.KerasTensor) -> keras.KerasTensor:
        return keras.KerasTensor(patches.shape, dtype="complex64")

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "N": self.N,
            "probe_mask": self.probe_mask,
            "gaussian_smoothing_sigma": self.gaussian_smoothing_sigma,
        }


# =========================================================================== physics ops
@keras.saving.register_keras_serializable(package=_PACKAGE)
class ReassemblePatches(keras.layers.Layer):
    """``[patches [B, N, N, C], positions [B, 1, 2, C]]`` -> canvas ``[B, P, P, 1]`` (``object.big``).

    :func:`ptycho_tf.physics.reassemble_patches`: per sample at every batch size.
    """

    def __init__(self, P: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.P = int(P)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        patches, positions = inputs
        return physics.reassemble_patches(patches, positions, self.P)

    def compute_output_spec(self, inputs: list) -> keras.KerasTensor:
        return keras.KerasTensor((inputs[0].shape[0], self.P, self.P, 1), dtype=inputs[0].dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "P": self.P}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PadObject(keras.layers.Layer):
    """``[B, N, N, 1]`` -> ``[B, P, P, 1]`` zero padding (``object.big=False``)."""

    def __init__(self, P: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.P = int(P)

    def call(self, patch: tf.Tensor) -> tf.Tensor:
        return physics.pad_object(patch, self.P)

    def compute_output_spec(self, patch: keras.KerasTensor) -> keras.KerasTensor:
        return keras.KerasTensor((patch.shape[0], self.P, self.P, 1), dtype=patch.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "P": self.P}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TrimObject(keras.layers.Layer):
    """Central ``N x N`` crop of the canvas: ``[B, P, P, 1]`` -> ``[B, N, N, 1]`` (``trimmed_obj``)."""

    def __init__(self, N: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.N = int(N)

    def call(self, canvas: tf.Tensor) -> tf.Tensor:
        return physics.trim(canvas, self.N)

    def compute_output_spec(self, canvas: keras.KerasTensor) -> keras.KerasTensor:
        return keras.KerasTensor((canvas.shape[0], self.N, self.N, 1), dtype=canvas.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "N": self.N}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ExtractPatches(keras.layers.Layer):
    """``[canvas [B, P, P, 1], positions [B, 1, 2, C]]`` -> patches ``[B, N, N, C]`` (channel layout)."""

    def __init__(self, N: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.N = int(N)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        canvas, positions = inputs
        return physics.extract_patches(canvas, positions, self.N)

    def compute_output_spec(self, inputs: list) -> keras.KerasTensor:
        canvas, positions = inputs
        return keras.KerasTensor((canvas.shape[0], self.N, self.N, positions.shape[3]), dtype=canvas.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "N": self.N}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Diffract(keras.layers.Layer):
    """Far-field amplitude ``sqrt(fftshift(|fft2(psi)|**2) / N**2)``: complex64 -> float32 ``[B, N, N, C]``."""

    def call(self, psi: tf.Tensor) -> tf.Tensor:
        return physics.diffract_channels(psi)

    def compute_output_spec(self, psi: keras.KerasTensor) -> keras.KerasTensor:
        return keras.KerasTensor(psi.shape, dtype="float32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Square(keras.layers.Layer):
    """``x**2``: the predicted scaled amplitude -> the predicted intensity."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.square(x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape


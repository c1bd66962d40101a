"""The PtychoPINN model in Keras 3, built by walking the backend-neutral network spec.

Two Keras models share every layer (and so every weight)::

    autoencoder        = Model([input, input_positions], [trimmed_obj, pred_amp_scaled, pred_intensity])
    diffraction_to_obj = Model([input, input_positions], trimmed_obj)

* ``input`` float32 ``[B, N, N, C]``: the scaled diffraction amplitude ``s * X_full``;
* ``input_positions`` float32 ``[B, 1, 2, C]``: relative offsets ``coords_relative``, (x, y);
* ``trimmed_obj`` complex64 ``[B, N, N, 1]``: the object centred on the group centroid;
* ``pred_amp_scaled`` float32 ``[B, N, N, C]`` = ``exp(log_scale) * amplitude``;
* ``pred_intensity`` float32 ``[B, N, N, C]`` = ``pred_amp_scaled ** 2``.

The graph is (names are Keras layer names)::

    intensity_scale (x / exp(log_scale)) -> the spec's layers, one Keras layer each, named
    as in the spec -> padded_obj (ReassemblePatches, per sample; PadObject if not object_big)
    -> trimmed_obj | object_patches (ExtractPatches) -> probe (ProbeIllumination) ->
    amplitude (Diffract) -> intensity_scale (inverse: x * exp(log_scale)) -> pred_intensity

Weights: every Keras variable's path ``<layer>/<weight>`` maps to the canonical name
``<layer>.<weight>`` (``encoder.block0.conv0/kernel`` -> ``encoder.block0.conv0.kernel``,
``intensity_scale/log_scale`` -> ``intensity_scale.log_scale``, ``probe/real`` ->
``probe.real``); Keras kernels are already HWIO, so import/export is a rename
(:mod:`ptycho_tf.canonical`).

Module attributes ``autoencoder`` and ``diffraction_to_obj`` are the models of the most
recent training (or load) in this process, as upstream code and Ptychodus expect;
:func:`params` returns the legacy ``params.cfg`` dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ptycho import conventions
from ptycho import params as _params
from ptycho.config.config import TrainingConfig
from ptycho.errors import CanonicalWeightsError
from ptycho.network_spec import INPUT_NAME, LayerSpec, NetworkSpec, network_spec_from_config
from ptycho.reference.model import OUTPUT_KEYS
from ptycho_tf import canonical
from ptycho_tf.canonical import initial_weights
from ptycho_tf.layers import (
    CombineComplex,
    Diffract,
    ExtractPatches,
    IntensityScale,
    MaskMultiply,
    PadObject,
    ProbeIllumination,
    ReassemblePatches,
    ScaledActivation,
    SliceChannels,
    Square,
    TrimObject,
)

#: The training options' defaults come from the core's TrainingConfig (dataclass field defaults).
_TRAINING_DEFAULTS = TrainingConfig

__all__ = [
    "INTERMEDIATE_KEYS",
    "PtychoPINNModels",
    "build_models",
    "create_models",
    "current_models",
    "default_canvas_size",
    "models_from_autoencoder",
    "params",
    "set_current_models",
]

#: Keras names of the model inputs (Ptychodus passes them positionally).
INPUT_NAMES: tuple[str, str] = ("input", "input_positions")
#: Keras layer names of the physics stages.
SCALER_NAME = "intensity_scale"
PADDED_NAME = "padded_obj"
TRIMMED_NAME = "trimmed_obj"
PATCHES_NAME = "object_patches"
PROBE_NAME = "probe"
AMPLITUDE_NAME = "amplitude"
INTENSITY_NAME = "pred_intensity"
#: Keys of the intermediates model's output dict (the reference's ``OUTPUT_KEYS``: one list).
INTERMEDIATE_KEYS: tuple[str, ...] = OUTPUT_KEYS


# =========================================================================== spec -> Keras
def _network_layer(layer: LayerSpec) -> keras.layers.Layer:
    """A fresh Keras layer for one spec layer, named like it."""
    kind, name = layer.kind, layer.name
    if kind == "conv2d":
        k = int(layer.kernel_size or 3)
        return keras.layers.Conv2D(
            layer.out_channels, (k, k), padding="same", activation=layer.activation or "linear", name=name
        )
    if kind == "maxpool2d":
        f = int(layer.factor or 2)
        return keras.layers.MaxPooling2D(pool_size=f, strides=f, padding="valid", name=name)
    if kind == "upsample2d":
        return keras.layers.UpSampling2D(size=int(layer.factor or 2), interpolation="nearest", name=name)
    if kind == "slice_channels":
        return SliceChannels(int(layer.channel_start or 0), int(layer.channel_stop or 0), name=name)
    if kind == "activation":
        return ScaledActivation(layer.activation or "linear", layer.scale, name=name)
    if kind == "zero_pad2d":
        return keras.layers.ZeroPadding2D(padding=int(layer.padding or 0), name=name)
    if kind == "mask_multiply":
        return MaskMultiply(layer.mask or "border", name=name)
    if kind == "add":
        return keras.layers.Add(name=name)
    if kind == "combine_complex":
        return CombineComplex(name=name)
    raise ValueError(f"layer {name!r} has unknown kind {kind!r}")


LayerGetter = Callable[[str, Callable[[], keras.layers.Layer]], keras.layers.Layer]


def _wire(
    spec: NetworkSpec,
    get: LayerGetter,
    *,
    P: int,
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
    intensity_scale_trainable: bool,
    probe_trainable: bool,
) -> tuple[list[keras.KerasTensor], dict[str, keras.KerasTensor]]:
    """Connect the whole model; ``get(name, factory)`` returns an existing layer or makes one.

    Returns the two inputs and the symbolic tensors of :data:`INTERMEDIATE_KEYS`.
    """
    N, C = spec.N, spec.C
    x = keras.Input((N, N, C), name=INPUT_NAMES[0], dtype="float32")
    pos = keras.Input((1, 2, C), name=INPUT_NAMES[1], dtype="float32")
    scaler = get(SCALER_NAME, lambda: IntensityScale(name=SCALER_NAME, trainable=intensity_scale_trainable))
    tensors: dict[str, keras.KerasTensor] = {INPUT_NAME: scaler(x)}
    for layer in spec.layers:
        args = [tensors[i] for i in layer.inputs]
        keras_layer = get(layer.name, lambda layer=layer: _network_layer(layer))
        tensors[layer.name] = keras_layer(args if len(args) > 1 else args[0])
    obj = tensors[spec.object_name]
    if spec.object_big:
        padded = get(PADDED_NAME, lambda: ReassemblePatches(P, name=PADDED_NAME))([obj, pos])
    else:
        padded = get(PADDED_NAME, lambda: PadObject(P, name=PADDED_NAME))(obj)
    trimmed = get(TRIMMED_NAME, lambda: TrimObject(N, name=TRIMMED_NAME))(padded)
    patches = get(PATCHES_NAME, lambda: ExtractPatches(N, name=PATCHES_NAME))([padded, pos])
    psi = get(
        PROBE_NAME,
        lambda: ProbeIllumination(
            N,
            probe_mask=probe_mask,
            gaussian_smoothing_sigma=gaussian_smoothing_sigma,
            name=PROBE_NAME,
            trainable=probe_trainable,
        ),
    )(patches)
    amplitude = get(AMPLITUDE_NAME, lambda: Diffract(name=AMPLITUDE_NAME))(psi)
    pred_amplitude = scaler(amplitude, inverse=True)
    pred_intensity = get(INTENSITY_NAME, lambda: Square(name=INTENSITY_NAME))(pred_amplitude)
    out = {
        "scaled_input": tensors[INPUT_NAME],
        "encoded": tensors[spec.encoded_name],
        "amp": tensors[spec.amp_name],
        "phase": tensors[spec.phase_name],
        "decoder_object": obj,
        "padded_object": padded,
        "trimmed_object": trimmed,
        "object_patches": patches,
        "illuminated": psi,
        "amplitude": amplitude,
        "pred_amplitude": pred_amplitude,
        "pred_intensity": pred_intensity,
    }
    return [x, pos], out


@dataclass
class PtychoPINNModels:
    """The Keras models of one PtychoPINN network (all share their layers and weights).

    Attributes:
        spec: the network spec they were built from.
        autoencoder: ``[input, input_positions] -> [trimmed_obj, pred_amp_scaled, pred_intensity]``.
        diffraction_to_obj: ``[input, input_positions] -> trimmed_obj`` complex64 ``[B, N, N, 1]``.
        intermediates: ``[input, input_positions] -> {key: tensor}`` for :data:`INTERMEDIATE_KEYS`.
    """

    spec: NetworkSpec
    autoencoder: keras.Model
    diffraction_to_obj: keras.Model
    intermediates: keras.Model

    def as_dict(self) -> dict[str, keras.Model]:
        """``{'autoencoder': ..., 'diffraction_to_obj': ...}`` (what a bundle holds)."""
        return {"autoencoder": self.autoencoder, "diffraction_to_obj": self.diffraction_to_obj}

    @property
    def canvas_size(self) -> int:
        """Canvas side ``P`` of the object assembly layer."""
        return int(self.autoencoder.get_layer(PADDED_NAME).P)

    @property
    def probe_mask(self) -> bool:
        return bool(self.autoencoder.get_layer(PROBE_NAME).probe_mask)

    @property
    def gaussian_smoothing_sigma(self) -> float:
        return float(self.autoencoder.get_layer(PROBE_NAME).gaussian_smoothing_sigma)

    def canonical_weights(self) -> dict[str, np.ndarray]:
        """Every parameter under its canonical name (see :func:`get_canonical_weights`)."""
        return canonical.get_canonical_weights(self.autoencoder, self.spec)

    def set_canonical_weights(self, weights: Mapping[str, Any]) -> None:
        """Load canonical weights into the shared layers (see :func:`set_canonical_weights`)."""
        canonical.set_canonical_weights(self.autoencoder, weights, self.spec)


def _assemble(spec: NetworkSpec, inputs: list, out: dict) -> PtychoPINNModels:
    autoencoder = keras.Model(
        inputs, [out["trimmed_object"], out["pred_amplitude"], out["pred_intensity"]], name="autoencoder"
    )
    diffraction_to_obj = keras.Model(inputs, out["trimmed_object"], name="diffraction_to_obj")
    intermediates = keras.Model(inputs, {k: out[k] for k in INTERMEDIATE_KEYS}, name="intermediates")
    return PtychoPINNModels(spec, autoencoder, diffraction_to_obj, intermediates)


def build_models(
    spec: NetworkSpec,
    *,
    weights: Mapping[str, Any],
    probe_mask: bool,
    gaussian_smoothing_sigma: float,
    intensity_scale_trainable: bool = _TRAINING_DEFAULTS.intensity_scale_trainable,
    probe_trainable: bool = _TRAINING_DEFAULTS.probe_trainable,
    P: int | None = None,
) -> PtychoPINNModels:
    """Build the Keras models for ``spec`` and load ``weights`` (canonical dict) into them.

    Args:
        spec: the network spec (``network_spec_from_config(config.model)``).
        weights: canonical weights of ``spec`` (e.g. :func:`initial_weights`).
        probe_mask: multiply the exit wave by the probe disk mask (``ModelConfig.probe_mask``).
        gaussian_smoothing_sigma: 3x3 smoothing of the exit wave, 0 = off.
        intensity_scale_trainable: train ``intensity_scale.log_scale``.
        probe_trainable: train ``probe.real`` / ``probe.imag``.
        P: canvas size; default :func:`default_canvas_size`.

    Returns:
        :class:`PtychoPINNModels`; its ``trainable_weights`` are the conv weights plus the
        physics parameters whose flag is set.
    """
    P = default_canvas_size(spec.N, spec.gridsize) if P is None else int(P)
    layers: dict[str, keras.layers.Layer] = {}

    def get(name: str, factory: Callable[[], keras.layers.Layer]) -> keras.layers.Layer:
        if name not in layers:
            layers[name] = factory()
        return layers[name]

    inputs, out = _wire(
        spec,
        get,
        P=P,
        probe_mask=probe_mask,
        gaussian_smoothing_sigma=gaussian_smoothing_sigma,
        intensity_scale_trainable=intensity_scale_trainable,
        probe_trainable=probe_trainable,
    )
    models = _assemble(spec, inputs, out)
    models.set_canonical_weights(weights)
    return models


def models_from_autoencoder(autoencoder: keras.Model, spec: NetworkSpec) -> PtychoPINNModels:
    """Rewire the three models from the layers of an existing (e.g. loaded) ``autoencoder``.

    The new models share the autoencoder's layers and weights; configuration (canvas size,
    probe mask, smoothing, trainability) comes from those layers.
    """
    existing = {layer.name: layer for layer in autoencoder.layers}

    def get(name: str, factory: Callable[[], keras.layers.Layer]) -> keras.layers.Layer:
        if name not in existing:
            raise CanonicalWeightsError(
                f"the autoencoder has no layer {name!r} required by the network spec",
                field=name,
                fix="load a model saved by ptycho_tf.model_manager for this configuration",
            )
        return existing[name]

    probe = existing.get(PROBE_NAME)
    inputs, out = _wire(
        spec,
        get,
        P=0,
        probe_mask=bool(getattr(probe, "probe_mask", False)),
        gaussian_smoothing_sigma=float(getattr(probe, "gaussian_smoothing_sigma", 0.0)),
        intensity_scale_trainable=True,
        probe_trainable=False,
    )
    return _assemble(spec, inputs, out)


# =========================================================================== construction from config
def default_canvas_size(N: int, gridsize: int) -> int:
    """Canvas side ``P`` from ``params.cfg['offset']`` and ``['max_position_jitter']`` (legacy rule)."""
    return conventions.padded_size(N, gridsize, _params.get("offset"), _params.get("max_position_jitter"))


def create_models(
    model_config: Any,
    *,
    intensity_scale_trainable: bool = _TRAINING_DEFAULTS.intensity_scale_trainable,
    probe_trainable: bool = _TRAINING_DEFAULTS.probe_trainable,
    seed: int = 0,
    weights: Mapping[str, Any] | None = None,
) -> PtychoPINNModels:
    """Build the models for a ``ModelConfig``: spec, canvas size and probe settings from the config.

    ``weights=None`` uses :func:`initial_weights` (seeded; log scale and probe from ``params.cfg``).
    """
    spec = network_spec_from_config(model_config)
    return build_models(
        spec,
        weights=initial_weights(spec, seed=seed) if weights is None else weights,
        probe_mask=bool(model_config.probe_mask),
        gaussian_smoothing_sigma=float(model_config.gaussian_smoothing_sigma),
        intensity_scale_trainable=intensity_scale_trainable,
        probe_trainable=probe_trainable,
    )


# =========================================================================== process-wide current models
_CURRENT: dict[str, PtychoPINNModels] = {}


def set_current_models(models: PtychoPINNModels) -> None:
    """Record ``models`` as the most recent training/load of this process (``model_manager.save`` saves them)."""
    _CURRENT["models"] = models


def current_models() -> PtychoPINNModels:
    """The models of the most recent training (or load) in this process."""
    try:
        return _CURRENT["models"]
    except KeyError:
        raise RuntimeError(
            "no PtychoPINN model has been trained or loaded in this process; run "
            "ptycho_tf.workflows.components.train_cdi_model (or run_cdi_example) first"
        ) from None


def __getattr__(name: str) -> Any:
    """``ptycho_tf.model.autoencoder`` / ``ptycho_tf.model.diffraction_to_obj``: the current models."""
    if name in ("autoencoder", "diffraction_to_obj"):
        return getattr(current_models(), name)
    raise AttributeError(f"module 'ptycho_tf.model' has no attribute {name!r}")


def params() -> dict[str, Any]:
    """The legacy configuration dict (``ptycho.params.params()``); Ptychodus reads ``['intensity_scale']``."""
    return _params.params()

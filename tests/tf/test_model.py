"""The Keras models built from the network spec: structure, weights, trainability, canonical import/export."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ptycho import params
from ptycho.canonical_weights import init_canonical_weights, read_canonical_weights
from ptycho.config.config import ModelConfig
from ptycho.errors import CanonicalWeightsError
from ptycho.network_spec import build_network_spec
from ptycho.reference.physics import default_probe, normalize_probe
from ptycho_tf import canonical as tf_canonical
from ptycho_tf import layers as tf_layers
from ptycho_tf import model as tf_model
from ptycho_tf.canonical import get_canonical_weights
from ptycho_tf.model import build_models, create_models
from ptycho_tf.model_manager import spec_from_keras_model

#: Upstream's verified Keras ``count_params`` (conv weights only; upstream-tf.md §5).
UPSTREAM_CONV_PARAMS = {(64, 1): 2_331_772, (64, 2): 2_340_208}


def _weights(spec, seed=1, scale=30.0):
    return init_canonical_weights(
        spec, seed=seed, log_scale=float(np.log(scale)), probe=normalize_probe(default_probe(spec.N), 4.0)
    )


@pytest.fixture(scope="module")
def gs2_models():
    spec = build_network_spec(32, 2, n_filters_scale=1)
    return build_models(spec, weights=_weights(spec), probe_mask=False, gaussian_smoothing_sigma=0.0)


@pytest.mark.parametrize("gridsize", [1, 2])
def test_parameter_counts_match_the_spec_and_upstream(gridsize):
    spec = build_network_spec(64, gridsize)
    models = build_models(spec, weights=_weights(spec), probe_mask=False, gaussian_smoothing_sigma=0.0)
    # every canonical parameter is a tracked Keras weight: conv weights + log_scale + probe (2 N^2)
    assert models.autoencoder.count_params() == spec.param_count() == spec.conv_param_count() + 1 + 2 * 64 * 64
    assert spec.conv_param_count() == UPSTREAM_CONV_PARAMS[(64, gridsize)]
    assert models.diffraction_to_obj.count_params() == spec.param_count() - 2 * 64 * 64  # no probe in d2o


def test_inputs_outputs_names_dtypes_and_shapes(gs2_models):
    ae, d2o = gs2_models.autoencoder, gs2_models.diffraction_to_obj
    assert [t.name for t in d2o.inputs] == ["input", "input_positions"]
    assert tuple(d2o.inputs[0].shape) == (None, 32, 32, 4) and d2o.inputs[0].dtype == "float32"
    assert tuple(d2o.inputs[1].shape) == (None, 1, 2, 4) and d2o.inputs[1].dtype == "float32"
    assert d2o.outputs[0].dtype == "complex64" and tuple(d2o.outputs[0].shape) == (None, 32, 32, 1)
    assert [o.dtype for o in ae.outputs] == ["complex64", "float32", "float32"]
    assert [tuple(o.shape) for o in ae.outputs] == [(None, 32, 32, 1), (None, 32, 32, 4), (None, 32, 32, 4)]


def test_no_lambda_layers_and_every_custom_layer_is_registered(gs2_models):
    for layer in gs2_models.autoencoder.layers:
        assert not isinstance(layer, keras.layers.Lambda)
        cls = type(layer)
        if cls.__module__.startswith("ptycho"):
            assert keras.saving.get_registered_object(f"ptycho>{cls.__name__}") is cls


def test_gridsize2_predict_gives_one_object_per_sample_for_batch_times_C_at_least_64(gs2_models, rng):
    B = 40  # predict batch 32 -> 32 * 4 = 128 >= 64 patches in one call
    x = rng.uniform(0, 30, (B, 32, 32, 4)).astype(np.float32)
    pos = rng.uniform(-3, 3, (B, 1, 2, 4)).astype(np.float32)
    out = gs2_models.diffraction_to_obj.predict([x, pos], batch_size=32, verbose=0)
    assert out.shape == (B, 32, 32, 1) and out.dtype == np.complex64
    single = np.concatenate([gs2_models.diffraction_to_obj.predict([x[i : i + 1], pos[i : i + 1]], verbose=0)
                             for i in (0, 17, 39)])
    np.testing.assert_allclose(out[[0, 17, 39]], single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_trainable,probe_trainable", [(True, False), (False, True), (False, False)])
def test_log_scale_and_probe_trainability_follow_the_flags(scale_trainable, probe_trainable):
    spec = build_network_spec(32, 1, n_filters_scale=1)
    models = build_models(
        spec, weights=_weights(spec), probe_mask=False, gaussian_smoothing_sigma=0.0,
        intensity_scale_trainable=scale_trainable, probe_trainable=probe_trainable,
    )
    trainable = {tf_canonical.canonical_name(v.path) for v in models.autoencoder.trainable_weights}
    assert ("intensity_scale.log_scale" in trainable) == scale_trainable
    assert ("probe.real" in trainable) == probe_trainable and ("probe.imag" in trainable) == probe_trainable
    assert {p.name for p in spec.conv_params()} <= trainable


def test_canonical_weights_round_trip_exactly_through_models_and_files(gs2_models, tmp_path, rng):
    spec = gs2_models.spec
    w = _weights(spec, seed=7, scale=12.5)
    w["probe.imag"] = rng.standard_normal((32, 32)).astype(np.float32)
    gs2_models.set_canonical_weights(w)
    got = gs2_models.canonical_weights()
    assert list(got) == spec.param_names()
    assert all(np.array_equal(got[k], w[k]) for k in w)
    path = tf_canonical.write_weights(gs2_models, tmp_path / "w.h5")
    read, attrs = read_canonical_weights(path, spec)
    assert attrs["backend"] == "tensorflow" and all(np.array_equal(read[k], w[k]) for k in w)
    other = build_models(spec, weights=_weights(spec, seed=99), probe_mask=False, gaussian_smoothing_sigma=0.0)
    tf_canonical.read_weights_into(other, path)
    assert all(np.array_equal(v, w[k]) for k, v in other.canonical_weights().items())


def test_set_canonical_weights_rejects_a_mismatched_dict(gs2_models):
    w = _weights(gs2_models.spec)
    del w["decoder_amp.head.center.bias"]
    with pytest.raises(CanonicalWeightsError, match="decoder_amp.head.center.bias"):
        gs2_models.set_canonical_weights(w)
    with pytest.raises(CanonicalWeightsError):
        get_canonical_weights(gs2_models.autoencoder, build_network_spec(32, 1, n_filters_scale=1))


@pytest.mark.parametrize(
    "kw",
    [dict(gridsize=1), dict(gridsize=2, object_big=False), dict(gridsize=1, pad_object=False, amp_activation="swish"),
     dict(gridsize=1, probe_big=False)],
)
def test_spec_is_recovered_from_the_keras_model(kw):
    spec = build_network_spec(32, n_filters_scale=1, **kw)
    models = build_models(spec, weights=_weights(spec), probe_mask=True, gaussian_smoothing_sigma=0.5)
    assert spec_from_keras_model(models.autoencoder).config() == spec.config()
    assert models.probe_mask is True and models.gaussian_smoothing_sigma == 0.5
    assert models.canvas_size == 32 + 10 + 4 * (spec.gridsize - 1)


def test_create_models_reads_probe_and_intensity_scale_from_params():
    params.cfg["probe"] = normalize_probe(default_probe(32), 4.0)[..., None]
    params.cfg["intensity_scale"] = 42.0
    models = create_models(ModelConfig(N=32, gridsize=1, n_filters_scale=1), seed=3)
    w = models.canonical_weights()
    assert float(w["intensity_scale.log_scale"]) == pytest.approx(np.log(42.0), rel=1e-7)
    np.testing.assert_array_equal(w["probe.real"], params.cfg["probe"][..., 0].real.astype(np.float32))
    ref = init_canonical_weights(models.spec, seed=3, log_scale=np.log(42.0), probe=params.cfg["probe"])
    assert all(np.array_equal(w[k], ref[k]) for k in ref)


def test_module_level_models_and_params():
    tf_model._CURRENT.clear()
    with pytest.raises(RuntimeError, match="no PtychoPINN model"):
        _ = tf_model.autoencoder
    params.cfg["intensity_scale"] = 7.5
    assert tf_model.params()["intensity_scale"] == 7.5
    assert tf_layers.ACTIVATIONS.keys() >= {"sigmoid", "swish", "softplus", "relu", "tanh", "linear"}

"""ptycho_torch.config_params / config_bridge / config_factory: mappings, precedence, params.cfg discipline."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import params
from ptycho.config.config import (
    ModelConfig,
    PyTorchExecutionConfig,
    TrainingConfig,
    dataclass_to_legacy_dict,
    update_legacy_dict,
)
from ptycho.errors import BundleBackendMismatchError, ConfigError
from ptycho_torch import config_params as cp
from ptycho_torch.config_bridge import to_inference_config, to_model_config, to_training_config
from ptycho_torch.config_factory import create_inference_payload, create_training_payload, infer_probe_size

pytestmark = pytest.mark.torch


def test_torch_defaults_are_the_canonical_defaults():
    data, model, training = cp.DataConfig(), cp.ModelConfig(), cp.TrainingConfig(train_data_file="a.npz", n_groups=8)
    mc = to_model_config(data, model)
    tc = to_training_config(mc, data, model, training, {"test_data_file": "b.npz"})
    canonical = TrainingConfig(model=ModelConfig(), train_data_file="a.npz", test_data_file="b.npz", n_groups=8,
                               backend="pytorch")
    assert mc == ModelConfig()
    assert dataclass_to_legacy_dict(tc) == dataclass_to_legacy_dict(canonical)


def test_channels_are_derived_from_the_grid_and_cannot_be_set():
    data = cp.DataConfig(grid_size=(2, 2))
    assert data.C == 4
    with pytest.raises(TypeError):
        cp.DataConfig(C=1)  # type: ignore[call-arg]
    with pytest.raises(AttributeError):
        data.C = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="grid_size"):
        cp.DataConfig(grid_size=(0, 2))


@pytest.mark.parametrize("field,value,target,expected", [
    ("mode", "Supervised", "model_type", "supervised"),
    ("mode", "Unsupervised", "model_type", "pinn"),
    ("amp_activation", "silu", "amp_activation", "swish"),
    ("amp_activation", "SiLU", "amp_activation", "swish"),
    ("amp_activation", "softplus", "amp_activation", "softplus"),
])
def test_model_mappings(field, value, target, expected):
    mc = to_model_config(cp.DataConfig(grid_size=(3, 3)), cp.ModelConfig(**{field: value}))
    assert getattr(mc, target) == expected and mc.gridsize == 3


def test_training_mappings_and_required_overrides():
    data = cp.DataConfig(K=7, nphotons=1e6, subsample_seed=4)
    model = cp.ModelConfig(loss_function="MAE", intensity_scale_trainable=False, probe_trainable=True)
    training = cp.TrainingConfig(train_data_file="t.npz", test_data_file="s.npz", epochs=3, nll=False, n_groups=9)
    tc = to_training_config(to_model_config(data, model), data, model, training)
    assert (tc.nepochs, tc.neighbor_count, tc.nll_weight, tc.torch_loss_mode, tc.nphotons) == (3, 7, 0.0, "mae", 1e6)
    assert (tc.intensity_scale_trainable, tc.probe_trainable, tc.subsample_seed, tc.backend) == (
        False, True, 4, "pytorch")
    with pytest.raises(ValueError, match="n_groups"):
        to_training_config(to_model_config(data, model), data, model, cp.TrainingConfig(train_data_file="t.npz"))
    with pytest.raises(ValueError, match="train_data_file"):
        to_training_config(to_model_config(data, model), data, model, cp.TrainingConfig(n_groups=3))
    with pytest.raises(ValueError, match="Non-square"):
        to_model_config(cp.DataConfig(grid_size=(1, 2)), model)
    with pytest.raises(ValueError, match="amp_activation"):
        to_model_config(data, cp.ModelConfig(amp_activation="gelu"))
    with pytest.raises(ValueError, match="model_path"):
        to_inference_config(to_model_config(data, model), data, cp.InferenceConfig(), {"test_data_file": "x"})


def test_training_payload_precedence_and_params_cfg(sim_npz, tmp_path):
    execution = PyTorchExecutionConfig(learning_rate=2e-3, scheduler="WarmupCosine", accelerator="cpu")
    expected = params.snapshot()
    payload = create_training_payload(sim_npz, tmp_path, {"n_groups": 10, "gridsize": 2, "learning_rate": 5e-4,
                                                          "batch_size": 4, "nphotons": 1e7}, execution)
    tc = payload.tf_training_config
    assert (tc.model.N, tc.model.gridsize, payload.pt_data_config.C) == (32, 2, 4)  # N inferred from the probe
    assert payload.execution_config.learning_rate == 5e-4  # explicit override beats the execution config
    assert payload.execution_config.scheduler == "WarmupCosine" == tc.scheduler  # execution config beats default
    assert payload.pt_training_config.learning_rate == 5e-4
    assert execution.learning_rate == 2e-3  # the caller's object is not mutated
    # update_legacy_dict ran: params.cfg holds exactly this config, nothing torch-specific
    update_legacy_dict(expected, tc)  # params.cfg before the call plus exactly this config, nothing else
    assert set(params.cfg) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(params.cfg[key], dtype=object if key != "probe" else None),
                                      np.asarray(value, dtype=object if key != "probe" else None), err_msg=key)
    assert params.cfg["gridsize"] == 2 and params.cfg["nphotons"] == 1e7
    assert "learning_rate" not in params.cfg and "accelerator" not in params.cfg


def test_training_payload_carries_gradient_clipping_to_params_cfg_and_the_execution_config(sim_npz, tmp_path):
    """The clipping fields belong to both configs (found by the conformance gate's config stage, where the
    factory dropped them from params.cfg while the dataclass path kept them)."""
    payload = create_training_payload(sim_npz, tmp_path, {"n_groups": 4, "gradient_clip_val": 0.5,
                                                          "gradient_clip_algorithm": "value"})
    assert (params.cfg["gradient_clip_val"], params.cfg["gradient_clip_algorithm"]) == (0.5, "value")
    assert (payload.tf_training_config.gradient_clip_val, payload.execution_config.gradient_clip_val) == (0.5, 0.5)
    assert payload.execution_config.gradient_clip_algorithm == "value"


def test_training_payload_validation(sim_npz, tmp_path):
    with pytest.raises(FileNotFoundError):
        create_training_payload(tmp_path / "none.npz", tmp_path, {"n_groups": 1})
    with pytest.raises(ValueError, match="n_groups"):
        create_training_payload(sim_npz, tmp_path, {})
    with pytest.raises(ValueError, match="unknown override 'gridsze'"):
        create_training_payload(sim_npz, tmp_path, {"n_groups": 1, "gridsze": 2})
    with pytest.raises(ConfigError, match="nphotons"):
        create_training_payload(sim_npz, tmp_path, {"n_groups": 1, "nphotons": -1.0})
    assert infer_probe_size(sim_npz) == 32


def test_inference_payload_takes_the_architecture_from_the_bundle(trained_gs2, sim_npz, tmp_path):
    out, _results, _ = trained_gs2
    payload = create_inference_payload(out, sim_npz, tmp_path, {"n_groups": 5},
                                       PyTorchExecutionConfig(inference_batch_size=3))
    ic = payload.tf_inference_config
    assert (ic.model.N, ic.model.gridsize, ic.n_groups, ic.backend) == (32, 2, 5, "pytorch")
    assert payload.execution_config.inference_batch_size == 3
    assert params.cfg["gridsize"] == 2 and params.cfg["model_path"] == str(out)
    with pytest.raises(ValueError, match="gridsize"):
        create_inference_payload(out, sim_npz, tmp_path, {"gridsize": 1})
    with pytest.raises(FileNotFoundError, match="wts.h5.zip"):
        create_inference_payload(tmp_path, sim_npz, tmp_path)


def test_inference_payload_groups_with_the_bundles_neighbour_count(trained_gs2, sim_npz, tmp_path, monkeypatch):
    """InferenceConfig's default K = 4 cannot form a gridsize-3 group (8 neighbours); the training K can."""
    from ptycho_torch import config_factory

    out, _results, _snapshot = trained_gs2
    real = config_factory.read_bundle

    def trained_with_k9(*args, **kwargs):  # as if the bundle had been trained with neighbor_count=9
        bundle = real(*args, **kwargs)
        bundle.params["neighbor_count"] = 9
        return bundle

    monkeypatch.setattr(config_factory, "read_bundle", trained_with_k9)
    payload = create_inference_payload(out, sim_npz, tmp_path)
    assert payload.tf_inference_config.neighbor_count == 9 == params.cfg["neighbor_count"]
    payload = create_inference_payload(out, sim_npz, tmp_path, {"neighbor_count": 5})
    assert payload.tf_inference_config.neighbor_count == 5  # an explicit override still wins


def test_inference_payload_refuses_a_tensorflow_bundle(sim_npz, tmp_path, trained_gs2):
    import json
    import zipfile

    from ptycho.bundle import write_bundle

    out, _results, _ = trained_gs2
    with zipfile.ZipFile(out / "wts.h5.zip") as zf:
        network = json.loads(zf.read("manifest.json"))["network"]
    (tmp_path / "tf").mkdir()
    write_bundle(tmp_path / "tf", backend="tensorflow",
                 model_payloads={m: {"model.keras": b"x"} for m in ("autoencoder", "diffraction_to_obj")},
                 params_snapshot={}, canonical_weights=b"x", network=network,
                 physics={"canvas_size": 42, "probe_mask": False, "gaussian_smoothing_sigma": 0.0},
                 intensity_scale=1.0, framework={})
    with pytest.raises(BundleBackendMismatchError):
        create_inference_payload(tmp_path / "tf", sim_npz, tmp_path)
    assert np.isfinite(1.0)

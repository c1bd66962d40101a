"""The backend dispatcher: config first, lazy imports, clear errors, ``results['backend']``."""

from __future__ import annotations

import types

import pytest

from ptycho import params
from ptycho.config.config import InferenceConfig, ModelConfig, PyTorchExecutionConfig, TrainingConfig
from ptycho.errors import BackendUnavailableError
from ptycho.workflows import backend_selector as bs


class _Recorder:
    """A fake backend workflow module that records what it was called with and the params it saw."""

    def __init__(self):
        self.calls = []

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs, dict(params.cfg)))

    def run_cdi_example(self, *args, **kwargs):
        self._record("run_cdi_example", *args, **kwargs)
        return "amp", "phase", {}

    def run_cdi_example_torch(self, *args, **kwargs):
        self._record("run_cdi_example_torch", *args, **kwargs)
        return None, None, {}

    def train_cdi_model(self, *args, **kwargs):
        self._record("train_cdi_model", *args, **kwargs)
        return {}

    def train_cdi_model_torch(self, *args, **kwargs):
        self._record("train_cdi_model_torch", *args, **kwargs)
        return {}

    def load_inference_bundle(self, path):
        self._record("load_inference_bundle", path)
        return "tf-model", {"N": 64}

    def load_inference_bundle_torch(self, path, model_name="diffraction_to_obj"):
        self._record("load_inference_bundle_torch", path, model_name=model_name)
        return {"diffraction_to_obj": "torch-d2o", "autoencoder": "torch-ae"}, {"N": 64}


@pytest.fixture
def fake(monkeypatch):
    rec = _Recorder()
    modules = {"ptycho_tf.workflows.components": rec, "ptycho_torch.workflows.components": rec}
    monkeypatch.setattr(bs.importlib, "import_module", lambda name: modules[name])
    return rec


@pytest.mark.parametrize("backend,entry", [("tensorflow", "run_cdi_example"), ("pytorch", "run_cdi_example_torch")])
def test_run_writes_the_config_first_dispatches_and_tags_the_backend(fake, backend, entry):
    config = TrainingConfig(model=ModelConfig(N=128, gridsize=2), nepochs=3, backend=backend)
    params.cfg["N"] = 64
    amp, phase, results = bs.run_cdi_example_with_backend("train", "test", config, M=12, do_stitching=True)
    name, args, kwargs, cfg_seen = fake.calls[-1]
    assert name == entry and args[:3] == ("train", "test", config)
    assert cfg_seen["N"] == 128 and cfg_seen["gridsize"] == 2 and cfg_seen["nepochs"] == 3
    assert results["backend"] == backend
    if backend == "pytorch":
        assert isinstance(kwargs["execution_config"], PyTorchExecutionConfig)
        assert args[6:8] == (12, True)
    else:
        assert (amp, phase) == ("amp", "phase") and args[6:8] == (12, True)


def test_train_dispatch(fake):
    results = bs.train_cdi_model_with_backend("a", None, TrainingConfig(model=ModelConfig(), backend="pytorch"))
    assert fake.calls[-1][0] == "train_cdi_model_torch" and results["backend"] == "pytorch"


def test_load_dispatch(fake, tmp_path):
    config = InferenceConfig(model=ModelConfig(N=0, gridsize=2), model_path=tmp_path, test_data_file=tmp_path / "t")
    model, cfg = bs.load_inference_bundle_with_backend(tmp_path, config)
    assert model == "tf-model" and fake.calls[-1][3]["gridsize"] == 2
    config.backend = "pytorch"
    model, cfg = bs.load_inference_bundle_with_backend(tmp_path, config, model_name="autoencoder")
    assert model == "torch-ae" and cfg == {"N": 64}


def test_unknown_backend_is_a_value_error(fake):
    config = TrainingConfig(model=ModelConfig())
    config.backend = "jax"
    with pytest.raises(ValueError, match="backend"):
        bs.run_cdi_example_with_backend(None, None, config)
    with pytest.raises(ValueError, match="jax"):
        bs.backend_module("jax")


def test_missing_framework_is_a_runtime_error_naming_it_and_the_install_command(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(bs.importlib, "import_module", missing)
    with pytest.raises(RuntimeError, match=r"torch.*pip install 'ptychopinn\[torch\]'") as info:
        bs.run_cdi_example_with_backend(None, None, TrainingConfig(model=ModelConfig(), backend="pytorch"))
    assert isinstance(info.value, BackendUnavailableError)


def test_missing_backend_package_is_a_runtime_error(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError("No module named 'ptycho_torch'", name="ptycho_torch")

    monkeypatch.setattr(bs.importlib, "import_module", missing)
    with pytest.raises(BackendUnavailableError, match="ptycho_torch"):
        bs.backend_module("pytorch")


def test_the_real_tensorflow_module_is_importable():
    module = bs.backend_module("tensorflow")
    assert isinstance(module, types.ModuleType) and hasattr(module, "run_cdi_example")

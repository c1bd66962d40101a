"""wts.h5.zip save/load for the PyTorch backend (ptycho_torch.model_manager)."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from ptycho import params
from ptycho.bundle import PHYSICS_MANIFEST_KEYS, write_bundle
from ptycho.errors import BundleBackendMismatchError, BundleFormatError
from ptycho_torch.canonical import export_canonical
from ptycho_torch.model import DiffractionToObj, PtychoPINN
from ptycho_torch.model_manager import (
    configs_from_params,
    create_torch_model_with_gridsize,
    load_torch_bundle,
    save_torch_bundle,
)

pytestmark = pytest.mark.torch


def _inputs(model: PtychoPINN, B: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    spec = model.spec
    x = torch.tensor(rng.random((B, spec.C, spec.N, spec.N)).astype(np.float32) * 30)
    pos = torch.tensor(rng.uniform(-2, 2, (B, spec.C, 1, 2)).astype(np.float32))
    return x, pos


def _rewrite(src, dst, edit):
    """Copy bundle ``src`` to ``dst`` after ``edit(members: dict[str, bytes])``, fixing the manifest checksums."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    edit(members)
    manifest = json.loads(members["manifest.json"])
    import hashlib

    for name in list(manifest["members"]):
        data = members[name]
        manifest["members"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


class TestLoadTorchBundle:
    def test_reconstructs_models_from_bundle(self, trained_gs2):
        out, results, trained_params = trained_gs2
        params.cfg.clear()
        params.cfg.update({"N": 64, "gridsize": 1})  # stale values a fresh process might hold
        models, config = load_torch_bundle(out)
        assert set(models) == {"diffraction_to_obj", "autoencoder"}
        auto, d2o = models["autoencoder"], models["diffraction_to_obj"]
        assert isinstance(auto, PtychoPINN) and isinstance(d2o, DiffractionToObj)
        assert d2o.autoencoder is auto
        # the hydrated config and params.cfg (CONFIG-001) are the training-time ones
        assert config["N"] == 32 and config["gridsize"] == 2 and config["backend"] == "tensorflow"
        for key in ("N", "gridsize", "n_filters_scale", "nphotons", "intensity_scale", "object.big"):
            assert params.cfg[key] == trained_params[key], key
        np.testing.assert_array_equal(params.cfg["probe"], trained_params["probe"])
        # C = gridsize**2 channels and the trained weights, exactly
        assert auto.cnn.encoder.block0.conv0.in_channels == 4
        trained = export_canonical(results["models"]["autoencoder"])
        for name, value in export_canonical(auto).items():
            np.testing.assert_array_equal(value, trained[name], err_msg=name)
        x, pos = _inputs(auto)
        auto.use_channels_last(True)  # as the trained model (CPU default): identical arithmetic, identical bits
        with torch.no_grad():
            a = d2o(x, pos)
            b = results["models"]["diffraction_to_obj"](x, pos)
        assert a.shape == (3, 1, 32, 32) and a.dtype == torch.complex64
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_lightning_checkpoint_reloads_without_arguments(self, trained_gs2, tmp_path):
        from ptycho_torch.training import PtychoPINN_Lightning

        out, results, _ = trained_gs2
        with zipfile.ZipFile(out / "wts.h5.zip") as zf:
            ckpt = zf.read("autoencoder/lightning.ckpt")
        state = torch.load(io.BytesIO(ckpt), weights_only=True)
        assert state["hyper_parameters"]["model_config"]["gridsize"] == 2
        assert state["global_step"] > 0 and "optimizer_states" not in state
        path = tmp_path / "lightning.ckpt"
        path.write_bytes(ckpt)
        module = PtychoPINN_Lightning.load_from_checkpoint(path, weights_only=True)
        trained = export_canonical(results["models"]["autoencoder"])
        for name, value in export_canonical(module.model).items():
            np.testing.assert_array_equal(value, trained[name], err_msg=name)

    def test_tensorflow_bundle_is_refused_naming_both_backends(self, trained_gs2, tmp_path):
        out, _, _ = trained_gs2
        with zipfile.ZipFile(out / "wts.h5.zip") as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
        manifest = json.loads(members["manifest.json"])
        write_bundle(
            tmp_path,
            backend="tensorflow",
            model_payloads={"autoencoder": {"model.keras": b"k"}, "diffraction_to_obj": {"model.keras": b"k"}},
            params_snapshot={"N": 32},
            canonical_weights=members["canonical_weights.h5"],
            network=manifest["network"],
            physics={k: manifest[k] for k in PHYSICS_MANIFEST_KEYS},
            intensity_scale=1.0,
            framework={"tensorflow": "x"},
        )
        with pytest.raises(BundleBackendMismatchError) as err:
            load_torch_bundle(tmp_path)
        assert "tensorflow" in str(err.value) and "pytorch" in str(err.value)

    def test_mismatched_state_dict_raises_instead_of_loading_random_weights(self, trained_gs2, tmp_path):
        out, _, _ = trained_gs2
        spare = create_torch_model_with_gridsize(1, 32, {"n_filters_scale": 1})  # 1 channel: wrong shapes
        buf = io.BytesIO()
        torch.save(spare.state_dict(), buf)
        _rewrite(out / "wts.h5.zip", tmp_path / "wts.h5.zip",
                 lambda m: m.update({"autoencoder/model.pt": buf.getvalue()}))
        with pytest.raises(BundleFormatError, match="autoencoder/model.pt"):
            load_torch_bundle(tmp_path)

    def test_state_dict_that_disagrees_with_canonical_weights_is_refused(self, trained_gs2, tmp_path):
        out, results, _ = trained_gs2
        model = results["models"]["autoencoder"]
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["log_scale"] += 1.0
        buf = io.BytesIO()
        torch.save(state, buf)
        d2o_state = {f"autoencoder.{k}": v for k, v in state.items()}
        buf2 = io.BytesIO()
        torch.save(d2o_state, buf2)
        _rewrite(out / "wts.h5.zip", tmp_path / "wts.h5.zip",
                 lambda m: m.update({"autoencoder/model.pt": buf.getvalue(),
                                     "diffraction_to_obj/model.pt": buf2.getvalue()}))
        with pytest.raises(BundleFormatError, match="canonical_weights.h5"):
            load_torch_bundle(tmp_path)

    @pytest.mark.filterwarnings("ignore:Detected pickle protocol")
    def test_pickled_code_in_state_dict_is_refused(self, trained_gs2, tmp_path):
        out, _, _ = trained_gs2
        import pickle

        payload = pickle.dumps({"x": print})  # weights_only=True refuses globals such as builtins.print
        _rewrite(out / "wts.h5.zip", tmp_path / "wts.h5.zip", lambda m: m.update({"autoencoder/model.pt": payload}))
        with pytest.raises(BundleFormatError, match="not a loadable state dict|not a zip archive"):
            load_torch_bundle(tmp_path)

    def test_missing_bundle(self, tmp_path):
        with pytest.raises(FileNotFoundError):
            load_torch_bundle(tmp_path)


class TestSaveTorchBundle:
    def test_outer_layout_and_manifest(self, trained_gs2):
        out, _, _ = trained_gs2
        with zipfile.ZipFile(out / "wts.h5.zip") as zf:
            names = set(zf.namelist())
            manifest = json.loads(zf.read("manifest.json"))
        assert names == {
            "manifest.json", "manifest.dill", "params.json", "canonical_weights.h5",
            "autoencoder/model.pt", "autoencoder/lightning.ckpt", "diffraction_to_obj/model.pt",
        }
        assert manifest["backend"] == "pytorch" and manifest["version"] == "2.0"
        assert manifest["models"] == ["autoencoder", "diffraction_to_obj"]
        assert manifest["network"]["gridsize"] == 2 and manifest["network"]["N"] == 32
        assert "torch" in manifest["framework"] and "lightning" in manifest["framework"]

    def test_save_model_without_lightning_and_reload(self, tmp_path):
        model = create_torch_model_with_gridsize(1, 32, {"n_filters_scale": 1, "intensity_scale": 3.0})
        assert float(model.log_scale.detach()) == pytest.approx(np.log(3.0))
        params.cfg["intensity_scale"] = 3.0
        path = save_torch_bundle({"autoencoder": model}, tmp_path / "run")
        assert path == tmp_path / "run" / "wts.h5.zip"
        with zipfile.ZipFile(path) as zf:
            assert "autoencoder/lightning.ckpt" not in zf.namelist()
        models, config = load_torch_bundle(path)
        assert config["intensity_scale"] == 3.0
        x, pos = _inputs(model)
        with torch.no_grad():
            torch.testing.assert_close(models["diffraction_to_obj"](x, pos), model.diffraction_to_obj(x, pos))

    def test_rejects_non_models(self, tmp_path):
        with pytest.raises(TypeError, match="autoencoder"):
            save_torch_bundle({"autoencoder": {"_sentinel": "autoencoder"}}, tmp_path)


def test_create_torch_model_with_gridsize_sets_channels_from_gridsize():
    model = create_torch_model_with_gridsize(2, 32, {"n_filters_scale": 1, "object.big": True})
    assert model.spec.C == 4 and model.spec.Co == 4
    assert model.cnn.encoder.block0.conv0.in_channels == 4
    assert model.cnn.decoder_amp.head.center.out_channels == 4


def test_configs_from_params_inverts_the_legacy_mapping():
    from ptycho.config.config import ModelConfig, TrainingConfig, dataclass_to_legacy_dict

    tc = TrainingConfig(model=ModelConfig(N=128, gridsize=2, object_big=False, probe_mask=True), nphotons=1e7,
                        probe_trainable=True, n_groups=77)
    model, training = configs_from_params(dataclass_to_legacy_dict(tc))
    assert model == tc.model
    assert training.nphotons == 1e7 and training.probe_trainable and training.n_groups == 77

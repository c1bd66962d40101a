"""ptycho_torch.workflows.components: Lightning training, prediction, stitching, params.cfg discipline."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch

from ptycho import params
from ptycho.config.config import update_legacy_dict
from ptycho.errors import DataContractError
from ptycho.probe import set_probe_guess
from ptycho.training_plan import batches, epoch_order, split_train_val
from ptycho.workflows import common
from ptycho_torch.canonical import export_canonical
from ptycho_torch.data import build_training_loaders
from ptycho_torch.workflows import components

pytestmark = pytest.mark.torch


class TestWorkflowsComponentsTraining:
    def test_lightning_training_respects_gridsize(self, trained_gs2):
        _out, results, _ = trained_gs2
        module = results["lightning_module"]
        first = module.model.cnn.encoder.block0.conv0
        assert first.in_channels == 4 == module.model.spec.C
        assert module.model.cnn.decoder_amp.head.center.out_channels == 4  # object_big: one patch per channel
        n_train = len(split_train_val(len(results["train_container"]))[0])
        assert results["trainer"].global_step == -(-n_train // 8)  # every batch of the epoch was a step
        assert results["train_container"].X.shape[-1] == 4
        assert len(results["history"]["train_loss"]) == 1 and np.isfinite(results["history"]["train_loss"][0])

    def test_results_structure(self, trained_gs2):
        out, results, _ = trained_gs2
        assert results["backend"] == "pytorch"
        assert set(results["models"]) == {"autoencoder", "diffraction_to_obj"}
        hist = results["history"]
        assert {"train_loss", "val_loss", "poisson_train_loss", "poisson_val_loss", "learning_rate"} <= set(hist)
        assert hist["train_loss"] == hist["poisson_train_loss"] and hist["val_loss"] == hist["poisson_val_loss"]
        assert results["bundle_path"] == out / "wts.h5.zip" and results["bundle_path"].is_file()
        assert results["test_container"] is not None

    def test_one_step_of_gridsize_2_matches_the_training_plan_batches(self, sim_raw, tmp_path, make_config):
        config = make_config(tmp_path, gridsize=2, n_groups=24, batch_size=8)
        container = common.create_ptycho_data_container(sim_raw, config)
        train, val = build_training_loaders(container, gridsize=2, batch_size=8, intensity_scale=2.0, seed=5)
        train_idx, val_idx = split_train_val(len(container))
        for epoch in (0, 1):
            train.sampler.set_epoch(epoch)
            expected = batches(train_idx[epoch_order(len(train_idx), seed=5, epoch=epoch)], 8)
            got = train.sampler.batch_indices()
            assert [list(g) for g in got] == [list(e) for e in expected]
            first = next(iter(train))
            np.testing.assert_array_equal(first[0].numpy(),
                                          2.0 * np.transpose(container.X[expected[0]], (0, 3, 1, 2)))
        assert val is not None and len(val.sampler.indices) == len(val_idx)

    def test_channel_mismatch_cannot_reach_the_model(self, sim_raw, tmp_path, make_config):
        config = make_config(tmp_path, gridsize=1)
        container = common.create_ptycho_data_container(sim_raw, config)
        with pytest.raises(DataContractError, match="gridsize"):
            build_training_loaders(container, gridsize=2, batch_size=8, intensity_scale=1.0, seed=0)

    def test_training_is_deterministic_on_cpu(self, sim_raw, tmp_path, make_config, quiet_exec):
        weights = []
        for i in range(2):
            with params.isolated():
                config = make_config(tmp_path / str(i), gridsize=1, n_groups=24, batch_size=8, subsample_seed=3)
                results = components.train_cdi_model_torch(sim_raw, None, config, quiet_exec(), quiet=True)
            weights.append(export_canonical(results["models"]["autoencoder"]))
            assert results["history"]["train_loss"]
        for name in weights[0]:
            np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)

    def test_params_cfg_is_what_the_tensorflow_path_writes(self, sim_raw, tmp_path, make_config, quiet_exec):
        """Torch defaults never leak: params.cfg after a torch run == update_legacy_dict + intensity scale + probe."""
        config = make_config(tmp_path, gridsize=2, n_groups=16, batch_size=8)
        before = params.snapshot()
        components.train_cdi_model_torch(sim_raw, None, config, quiet_exec(), quiet=True)
        torch_cfg = params.snapshot()
        params.restore(before)
        update_legacy_dict(params.cfg, config)  # what the TensorFlow workflow does, step by step
        container = common.create_ptycho_data_container(sim_raw, config)
        common.set_intensity_scale(config)
        set_probe_guess(None, container.probe)
        expected = params.snapshot()
        assert set(torch_cfg) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(np.asarray(torch_cfg[key], dtype=object if key != "probe" else None),
                                          np.asarray(expected[key], dtype=object if key != "probe" else None),
                                          err_msg=key)
        assert torch_cfg["backend"] == "tensorflow"  # the config's value, not the running backend

    def test_scheduler_mae_mode_and_realspace_loss(self, sim_raw, tmp_path, make_config, quiet_exec):
        config = make_config(tmp_path, gridsize=1, nepochs=2, n_groups=24, batch_size=8, torch_loss_mode="mae",
                              realspace_weight=1.0, realspace_mae_weight=0.5)
        results = components.train_cdi_model_torch(
            sim_raw, None, config, quiet_exec(scheduler="Exponential", learning_rate=2e-3), quiet=True
        )
        hist = results["history"]
        assert hist["learning_rate"] == pytest.approx([2e-3, 2e-3 * 0.95])
        assert "mae_train_loss" in hist and "poisson_train_loss" not in hist
        module = results["lightning_module"]
        assert module.loss_weights.uses_realspace and module.loss_weights.nll_weight == 0.0

    def test_predict_objects_one_object_per_sample_at_any_batch_size(self, trained_gs2):
        _out, results, snapshot = trained_gs2
        container = results["test_container"]
        model = results["models"]["diffraction_to_obj"]
        scale = snapshot["intensity_scale"]
        a = components.predict_objects(model, container, batch_size=1, intensity_scale=scale)
        b = components.predict_objects(model, container, batch_size=7, intensity_scale=scale)
        c = components.predict_objects(results["lightning_module"], container, intensity_scale=scale)
        assert a.shape == (len(container), 32, 32, 1) and a.dtype == np.complex64
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
        assert not np.allclose(a[0], a[1])

    def test_run_with_stitching(self, sim_raw, tmp_path, make_config, quiet_exec):
        config = make_config(tmp_path, gridsize=1, n_groups=16, batch_size=8)
        amp, phase, results = components.run_cdi_example_torch(
            sim_raw, sim_raw, config, do_stitching=True, M=10, execution_config=quiet_exec(), quiet=True,
            save_bundle=False,
        )
        assert amp.ndim == 2 and amp.shape == phase.shape == results["recon_amp"].shape
        assert results["obj_tensor_full"].shape == (16, 32, 32, 1)
        assert results["global_offsets"].shape == (16, 1, 2, 1)
        assert "bundle_path" not in results and not (tmp_path / "wts.h5.zip").exists()


def test_dispatcher_contract_signatures():
    sig = inspect.signature(components.run_cdi_example_torch)
    assert list(sig.parameters)[:9] == ["train_data", "test_data", "config", "flip_x", "flip_y", "transpose", "M",
                                       "do_stitching", "execution_config"]
    assert sig.parameters["M"].default == 20 and sig.parameters["execution_config"].default is None
    assert list(inspect.signature(components.load_inference_bundle_torch).parameters) == ["bundle_dir", "model_name"]
    assert list(inspect.signature(components.predict_objects).parameters)[:3] == ["model", "container", "batch_size"]


def test_load_inference_bundle_torch(trained_gs2):
    out, _results, _ = trained_gs2
    models, cfg = components.load_inference_bundle_torch(out)
    assert set(models) == {"autoencoder", "diffraction_to_obj"} and cfg["gridsize"] == 2
    assert copy.deepcopy(cfg)["N"] == 32
    assert all(not p.requires_grad or isinstance(p, torch.nn.Parameter) for p in models["autoencoder"].parameters())

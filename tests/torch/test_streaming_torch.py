"""PyTorch training on streamed data (patterns read from disk per batch) == training on the in-memory container."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import params
from ptycho.streaming import open_streaming
from ptycho_torch.canonical import export_canonical
from ptycho_torch.data import StreamingGroupedTensors, build_training_loaders
from ptycho_torch.workflows import components

pytestmark = pytest.mark.torch


@pytest.mark.slow
def test_streamed_training_matches_in_memory_training(sim_npz, sim_raw, tmp_path, make_config, quiet_exec):
    runs = {}
    for name in ("memory", "stream"):
        with params.isolated():
            config = make_config(tmp_path / name, n_groups=24, batch_size=8, subsample_seed=3)
            data = sim_raw
            if name == "stream":
                data = open_streaming(sim_npz).group(N=32, gridsize=1, K=config.neighbor_count, nsamples=24, seed=3)
            results = components.train_cdi_model_torch(data, None, config, quiet_exec(), quiet=True)
        runs[name] = (results["history"]["train_loss"], export_canonical(results["models"]["autoencoder"]))
        if name == "stream":
            loader, _ = build_training_loaders(data, gridsize=1, batch_size=8, intensity_scale=1.0, seed=3)
            assert isinstance(loader.dataset, StreamingGroupedTensors)
    np.testing.assert_allclose(runs["stream"][0], runs["memory"][0], rtol=1e-5)
    for key, w in runs["memory"][1].items():
        assert np.max(np.abs(runs["stream"][1][key] - w)) < 1e-4, key


def test_streamed_inference_matches_in_memory_inference(sim_npz, sim_raw):
    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho.workflows.common import create_ptycho_data_container
    from ptycho_torch.training import PtychoPINN_Lightning

    mc = ModelConfig(N=32, gridsize=1, n_filters_scale=1)
    config = TrainingConfig(model=mc, n_groups=24, subsample_seed=3)
    with params.isolated():
        model = PtychoPINN_Lightning(mc, config).model
        memory = create_ptycho_data_container(sim_raw, config, seed=3)
        stream = open_streaming(sim_npz).group(N=32, gridsize=1, K=config.neighbor_count, nsamples=24, seed=3)
        got = components.predict_objects(model, stream, batch_size=5, intensity_scale=3.0, device="cpu")
        want = components.predict_objects(model, memory, batch_size=5, intensity_scale=3.0, device="cpu")
    assert got.shape == want.shape == (24, 32, 32, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_training_cli_streams_the_training_file(sim_npz, tmp_path):
    from ptycho_torch import train as torch_cli

    out = tmp_path / "run"
    with params.isolated():
        rc = torch_cli.main(["--train_data_file", str(sim_npz), "--output_dir", str(out), "--n_groups", "24",
                             "--batch_size", "8", "--nepochs", "1", "--accelerator", "cpu", "--logger", "none",
                             "--disable_checkpointing", "--quiet", "--stream"])
    assert rc == 0 and (out / "wts.h5.zip").is_file() and (out / "history.csv").is_file()

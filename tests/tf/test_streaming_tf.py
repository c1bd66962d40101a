"""TensorFlow training on streamed data (each batch read from disk) == training on the in-memory container."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import params
from ptycho.config.config import ModelConfig, TrainingConfig
from ptycho.network_spec import network_spec_from_config
from ptycho.raw_data import RawData
from ptycho.simulate import simulate_dataset
from ptycho.streaming import open_streaming
from ptycho_tf.canonical import get_canonical_weights
from ptycho_tf.workflows.components import train_cdi_model


@pytest.mark.slow
def test_streamed_training_matches_in_memory_training(tmp_path):
    path = tmp_path / "scan.npz"
    simulate_dataset(N=32, n_positions=40, nphotons=1e6, seed=4).to_file(path)
    runs = {}
    for name in ("memory", "stream"):
        config = TrainingConfig(model=ModelConfig(N=32, gridsize=1, n_filters_scale=1), n_groups=24, batch_size=8,
                                nepochs=1, nphotons=1e6, subsample_seed=3, output_dir=tmp_path / name)
        data = RawData.from_file(path)
        if name == "stream":
            data = open_streaming(path).group(N=32, gridsize=1, K=config.neighbor_count, nsamples=24, seed=3)
        with params.isolated():
            results = train_cdi_model(data, None, config, quiet=True)
        spec = network_spec_from_config(config.model)
        runs[name] = (results["history"]["train_loss"], get_canonical_weights(results["models"]["autoencoder"], spec))
    np.testing.assert_allclose(runs["stream"][0], runs["memory"][0], rtol=1e-5)
    for key, w in runs["memory"][1].items():
        assert np.max(np.abs(runs["stream"][1][key] - w)) < 1e-4, key


@pytest.mark.slow
def test_ptycho_train_stream_flag_matches_the_in_memory_run(tmp_path):
    """``ptycho_train --stream`` (patterns read per batch from the uncompressed NPZ) trains what the in-memory
    command trains, and writes the same outputs; --stream without a training file is refused (exit 2)."""
    import csv

    from ptycho.cli import train as cli_train

    path = tmp_path / "scan.npz"
    simulate_dataset(N=32, n_positions=40, nphotons=1e6, seed=4).to_file(path)
    losses = {}
    for name, extra in (("memory", []), ("stream", ["--stream"])):
        out = tmp_path / name
        with params.isolated():
            rc = cli_train.main(["--train_data_file", str(path), "--output_dir", str(out), "--n_groups", "24",
                                 "--batch_size", "8", "--nepochs", "2", "--n_filters_scale", "1", "--nphotons", "1e6",
                                 "--seed", "3", "--logger", "none", "--quiet", *extra])
        assert rc == 0 and (out / "wts.h5.zip").is_file()
        with open(out / "history.csv") as f:
            losses[name] = [float(row["train_loss"]) for row in csv.DictReader(f)]
    np.testing.assert_allclose(losses["stream"], losses["memory"], rtol=1e-5)
    assert cli_train.main(["--simulate", "--stream", "--output_dir", str(tmp_path / "no")]) == 2

"""Resume and Keras callbacks of the TF training loop (ptycho_tf.training).

2 epochs, then ``resume=True`` up to 4, equals 4 epochs in one go (history, weights, learning
rates; the gate's tolerances); the loop drives standard Keras callbacks; the workflow leaves
NumPy's global RNG alone.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import keras
import numpy as np
import pytest

from ptycho import params
from ptycho.config.config import ModelConfig, TrainingConfig
from ptycho.errors import ConfigError
from ptycho.simulate import simulate_dataset
from ptycho_tf.training import CHECKPOINT_FILE
from ptycho_tf.workflows.components import train_cdi_model


@pytest.fixture(scope="module")
def raw():
    return simulate_dataset(N=32, n_positions=40, nphotons=1e6, seed=5)


def _config(out, nepochs: int, **kw) -> TrainingConfig:
    return TrainingConfig(model=ModelConfig(N=32, gridsize=1, n_filters_scale=1), nepochs=nepochs, n_groups=32,
                          batch_size=8, nphotons=1e6, output_dir=out, **kw)


def _train(raw, config, **kw):
    with params.isolated():
        results = train_cdi_model(raw, None, config, quiet=True, **kw)
    return results["history"], results["model_instance"].get_weights()


@pytest.mark.slow  # three short trainings: ~20 s on an idle 2-core CPU
@pytest.mark.parametrize("scheduler", ["Default", "Exponential"])
def test_two_epochs_plus_resume_two_equals_four(raw, tmp_path, resume_asserts, scheduler):
    # Exponential: the rate depends on the restored epoch counter (the schedule's running state is
    # checked by tests/test_training_plan.py::test_schedule_state_round_trips)
    kw = {"scheduler": scheduler}
    full_h, full_w = _train(raw, _config(tmp_path / "full", 4, **kw))
    _train(raw, _config(tmp_path / "split", 2, **kw), checkpoint=True)
    assert (tmp_path / "split" / CHECKPOINT_FILE).is_file()
    res_h, res_w = _train(raw, _config(tmp_path / "split", 4, **kw), resume=True, logger="csv")
    resume_asserts.history(res_h, full_h, ["train_loss", "val_loss", "poisson_nll", "lr"])
    resume_asserts.weights(res_w, full_w)
    if scheduler == "Exponential":
        assert len(set(full_h["lr"])) == 4
    # the CSV logger appended the resumed epochs to the same file
    lines = (tmp_path / "split" / "logs" / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["2", "3"]


def test_resume_without_a_checkpoint_names_the_fix(raw, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        _train(raw, _config(tmp_path, 1), resume=True)


def test_resume_with_another_architecture_is_refused(raw, tmp_path):
    _train(raw, _config(tmp_path, 1), checkpoint=True)
    other = _config(tmp_path, 2)
    other.model = dataclasses.replace(other.model, n_filters_scale=2)
    with pytest.raises(ValueError, match="do not match this model"):
        _train(raw, other, resume=True)


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, object]] = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", None))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", (epoch, sorted(logs))))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", None))


def test_loop_drives_keras_callbacks_and_early_stopping(raw, tmp_path):
    rec = _Recorder()
    # patience 0 with min_delta huge: EarlyStopping stops after the second epoch (no "improvement")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=1e9)
    history, _ = _train(raw, _config(tmp_path, 5), callbacks=[rec, stop])
    assert len(history["train_loss"]) == 2
    kinds = [c[0] for c in rec.calls]
    assert kinds[0] == "train_begin" and kinds[-1] == "train_end" and kinds.count("epoch_end") == 2
    epoch, keys = next(c[1] for c in rec.calls if c[0] == "epoch_end")
    assert epoch == 0 and {"loss", "val_loss", "lr", "poisson_nll"} <= set(keys)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_logger_writes_event_files(raw, tmp_path):
    _train(raw, _config(tmp_path, 1), logger="tensorboard")
    assert list((tmp_path / "logs" / "tensorboard").rglob("events.out.tfevents.*"))


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mlflow", "sqlalchemy", "alembic")),
                    reason="mlflow, sqlalchemy or alembic is not installed (pip install '.[mlflow]')")
def test_mlflow_logger_tracks_into_sqlite(raw, tmp_path):
    import mlflow

    _train(raw, _config(tmp_path, 2), logger="mlflow")
    client = mlflow.MlflowClient(tracking_uri="sqlite:///" + str((tmp_path / "mlflow.db").resolve()))
    run = client.search_runs([client.get_experiment_by_name("ptychopinn").experiment_id])[0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]


def test_unknown_logger_is_a_config_error(raw, tmp_path):
    with pytest.raises(ConfigError, match="logger='wandb'"):
        _train(raw, _config(tmp_path, 1), logger="wandb")


def test_gradient_clipping_is_refused_by_the_tf_backend(raw, tmp_path):
    with pytest.raises(ConfigError, match="gradient_clip_val"):
        _train(raw, _config(tmp_path, 1, gradient_clip_val=1.0))


def test_training_leaves_numpy_global_rng_untouched(raw, tmp_path):
    np.random.seed(12345)
    before = np.random.get_state()
    expected = np.random.random(3)
    np.random.set_state(before)
    _train(raw, _config(tmp_path, 1))
    np.testing.assert_array_equal(np.random.random(3), expected)

"""Resume of the PyTorch backend: 2 epochs, then ``resume=True`` up to 4, equals 4 epochs in one go.

Lightning restores weights, optimizer state and the epoch counter from ``checkpoints/last.ckpt``;
the module's ``on_save/load_checkpoint`` carry the history and the learning-rate schedule state.
Tolerances are the gate's (``resume_asserts`` in tests/conftest.py).
"""

from __future__ import annotations

import importlib.util

import pytest

from ptycho import params
from ptycho_torch.workflows.components import RESUME_CHECKPOINT, train_cdi_model_torch


def _train(raw, config, execution, **kw):
    with params.isolated():
        results = train_cdi_model_torch(raw, None, config, execution, quiet=True, **kw)
    model = results["models"]["autoencoder"]
    return results["history"], [p.detach().cpu().numpy().copy() for p in model.state_dict().values()]


@pytest.mark.slow  # three short trainings: ~20 s on an idle 2-core CPU
@pytest.mark.parametrize("scheduler", ["Default", "Exponential"])
def test_two_epochs_plus_resume_two_equals_four(sim_raw, tmp_path, make_config, quiet_exec, resume_asserts,
                                                 scheduler):
    # Exponential: the rate depends on the restored epoch counter (the schedule's running state is
    # checked by tests/test_training_plan.py::test_schedule_state_round_trips)
    kw = {"scheduler": scheduler, "n_groups": 32}
    execution = quiet_exec(enable_checkpointing=True)
    full_h, full_w = _train(sim_raw, make_config(tmp_path / "full", nepochs=4, **kw), execution)
    _train(sim_raw, make_config(tmp_path / "split", nepochs=2, **kw), execution)
    assert (tmp_path / "split" / RESUME_CHECKPOINT).is_file()
    res_h, res_w = _train(sim_raw, make_config(tmp_path / "split", nepochs=4, **kw), execution, resume=True)
    resume_asserts.history(res_h, full_h, ["train_loss", "val_loss", "learning_rate"])
    resume_asserts.weights(res_w, full_w)
    if scheduler == "Exponential":
        assert len(set(full_h["learning_rate"])) == 4


def test_resume_without_a_checkpoint_names_the_fix(sim_raw, tmp_path, make_config, quiet_exec):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        _train(sim_raw, make_config(tmp_path, nepochs=1), quiet_exec(), resume=True)


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mlflow", "sqlalchemy", "alembic")),
                    reason="mlflow, sqlalchemy or alembic is not installed (pip install '.[mlflow]')")
def test_mlflow_logger_tracks_into_sqlite(sim_raw, tmp_path, make_config, quiet_exec):
    import mlflow

    _train(sim_raw, make_config(tmp_path, nepochs=2), quiet_exec(logger_backend="mlflow"))
    client = mlflow.MlflowClient(tracking_uri="sqlite:///" + str((tmp_path / "mlflow.db").resolve()))
    runs = client.search_runs([client.get_experiment_by_name("ptychopinn").experiment_id])
    assert runs and client.get_metric_history(runs[0].info.run_id, "train_loss")

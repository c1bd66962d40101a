"""Batch order, validation split and learning-rate schedules shared by both backends."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.training_plan import LearningRateSchedule, batches, epoch_order, split_train_val


def test_split_holds_out_the_last_five_percent():
    train, val = split_train_val(100)
    np.testing.assert_array_equal(val, np.arange(95, 100))
    np.testing.assert_array_equal(train, np.arange(95))
    train, val = split_train_val(19)
    assert len(val) == 0 and len(train) == 19
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(10, 1.0)


def test_epoch_order_is_a_seeded_permutation_that_changes_per_epoch():
    a0 = epoch_order(50, seed=3, epoch=0)
    np.testing.assert_array_equal(np.sort(a0), np.arange(50))
    np.testing.assert_array_equal(a0, epoch_order(50, seed=3, epoch=0))
    assert not np.array_equal(a0, epoch_order(50, seed=3, epoch=1))
    assert not np.array_equal(a0, epoch_order(50, seed=4, epoch=0))
    np.testing.assert_array_equal(epoch_order(5, seed=0, epoch=0, shuffle=False), np.arange(5))
    state = np.random.get_state()[1].copy()
    epoch_order(10, seed=1, epoch=0)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_batches_cover_the_order_once():
    parts = batches(np.arange(10), 4)
    assert [len(p) for p in parts] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(10))
    with pytest.raises(ValueError, match="batch_size"):
        batches(np.arange(3), 0)


def test_schedules():
    assert LearningRateSchedule(lr=1e-3).lr_for_epoch(7) == 1e-3
    assert LearningRateSchedule("Exponential", lr=1.0).lr_for_epoch(2) == pytest.approx(0.95**2)
    wc = LearningRateSchedule("WarmupCosine", lr=1.0, nepochs=11, warmup_epochs=1, min_ratio=0.1)
    assert wc.lr_for_epoch(0) == pytest.approx(0.5)
    assert wc.lr_for_epoch(1) == pytest.approx(1.0)
    assert wc.lr_for_epoch(10) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="scheduler"):
        LearningRateSchedule("Cyclic")


def test_reduce_on_plateau_halves_after_patience_and_respects_floor():
    s = LearningRateSchedule("ReduceLROnPlateau", lr=1e-3, plateau_patience=2, plateau_min_lr=3e-4)
    for loss in (1.0, 0.9, 0.95, 0.95):  # two epochs without improvement
        s.record(loss)
    assert s.lr_for_epoch(4) == pytest.approx(5e-4)
    for loss in (0.95, 0.95):
        s.record(loss)
    assert s.lr_for_epoch(6) == pytest.approx(3e-4)


def test_from_config_reads_training_config_fields():
    class Cfg:
        scheduler = "Exponential"
        nepochs = 3
    s = LearningRateSchedule.from_config(Cfg(), lr=2e-3)
    assert s.scheduler == "Exponential" and s.lr == 2e-3 and s.nepochs == 3


def test_schedule_state_round_trips():
    """A resumed ReduceLROnPlateau schedule continues exactly as the uninterrupted one (resume contract)."""
    losses = [1.0, 0.9, 0.95, 0.97, 0.99, 0.5, 0.6, 0.7]
    kw = {"scheduler": "ReduceLROnPlateau", "plateau_patience": 1, "plateau_factor": 0.5, "plateau_min_lr": 1e-6}
    full = LearningRateSchedule(**kw)
    full_lrs = []
    for epoch, loss in enumerate(losses):
        full_lrs.append(full.lr_for_epoch(epoch))
        full.record(loss)
    first = LearningRateSchedule(**kw)
    lrs = []
    for epoch, loss in enumerate(losses[:4]):
        lrs.append(first.lr_for_epoch(epoch))
        first.record(loss)
    resumed = LearningRateSchedule(**kw)
    resumed.load_state_dict(first.state_dict())
    for epoch, loss in enumerate(losses[4:], start=4):
        lrs.append(resumed.lr_for_epoch(epoch))
        resumed.record(loss)
    assert lrs == full_lrs and len(set(full_lrs)) > 2  # the rate was cut more than once
    assert resumed.state_dict() == full.state_dict()


@pytest.mark.parametrize("bad", [{}, {"history": [], "current": None, "best": None, "bad_epochs": -1},
                                 {"history": ["x"], "current": None, "best": None, "bad_epochs": 0}])
def test_malformed_schedule_state_is_refused(bad):
    with pytest.raises(ValueError, match="malformed learning-rate schedule state"):
        LearningRateSchedule().load_state_dict(bad)

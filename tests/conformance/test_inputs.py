"""Scenario inputs: byte-deterministic, what the backends need, in the documented layouts."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.inputs import (
    INPUTS_NAME,
    OP_SIGNATURES,
    SCENARIO_NAME,
    read_inputs,
    write_inputs,
)
from conformance.scenarios import FULL, OFF_CENTRE_SHIFT, make_scenario
from ptycho import conventions
from ptycho.canonical_weights import validate_canonical_weights
from ptycho.network_spec import network_spec_from_config
from ptycho.reference import physics as ref

SMALL = make_scenario("small_offcentre", gridsize=2, batch=2, stages=FULL, offsets="off_centre", seed=3,
                      model={"probe_mask": True, "gaussian_smoothing_sigma": 0.5})


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return read_inputs(write_inputs(SMALL, tmp_path_factory.mktemp("inputs") / SMALL.id))


def test_inputs_are_byte_identical_when_written_twice(tmp_path, written):
    again = write_inputs(SMALL, tmp_path / "again")
    for name in (INPUTS_NAME, SCENARIO_NAME):
        assert (again / name).read_bytes() == (written.directory / name).read_bytes(), name


def test_network_inputs_have_the_contract_layouts(written):
    B, N, C = SMALL.batch, SMALL.data.N, SMALL.C
    assert written.scenario == SMALL
    assert written.x_scaled.shape == (B, N, N, C) and written.x_scaled.dtype == np.float32
    assert written.positions.shape == (B, 1, 2, C) and written.positions.dtype == np.float32
    assert written.probe.shape == (N, N) and written.probe.dtype == np.complex64
    assert written.intensity_scale == pytest.approx(conventions.intensity_scale(1e9, N))
    assert len(written.batches) == SMALL.k_steps
    for x, p in written.batches:
        assert x.shape == written.x_scaled.shape and p.shape == written.positions.shape
    assert not np.array_equal(written.batches[0][0], written.x_scaled)  # distinct groups


def test_off_centre_positions_are_group_offsets_plus_the_shift(written):
    pos = written.positions.astype(np.float64)
    # coords_relative sums to zero over the channels of a group, so the mean is the shift
    np.testing.assert_allclose(pos.mean(axis=3)[:, 0, :], np.tile(OFF_CENTRE_SHIFT, (SMALL.batch, 1)), atol=1e-5)
    assert np.abs(pos).max() <= SMALL.data.margin


def test_initial_weights_are_canonical_for_the_scenario_network(written):
    spec = network_spec_from_config(SMALL.model_config())
    w = validate_canonical_weights(written.weights, spec)
    assert float(w["intensity_scale.log_scale"]) == pytest.approx(np.log(written.intensity_scale), rel=1e-6)
    np.testing.assert_array_equal(w["probe.real"], written.probe.real)


def test_every_physics_op_has_inputs_the_reference_accepts(written):
    for op in OP_SIGNATURES:
        args, kwargs = written.op_call(op)
        out = getattr(ref, op)(*args, **kwargs)
        assert out is not None, op
    args, kwargs = written.op_call("illuminate")
    assert kwargs == {"probe_mask": True, "gaussian_smoothing_sigma": 0.5}
    assert written.op_call("reassemble_patches")[0][2] == SMALL.data.P


def test_offsets_beyond_the_canvas_margin_are_refused(tmp_path):
    bad = make_scenario("too_far", gridsize=2, batch=2, offsets="off_centre", shift_xy=(7.0, 0.0))
    with pytest.raises(ValueError, match="canvas margin"):
        write_inputs(bad, tmp_path / bad.id)


def test_e2e_inputs_hold_the_split_scan_and_aligned_truth(tmp_path):
    s = make_scenario("tiny_e2e", batch=2, stages=("configure", "params_cfg", "e2e"),
                      training={"nepochs": 1, "batch_size": 8, "n_groups": 16}, n_positions=24, n_test_positions=12)
    inputs = read_inputs(write_inputs(s, tmp_path / s.id))
    assert inputs.train_file.exists() and inputs.test_file.exists()
    truth, mask = inputs.arrays["e2e/object_truth"], inputs.arrays["e2e/mask"]
    assert truth.dtype == np.complex64 and mask.dtype == bool and truth.shape == mask.shape
    assert mask.any() and np.all(np.abs(truth[mask]) > 0)

"""compare_arrays and the tolerance rules: crafted arrays, edges, NaN/inf, complex, layouts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conformance.tolerances import (
    DTYPE_DEFAULTS,
    STAGE_TOLERANCES,
    StageTolerance,
    compare_arrays,
    dtype_default,
    resolve_tolerance,
    worst_slice,
)

PAIR = "tensorflow~pytorch"


def test_identical_arrays_pass_with_zero_error():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    c = compare_arrays("forward/amp", a, a.copy(), 1.3e-6, 1e-5, pair=PAIR)
    assert c.passed and c.max_abs == 0.0 and c.max_rel == 0.0 and c.n_mismatch == 0 and c.n_total == 24
    assert c.shape == [2, 3, 4] and c.dtype == "float32" and c.nonfinite is None
    assert "within tolerance" in c.message


def test_tolerance_edge_is_inclusive_and_just_beyond_fails():
    b = np.array([1.0, 2.0, 4.0])
    rtol, atol = 1e-3, 1e-4
    at_edge = b + (atol + rtol * np.abs(b)) * (1 - 1e-9)
    assert compare_arrays("t", at_edge, b, rtol, atol).passed
    beyond = b.copy()
    beyond[2] += (atol + rtol * 4.0) * 1.01
    c = compare_arrays("t", beyond, b, rtol, atol, pair=PAIR)
    assert not c.passed and c.n_mismatch == 1 and c.mismatch_locations == [[2]]
    assert c.max_abs == pytest.approx((atol + rtol * 4.0) * 1.01)


def test_failure_message_names_tensor_pair_counts_errors_and_location():
    b = np.zeros((2, 8, 8, 1), np.float32)
    a = b.copy()
    a[1, 3, 5, 0] = 0.5
    a[0, 0, 1, 0] = 0.25
    c = compare_arrays("forward/pred_intensity", a, b, 1.3e-6, 1e-5, pair=PAIR, context="gs1_n32 / forward / ")
    assert not c.passed and c.n_mismatch == 2 and c.n_total == 128
    assert c.mismatch_locations == [[0, 0, 1, 0], [1, 3, 5, 0]]
    msg = c.message
    assert msg.startswith("gs1_n32 / forward / forward/pred_intensity [tensorflow~pytorch]: 2/128 elements")
    assert "max abs 0.5" in msg and "at [1, 3, 5, 0]" in msg and "rtol 1.3e-06, atol 1e-05" in msg
    assert c.worst.shape == (8, 8) and c.worst[3, 5] == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["a", "b"])
def test_any_nonfinite_value_in_either_side_fails(bad, side):
    a = np.ones(5, np.float32)
    b = np.ones(5, np.float32)
    (a if side == "a" else b)[3] = bad
    c = compare_arrays("losses/total", a, b, 1.0, 1.0, pair=PAIR)  # huge tolerance: still a failure
    assert not c.passed and c.n_mismatch == 1 and c.mismatch_locations == [[3]]
    label = "tensorflow" if side == "a" else "pytorch"
    kind = "1 NaN, 0 inf" if np.isnan(bad) else "0 NaN, 1 inf"
    assert c.nonfinite == f"{label}: {kind}"
    assert "non-finite" in c.message
    assert c.max_abs == 0.0  # statistics over the finite elements only


def test_nan_in_both_sides_at_same_place_still_fails():
    a = np.array([1.0, np.nan])
    c = compare_arrays("t", a, a.copy(), 1e-7, 1e-7)
    assert not c.passed and c.n_mismatch == 1


def test_complex_compared_as_complex_modulus_catches_a_phase_error():
    rng = np.random.default_rng(0)
    b = (rng.normal(size=(4, 16, 16)) + 1j * rng.normal(size=(4, 16, 16))).astype(np.complex64)
    a = (b * np.exp(1j * 1e-3)).astype(np.complex64)  # same amplitudes, phase off by 1 mrad
    np.testing.assert_allclose(np.abs(a), np.abs(b), rtol=1e-5)
    c = compare_arrays("forward/trimmed_object", a, b, 1.3e-6, 1e-5, pair=PAIR)
    assert not c.passed
    assert c.max_rel == pytest.approx(1e-3, rel=1e-2)  # |e^{i phi} - 1| = phi for small phi
    assert c.dtype == "complex64"


def test_complex_within_tolerance_passes():
    b = np.array([1 + 1j, -2j], np.complex64)
    assert compare_arrays("t", b + np.complex64(1e-7), b, 1.3e-6, 1e-5).passed


@pytest.mark.parametrize(
    ("a", "b", "what"),
    [
        (np.zeros((2, 32, 32, 1), np.float32), np.zeros((2, 1, 32, 32), np.float32), "shape"),
        (np.zeros(3, np.float32), np.zeros(3, np.float64), "dtype"),
        (np.zeros(3, np.complex64), np.zeros(3, np.float32), "dtype"),
    ],
)
def test_shape_or_dtype_mismatch_fails_with_a_clear_message(a, b, what):
    c = compare_arrays("forward/amp", a, b, 1.0, 1.0, pair=PAIR)
    assert not c.passed
    assert f"{what} differs: tensorflow {list(a.shape)} {a.dtype} vs pytorch {list(b.shape)} {b.dtype}" in c.message


def test_integers_and_bools_compare_exactly():
    assert dtype_default("int64").rtol == 0 and dtype_default("bool").atol == 0
    a = np.array([1, 2, 3])
    c = compare_arrays("t", a + np.array([0, 0, 1]), a, 0.0, 0.0)
    assert not c.passed and c.mismatch_locations == [[2]]
    assert compare_arrays("t", np.array([True, False]), np.array([True, False]), 0.0, 0.0).passed


def test_non_numeric_arrays_compare_by_equality():
    c = compare_arrays("t", np.array(["x", "y"]), np.array(["x", "z"]), 0.0, 0.0)
    assert not c.passed and c.mismatch_locations == [[1]] and c.max_abs is None


def test_magnitude_scaled_atol_scales_with_largest_expected_value():
    b = np.array([1000.0, 0.0], np.float64)
    a = b + np.array([0.0, 5e-3])
    assert not compare_arrays("t", a, b, 0.0, 1e-5).passed
    c = compare_arrays("t", a, b, 0.0, 1e-5, scale_atol=True)  # atol_eff = 1e-5 * 1000 = 1e-2
    assert c.passed and "= 0.01" in c.message
    small = np.array([0.5, 0.0])  # max|b| < 1: atol is not shrunk
    assert not compare_arrays("t", small + np.array([0, 2e-5]), small, 0.0, 1e-5, scale_atol=True).passed


def test_zero_d_arrays():
    c = compare_arrays("losses/total", np.float64(1.0), np.float64(1.1), 1e-6, 1e-6)
    assert not c.passed and c.shape == [] and c.worst is None and c.mismatch_locations == [[]]


def test_worst_slice_takes_the_two_longest_axes_through_the_worst_element():
    diff = np.zeros((3, 16, 16, 4))
    diff[2, 5, 7, 1] = 1.0
    s = worst_slice(diff, (2, 5, 7, 1))
    assert s.shape == (16, 16) and s[5, 7] == 1.0
    assert worst_slice(np.arange(5.0), (4,)).shape == (1, 5)
    assert worst_slice(np.float64(1.0), ()) is None


def test_dtype_defaults_are_torch_testing_values():
    assert DTYPE_DEFAULTS["float32"] == (1.3e-6, 1e-5)
    assert DTYPE_DEFAULTS["complex64"] == (1.3e-6, 1e-5)
    assert DTYPE_DEFAULTS["float64"] == (1e-7, 1e-7)
    mixed = dtype_default("float32", "float64")  # loosest of both
    assert (mixed.rtol, mixed.atol) == (1.3e-6, 1e-5)


@dataclass
class _Override:
    stage: str
    tensor_glob: str
    rtol: float
    atol: float
    reason: str
    evidence: str


def test_resolution_order_override_then_stage_then_dtype():
    table = (StageTolerance("forward", "forward/pred_*", 1e-5, 1e-4, True, 1e-6, "test"),)
    t = resolve_tolerance("forward", "forward/amp", ["float32"], (), table=table)
    assert (t.rtol, t.atol, t.scale_atol) == (1.3e-6, 1e-5, False) and "default" in t.source
    t = resolve_tolerance("forward", "forward/pred_intensity", ["float32"], (), table=table)
    assert (t.rtol, t.atol, t.scale_atol) == (1e-5, 1e-4, True)
    ov = _Override("forward", "forward/pred_intensity", 1e-3, 1e-3, "GPU FFT", "measured 2e-4 on an H100")
    t = resolve_tolerance("forward", "forward/pred_intensity", ["float32"], [ov], table=table)
    assert (t.rtol, t.atol, t.scale_atol) == (1e-3, 1e-3, True) and t.source == "override: GPU FFT"
    other_stage = _Override("losses", "*", 1.0, 1.0, "r", "e")
    assert resolve_tolerance("forward", "forward/amp", ["float32"], [other_stage], table=table).atol == 1e-5


@pytest.mark.parametrize(("reason", "evidence"), [("", "measured"), ("why", ""), ("  ", "  ")])
def test_override_without_reason_or_evidence_is_refused(reason, evidence):
    ov = _Override("forward", "*", 1e-3, 1e-3, reason, evidence)
    with pytest.raises(ValueError, match="lacks a reason or the evidence"):
        resolve_tolerance("forward", "forward/amp", ["float32"], [ov])


def test_stage_tolerance_refuses_a_margin_below_ten_times_the_measured_spread():
    with pytest.raises(ValueError, match="flaky"):
        StageTolerance("forward", "*", 1e-5, 1e-5, False, 2e-6, "measured")
    with pytest.raises(ValueError, match="mismatch budget"):
        StageTolerance("train_k_steps", "*", 0.0, 1e-3, False, 5e-3, "measured", 0.05, 0.01)


def test_mismatch_budget_allows_a_fraction_of_elements_rounded_down():
    b = np.zeros(64, np.float32)
    a = b.copy()
    a[:3] = 0.01  # 3 of 64 elements off
    assert compare_arrays("t", a, b, 0.0, 1e-3, max_mismatch_fraction=0.05).passed  # budget floor(3.2) = 3
    c = compare_arrays("t", a, b, 0.0, 1e-3, max_mismatch_fraction=0.04)  # budget 2
    assert not c.passed and "at most 2 elements" in c.message
    one = compare_arrays("t", np.ones(1, np.float32), np.zeros(1, np.float32), 0.0, 1e-3, max_mismatch_fraction=0.2)
    assert not one.passed  # a 1-element tensor gets no budget
    nan = a.copy()
    nan[5] = np.nan
    assert not compare_arrays("t", nan, b, 0.0, 1e-3, max_mismatch_fraction=0.5).passed  # never for NaN


def test_every_stage_tolerance_states_its_measurement():
    for entry in STAGE_TOLERANCES:
        assert entry.basis.strip() and entry.measured >= 0
        if entry.max_mismatch_fraction:  # the budget, not atol, covers the worst elements
            assert entry.max_mismatch_fraction >= 10 * entry.measured_fraction > 0
        else:
            assert entry.atol >= 10 * entry.measured


finite32 = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
    elements=st.floats(-1e3, 1e3, width=32, allow_nan=False),
)  # fmt: skip


@given(finite32)
def test_an_array_always_matches_itself(a):
    c = compare_arrays("t", a, a.copy(), 0.0, 0.0)
    assert c.passed and c.max_abs == 0.0


@given(finite32, st.floats(1e-6, 1e-2), st.floats(1e-7, 1e-2))
def test_mismatch_count_agrees_with_numpy_isclose(b, rtol, atol):
    a = (b * np.float32(1 + rtol) + np.float32(atol * 0.5)).astype(np.float32)
    c = compare_arrays("t", a, b, rtol, atol)
    expected = ~np.isclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol)
    assert c.n_mismatch == int(expected.sum())
    assert c.passed == (not expected.any())


def _spec_rows() -> list[list[str]]:
    """Rows of the stage-tolerance table in specs/conformance.md (the one whose header starts with stage | tensors)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "specs" / "conformance.md").read_text()
    lines = text.split("| stage | tensors |", 1)[1].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def budgeted_row(e: StageTolerance) -> bool:
    return e.max_mismatch_fraction > 0


def test_spec_tolerance_table_matches_the_code():
    rows = _spec_rows()
    assert len(rows) == len(STAGE_TOLERANCES)
    for row, e in zip(rows, STAGE_TOLERANCES, strict=True):
        stage, glob, rtol, atol, scaled, budget, measured, fraction, margin = row
        assert (stage, glob) == (e.stage, e.tensor_glob)
        assert float(rtol) == e.rtol and float(atol) == e.atol and (scaled == "yes") == e.scale_atol
        assert float(budget) == e.max_mismatch_fraction
        assert float(measured) == pytest.approx(e.measured, rel=5e-3)
        assert float(fraction) == pytest.approx(e.measured_fraction, rel=5e-3)
        if e.atol == e.rtol == e.measured == 0:  # an exact row (data: batches are gathered, not computed)
            assert margin == "exact" and not budgeted_row(e)
            continue
        budgeted = budgeted_row(e)
        expected_margin = e.max_mismatch_fraction / e.measured_fraction if budgeted else e.atol / e.measured
        assert int(margin.rstrip("x")) == round(expected_margin) and expected_margin >= 10

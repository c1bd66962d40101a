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
    SPREAD_FLOOR,
    STAGE_TOLERANCES,
    StageTolerance,
    compare_arrays,
    derive_tolerance,
    dtype_default,
    resolve_tolerance,
    symmetric_scale,
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
    small = np.array([0.5, 0.0])  # the scale is the larger side's largest value, also below 1
    assert compare_arrays("t", small + np.array([0, 4e-6]), small, 0.0, 1e-5, scale_atol=True).passed
    assert not compare_arrays("t", small + np.array([0, 6e-6]), small, 0.0, 1e-5, scale_atol=True).passed


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
def test_mismatch_count_agrees_with_the_symmetric_isclose_rule(b, rtol, atol):
    a = (b * np.float32(1 + rtol) + np.float32(atol * 0.5)).astype(np.float32)
    c = compare_arrays("t", a, b, rtol, atol)
    aw, bw = a.astype(np.float64), b.astype(np.float64)
    expected = np.abs(aw - bw) > atol + rtol * np.maximum(np.abs(aw), np.abs(bw))  # math.isclose's rule
    assert c.n_mismatch == int(expected.sum())
    assert c.passed == (not expected.any())


@given(finite32, finite32, st.floats(0.0, 1e-2), st.floats(0.0, 1e-2), st.booleans())
def test_the_verdict_is_symmetric_in_the_two_sides(a, b, rtol, atol, scaled):
    if a.shape != b.shape:
        b = np.resize(b, a.shape).astype(np.float32)
    ab = compare_arrays("t", a, b, rtol, atol, scale_atol=scaled)
    ba = compare_arrays("t", b, a, rtol, atol, scale_atol=scaled)
    assert (ab.passed, ab.n_mismatch, ab.max_abs) == (ba.passed, ba.n_mismatch, ba.max_abs)


@pytest.mark.parametrize("zero_side", ["a", "b"])
def test_an_all_zero_gradient_on_either_side_fails_the_scaled_check(zero_side):
    rng = np.random.default_rng(1)
    g = (rng.standard_normal((3, 3, 4, 8)) * 1e-3).astype(np.float32)  # small: max|g| < 1
    zero = np.zeros_like(g)
    a, b = (zero, g) if zero_side == "a" else (g, zero)
    c = compare_arrays("gradients/w", a, b, 1.3e-6, 0.08, scale_atol=True)  # even the loosest gradient row
    assert not c.passed and c.n_mismatch > 0.5 * g.size
    assert symmetric_scale(a, b) == pytest.approx(float(np.abs(g).max()))
    assert compare_arrays("gradients/w", zero, zero.copy(), 1.3e-6, 0.08, scale_atol=True).passed


def test_symmetric_scale_ignores_nonfinite_and_uses_the_modulus():
    a = np.array([1.0, np.nan, -3.0])
    assert symmetric_scale(a, np.array([2.0, 0.0, np.inf])) == 3.0
    assert symmetric_scale(np.array([3 + 4j]), np.array([1j])) == 5.0
    assert symmetric_scale(np.zeros(2), np.zeros(2)) == 0.0


def test_derived_tolerance_is_ten_times_the_scenario_spread_rounded_up_with_a_floor():
    row = StageTolerance("gradients", "gradients/*", 1.3e-6, 0.08, True, 7.49e-3, "test")
    t = derive_tolerance(row, (3.45e-4, 0, 100))
    assert (t.atol, t.rtol, t.scale_atol, t.max_mismatch_fraction) == (4e-3, 1.3e-6, True, 0.0)
    assert "3.45e-04" in t.source or "0.000345" in t.source
    assert derive_tolerance(row, (0.0, 0, 100)).atol == SPREAD_FLOOR  # bit-identical: the floor, not 0
    assert derive_tolerance(row, (0.05, 0, 100)) is None  # worse than the row: a stale table
    budget_row = StageTolerance("train_k_steps", "train_k_steps/weights/*", 0.0, 1e-3, False, 4.6e-3, "t", 0.2,
                                1.6e-2)
    small = derive_tolerance(budget_row, (2e-6, 0, 64))
    assert small.atol == 2e-5 and small.max_mismatch_fraction == 0.0
    flips = derive_tolerance(budget_row, (4.6e-3, 3, 64))  # noise-level Adam flips: the row and its budget
    assert flips.atol == 1e-3 and flips.max_mismatch_fraction == 0.2


def test_resolution_uses_the_scenario_spread_only_with_scenario_and_pair():
    spreads = {"spreads": {"s1": {"gradients": {"gradients/w": {"tensorflow~pytorch": [1e-4, 0, 10]}}}}}
    kw = {"spreads": spreads}
    row = next(e for e in STAGE_TOLERANCES if e.matches("gradients", "gradients/w")).atol
    assert resolve_tolerance("gradients", "gradients/w", ["float32"], **kw).atol == row  # no scenario: the row
    t = resolve_tolerance("gradients", "gradients/w", ["float32"], scenario="s1", pair="tensorflow~pytorch", **kw)
    assert t.atol == 1e-3 and "spreads.json" in t.source
    other = resolve_tolerance("gradients", "gradients/w", ["float32"], scenario="s2", pair="tensorflow~pytorch", **kw)
    assert other.atol == row  # a scenario the table lacks: the row
    ov = _Override("gradients", "gradients/*", 0.0, 0.5, "why", "measured")
    t = resolve_tolerance("gradients", "gradients/w", ["float32"], [ov], scenario="s1", pair="tensorflow~pytorch",
                          **kw)
    assert t.atol == 0.5  # an override wins over the derived tolerance


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


# --------------------------------------------------------------------------- the spread table and the code


def _table_entries():
    from conformance.spreads import load_spreads

    doc = load_spreads()
    for sid, stages in doc["spreads"].items():
        for stage, tensors in stages.items():
            for tensor, pairs in tensors.items():
                for pair, (d, n_over, n) in pairs.items():
                    yield sid, stage, tensor, pair, float(d), int(n_over), int(n)


def test_spread_table_measures_every_default_gate_scenario_and_stage_with_a_row():
    from conformance.scenarios import DEFAULT_GATE, REGISTRY
    from conformance.spreads import load_spreads

    doc = load_spreads()
    assert doc["measured"]["scenarios"] and sorted(doc["measured"]["scenarios"]) == sorted(DEFAULT_GATE)
    governed = {e.stage for e in STAGE_TOLERANCES}
    for sid in DEFAULT_GATE:
        for stage in set(REGISTRY[sid].stages) & governed:
            assert doc["spreads"].get(sid, {}).get(stage), f"{sid}/{stage} has no measured spread: regenerate"
    assert set(doc["spreads"]) <= set(DEFAULT_GATE)  # no scenario that left the gate


def test_stage_rows_are_the_maxima_of_the_spread_table():
    worst: dict[int, float] = {}
    for _sid, stage, tensor, _pair, d, _n_over, _n in _table_entries():
        i = next(i for i, e in enumerate(STAGE_TOLERANCES) if e.matches(stage, tensor))
        worst[i] = max(worst.get(i, 0.0), d)
    for i, e in enumerate(STAGE_TOLERANCES):
        assert i in worst, f"row {e.stage} {e.tensor_glob} governs no measured tensor"
        assert e.measured == pytest.approx(worst[i], rel=1e-2), (e.stage, e.tensor_glob, worst[i])


def test_every_derived_tolerance_is_at_least_ten_times_its_spread():
    n_derived = 0
    for _sid, stage, tensor, _pair, d, n_over, n in _table_entries():
        row = next(e for e in STAGE_TOLERANCES if e.matches(stage, tensor))
        t = derive_tolerance(row, (d, n_over, n))
        assert t is not None, (stage, tensor)
        if row.atol == 0.0:  # an exact row: measured 0, compared exactly
            assert d == 0.0 and t.atol == 0.0 and t.rtol == 0.0
            continue
        if t.max_mismatch_fraction:  # noise-level Adam flips: the row's budget covers them
            assert row.max_mismatch_fraction >= 10 * row.measured_fraction
        else:
            assert t.atol >= 10 * d * (1 - 1e-12) and t.atol <= row.atol
            n_derived += 1
    assert n_derived > 1000



def test_merging_spread_tables_keeps_the_worse_entry_and_refuses_a_changed_tensor():
    from conformance.spreads import merge_tables

    a = {"s": {"gradients": {"g/w": {"tf~pt": (1e-6, 0, 4)}, "g/b": {"tf~pt": (5e-7, 1, 1)}}}}
    b = {"s": {"gradients": {"g/w": {"tf~pt": (3e-6, 2, 4)}, "g/k": {"tf~pt": (2e-7, 0, 9)}}},
         "t": {"losses": {"l": {"pt~ref": (1e-8, 0, 1)}}}}
    m = merge_tables(a, b)
    assert m["s"]["gradients"]["g/w"]["tf~pt"] == (3e-6, 2, 4)  # the worse d and n_over
    assert m["s"]["gradients"]["g/b"]["tf~pt"] == (5e-7, 1, 1)  # only in the first table
    assert m["s"]["gradients"]["g/k"]["tf~pt"] == (2e-7, 0, 9) and m["t"]["losses"]["l"]["pt~ref"][0] == 1e-8
    assert merge_tables(b, a) == m  # order does not matter
    with pytest.raises(ValueError, match="5 elements here, 4 in the table"):
        merge_tables(a, {"s": {"gradients": {"g/w": {"tf~pt": (1e-6, 0, 5)}}}})

"""The conventions module agrees with its prose spec, and its helpers are self-consistent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho import conventions as cv

SPEC = Path(__file__).resolve().parents[1] / "specs" / "conventions.md"


def _spec_table() -> dict[str, object]:
    text = SPEC.read_text()
    block = text.split("<!-- conventions-table:start -->")[1].split("<!-- conventions-table:end -->")[0]
    rows = {}
    for line in block.strip().splitlines()[2:]:
        m = re.match(r"\|\s*(\w+)\s*\|\s*(.+?)\s*\|$", line)
        assert m, f"malformed row in specs/conventions.md: {line!r}"
        rows[m.group(1)] = json.loads(m.group(2))
    return rows


def test_spec_table_matches_module():
    table = _spec_table()
    public = {k for k, v in vars(cv).items() if k.isupper() and not k.startswith("_")}
    assert set(table) == public, "specs/conventions.md and ptycho/conventions.py list different constants"
    for name, spec_value in table.items():
        value = getattr(cv, name)
        if isinstance(value, tuple):
            value = list(value)
        assert value == spec_value, f"{name}: module has {value!r}, spec has {spec_value!r}"


def test_signs_are_consistent():
    # Reassembly must undo extraction: the two shifts are opposite, and reassembly moves a patch
    # by (pos - centroid) = -coords_relative.
    assert cv.REASSEMBLY_SHIFT_SIGN == -cv.EXTRACTION_SHIFT_SIGN
    assert cv.REASSEMBLY_SHIFT_SIGN * cv.LOCAL_OFFSET_SIGN == 1


@pytest.mark.parametrize("N,gs,expected", [(64, 1, 74), (64, 2, 78), (128, 3, 146), (32, 1, 42)])
def test_padded_size(N, gs, expected):
    assert cv.padded_size(N, gs) == expected


def test_intensity_scale_closed_form():
    assert cv.intensity_scale(1e9, 64) == pytest.approx(988.2117688, rel=1e-9)
    with pytest.raises(ValueError, match="nphotons"):
        cv.intensity_scale(0, 64)


def test_channels_rejects_bad_gridsize():
    assert cv.channels(3) == 9
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="gridsize"):
            cv.channels(bad)


@given(B=st.integers(1, 4), C=st.sampled_from([1, 4, 9]), N=st.sampled_from([2, 4, 6]))
def test_layout_round_trips(B, C, N):
    rng = np.random.default_rng(B * 100 + C * 10 + N)
    imgs = rng.normal(size=(B, N, N, C)).astype(np.float32)
    pos = rng.normal(size=(B, 1, 2, C))
    np.testing.assert_array_equal(cv.torch_to_tf_images(cv.tf_to_torch_images(imgs)), imgs)
    np.testing.assert_array_equal(cv.torch_to_tf_positions(cv.tf_to_torch_positions(pos)), pos)
    flat = cv.channels_to_flat(imgs)
    np.testing.assert_array_equal(cv.flat_to_channels(flat, C), imgs)
    # Row b*C + c of the flat stack is channel c of sample b.
    b, c = B - 1, C - 1
    np.testing.assert_array_equal(flat[b * C + c], imgs[b, :, :, c])
    off = cv.positions_to_flat(pos)
    np.testing.assert_array_equal(off[b * C + c], pos[b, 0, :, c])
    assert cv.tf_to_torch_positions(pos).shape == (B, C, 1, 2)


def test_flat_to_channels_rejects_indivisible():
    with pytest.raises(ValueError, match="C=4"):
        cv.flat_to_channels(np.zeros((6, 2, 2)), 4)

"""conformance.contracts: the malformed variants of a valid call and the outcome of each."""

from __future__ import annotations

import numpy as np

from conformance import contracts
from ptycho.errors import ConfigError
from ptycho.reference import physics


def test_variants_change_one_argument_at_a_time():
    a, b = np.zeros((2, 4, 4, 1)), np.ones((2, 1, 2, 1))
    cases = {case: (args, kw) for case, args, kw in contracts.malformed_calls(("patches", "positions", "P"),
                                                                               (a, b, 8), {"k": 1})}
    assert set(cases) == {
        "patches/extra_axis", "patches/dropped_axis", "patches/axis0+1", "patches/axis1+1", "patches/axis2+1",
        "patches/axis3+1", "patches/swapped_last_axes", "positions/extra_axis", "positions/dropped_axis",
        "positions/axis0+1", "positions/axis1+1", "positions/axis2+1", "positions/axis3+1",
        "positions/swapped_last_axes", "P/zero", "P/negative", "P/plus_one",
    }  # the last two axes are swapped where they differ (4 vs 1, 2 vs 1)
    assert cases["patches/swapped_last_axes"][0][0].shape == (2, 4, 1, 4)
    args, kw = cases["patches/axis1+1"]
    assert args[0].shape == (2, 5, 4, 1) and args[1] is b and args[2] == 8 and kw == {"k": 1}
    assert cases["P/plus_one"][0][2] == 9 and cases["P/negative"][0][2] == -8


def test_outcomes_separate_refusals_from_breakage():
    def refuse():
        raise ConfigError("M", 3, "an even integer")

    def broken():
        return [][1]

    assert contracts.outcome(lambda: 1) == "computes"
    assert contracts.outcome(refuse) == "refuses"
    assert contracts.outcome(lambda: np.zeros(3) + np.zeros(4)) == "refuses"  # numpy's ValueError
    assert contracts.outcome(broken) == "fails: IndexError"


def test_the_reference_refuses_a_broadcast_loss_and_a_transposed_layout():
    """The executable spec the backends are held to: no silent broadcasting in the losses."""
    y = np.full((2, 8, 8, 1), 2.0, np.float32)
    got = contracts.probe(physics.poisson_nll, ("y_true_intensity", "y_pred_intensity"), (y, y), {})
    assert got["y_pred_intensity/extra_axis"] == "refuses" and got["y_true_intensity/swapped_last_axes"] == "refuses"

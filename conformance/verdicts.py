"""The judge's data model: one :class:`Comparison` per checked tensor or structure, one
:class:`Verdict` per scenario x stage, one :class:`GateResult` per run of the gate.

These are plain dataclasses with no framework imports; :mod:`conformance.report` renders
them (``parity.json`` is :meth:`GateResult.to_json_dict`, validated against
``specs/parity-report.schema.json``).  Field meanings are in ``specs/conformance.md``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FAILING_STATUSES", "STATUSES", "Comparison", "GateResult", "Verdict"]

#: Every verdict status, in the order reports list them.
STATUSES: tuple[str, ...] = ("pass", "fail", "xfail", "xpass", "error", "not_run")
#: Statuses that make the gate fail (an unexpected pass of a strict expected failure included).
FAILING_STATUSES: frozenset[str] = frozenset({"fail", "xpass", "error"})


def _json_float(value: float | None) -> float | None:
    """A float JSON can hold (NaN and inf become None; they never occur in finite statistics)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Comparison:
    """One check of one tensor (or one structured record part) between two sides of a pair.

    ``pair`` is ``"<a>~<b>"``; ``b`` is the *expected* side (its magnitude enters the
    relative term ``rtol * |b|``).  For structured checks (params.cfg, bundle layout)
    ``max_abs``/``max_rel`` are None, ``n_total`` counts the keys compared and
    ``n_mismatch`` the keys that differ.  ``worst`` is a 2-D ``|a - b|`` slice through
    the worst element, for the report's heatmap; it is never serialised.
    """

    tensor: str
    pair: str
    passed: bool
    rtol: float
    atol: float
    max_abs: float | None
    max_rel: float | None
    n_mismatch: int
    n_total: int
    mismatch_locations: list[list[int]]
    shape: list[int]
    dtype: str
    nonfinite: str | None
    message: str
    worst: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json_dict(self) -> dict[str, Any]:
        """Every field except ``worst``, as JSON-ready values."""
        return {
            "tensor": self.tensor,
            "pair": self.pair,
            "passed": bool(self.passed),
            "rtol": float(self.rtol),
            "atol": float(self.atol),
            "max_abs": _json_float(self.max_abs),
            "max_rel": _json_float(self.max_rel),
            "n_mismatch": int(self.n_mismatch),
            "n_total": int(self.n_total),
            "mismatch_locations": [[int(i) for i in loc] for loc in self.mismatch_locations],
            "shape": [int(s) for s in self.shape],
            "dtype": self.dtype,
            "nonfinite": self.nonfinite,
            "message": self.message,
        }


@dataclass
class Verdict:
    """The outcome of one stage of one scenario.

    ``status`` is one of :data:`STATUSES`: ``not_run`` means the scenario does not list
    the stage (never counted as a pass); ``xfail`` means every failing check matched an
    expected failure (``expected_failure`` holds its reason); ``xpass`` means a strict
    expected failure matched nothing, which fails the gate; ``error`` means a worker
    raised or crashed (``stderr_tail`` / ``message`` hold the evidence).
    """

    scenario: str
    stage: str
    status: str
    checks: list[Comparison]
    message: str
    seconds: float
    repro: str
    expected_failure: str | None = None
    stderr_tail: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status {self.status!r} is not one of {STATUSES}")

    @property
    def failing(self) -> bool:
        """True when this verdict makes the gate fail."""
        return self.status in FAILING_STATUSES

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready dict; checks serialised without their heatmap slices."""
        return {
            "scenario": self.scenario,
            "stage": self.stage,
            "status": self.status,
            "checks": [c.to_json_dict() for c in self.checks],
            "message": self.message,
            "seconds": float(self.seconds),
            "repro": self.repro,
            "expected_failure": self.expected_failure,
            "stderr_tail": self.stderr_tail,
        }


@dataclass
class GateResult:
    """One run of the gate: every verdict plus what is needed to reproduce and audit it.

    ``ok`` is derived from the verdicts (no ``fail``, ``error`` or ``xpass``); passing a
    value that contradicts them raises ``ValueError``.
    """

    verdicts: list[Verdict]
    scenarios: list[str]
    stages: list[str]
    seconds: float
    started: str
    command: str
    mutant: str | None
    versions: dict[str, str]
    ok: bool | None = None

    def __post_init__(self) -> None:
        computed = not any(v.failing for v in self.verdicts)
        if self.ok is not None and bool(self.ok) != computed:
            raise ValueError(f"ok={self.ok} contradicts the verdicts (no fail/error/xpass is {computed})")
        self.ok = computed

    def counts(self) -> dict[str, int]:
        """``{status: number of verdicts}`` for every status in :data:`STATUSES`."""
        tally = Counter(v.status for v in self.verdicts)
        return {status: tally.get(status, 0) for status in STATUSES}

    def to_json_dict(self) -> dict[str, Any]:
        """The machine-readable gate result (the body of ``parity.json``)."""
        return {
            "verdicts": [v.to_json_dict() for v in self.verdicts],
            "scenarios": list(self.scenarios),
            "stages": list(self.stages),
            "seconds": float(self.seconds),
            "started": self.started,
            "command": self.command,
            "mutant": self.mutant,
            "versions": dict(self.versions),
            "ok": bool(self.ok),
        }

"""The measured clean spread of every scenario, stage, tensor and pair: what the tolerances are derived from.

``conformance/spreads.json`` (committed; schema :data:`SCHEMA`) holds, for every array comparison of a
clean run of ``DEFAULT_GATE``, the worst disagreement between the two sides::

    {"schema": ..., "measured": {"command", "versions", "scenarios"},
     "spreads": {scenario: {stage: {tensor: {pair: [d, n_over, n]}}}}}

* ``d``: ``max|a - b| / max(max|a|, max|b|)`` for magnitude-scaled stage rows
  (:func:`conformance.tolerances.symmetric_scale`; 0 when both sides are all zero), ``max|a - b|`` otherwise;
* ``n``: the tensor's element count; ``n_over``: for rows with a mismatch budget (Adam weights), how many
  elements differ by more than a tenth of the row's ``atol`` (elements without a 10x margin), else 0.

Regenerate after a deliberate numerics change (the same command measured the committed file)::

    python -m conformance run --run-dir RUN --no-report      # a clean run of DEFAULT_GATE
    python -m conformance spread --run-dir RUN --write conformance/spreads.json

:func:`conformance.tolerances.resolve_tolerance` derives each tensor's tolerance from its entry
(:func:`conformance.tolerances.derive_tolerance`), and the stage rows' ``measured`` values are the maxima
of this table (``tests/conformance/test_tolerances.py`` checks both).  This module imports neither
tensorflow nor torch.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA",
    "SPREADS_PATH",
    "SpreadTable",
    "element_spread",
    "load_spreads",
    "machine",
    "merge_tables",
    "write_spreads",
]

SCHEMA = "ptychopinn.conformance.spreads/1"
#: The committed table.
SPREADS_PATH = Path(__file__).with_name("spreads.json")
#: Significant digits kept for ``d`` (the table is evidence, not a bit pattern).
_DIGITS = 3

#: ``{scenario: {stage: {tensor: {pair: (d, n_over, n)}}}}``
SpreadTable = Mapping[str, Mapping[str, Mapping[str, Mapping[str, tuple[float, int, int]]]]]


def element_spread(a: np.ndarray, b: np.ndarray, *, scaled: bool, over: float | None) -> tuple[float, int, int]:
    """``(d, n_over, n)`` of one finite, same-shape pair (see the module docstring).

    ``over``: the normalised threshold whose exceedances are counted (``None``: count nothing).
    """
    from conformance.tolerances import symmetric_scale

    wide = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    diff = np.abs(np.asarray(a).astype(wide) - np.asarray(b).astype(wide))
    norm = symmetric_scale(a, b) if scaled else 1.0
    if norm == 0.0:  # both sides all zero (scaled): identical
        return 0.0, 0, int(diff.size)
    rel = diff / norm
    d = float(rel.max(initial=0.0))
    n_over = int(np.count_nonzero(rel > over)) if over is not None else 0
    return d, n_over, int(diff.size)


def _round_up(x: float) -> float:
    """``x`` rounded up to :data:`_DIGITS` significant digits (the table never understates a spread)."""
    if x <= 0:
        return 0.0
    exp = math.floor(math.log10(x)) - (_DIGITS - 1)
    r = float(f"{math.ceil(round(x / 10.0**exp, 6))}e{exp}")
    return r if r >= x else float(f"{math.ceil(x / 10.0**exp) + 1}e{exp}")


def machine() -> str:
    """This machine as the table records it: CPU model, vector extensions, logical CPUs (float32 sums are
    ordered differently on AVX2 and AVX-512 kernels, so spreads differ between machines)."""
    import os
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")  # Linux only; elsewhere the model is platform's and the ISA "other"
    for line in (cpuinfo.read_text(encoding="utf-8").splitlines() if cpuinfo.is_file() else []):
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    isa = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"
    return f"{model}, {isa}, {os.cpu_count()} CPUs"


def merge_tables(a: SpreadTable, b: SpreadTable) -> dict[str, Any]:
    """The worse of two tables entry by entry (``d`` and ``n_over`` maxima; an entry of one alone is kept)."""
    out: dict[str, Any] = {}
    for table in (a, b):
        for sid, stages in table.items():
            for stage, tensors in stages.items():
                for tensor, pairs in tensors.items():
                    for pair, (d, n_over, n) in pairs.items():
                        slot = out.setdefault(sid, {}).setdefault(stage, {}).setdefault(tensor, {})
                        old = slot.get(pair)
                        if old is not None and int(old[2]) != int(n):
                            raise ValueError(f"{sid}/{tensor} [{pair}]: {n} elements here, {old[2]} in the table")
                        slot[pair] = (float(d), int(n_over), int(n)) if old is None else (
                            max(float(old[0]), float(d)), max(int(old[1]), int(n_over)), int(n))
    return out


def write_spreads(path: Path, table: SpreadTable, *, command: str, versions: Mapping[str, Any],
                  scenarios: Sequence[str], machines: Sequence[str] = ()) -> Path:
    """Write ``table`` as the committed JSON (sorted keys, ``d`` rounded up to 3 significant digits);
    ``machines``: the machines whose clean runs the table is the worst of."""
    out: dict[str, Any] = {}
    for sid in sorted(table):
        for stage in sorted(table[sid]):
            for tensor in sorted(table[sid][stage]):
                for pair in sorted(table[sid][stage][tensor]):
                    d, n_over, n = table[sid][stage][tensor][pair]
                    r = _round_up(d)
                    out.setdefault(sid, {}).setdefault(stage, {}).setdefault(tensor, {})[pair] = [r, int(n_over),
                                                                                                 int(n)]
    doc = {"schema": SCHEMA, "measured": {"command": command, "versions": dict(versions),
                                          "scenarios": list(scenarios), "machines": list(machines)},
           "spreads": out}
    path = Path(path)
    path.write_text(json.dumps(doc, indent=None, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


@functools.lru_cache(maxsize=4)
def load_spreads(path: Path = SPREADS_PATH) -> dict[str, Any]:
    """The table at ``path`` (``{"schema", "measured", "spreads"}``); an absent file gives an empty table."""
    path = Path(path)
    if not path.exists():
        return {"schema": SCHEMA, "measured": {}, "spreads": {}}
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected {SCHEMA!r}")
    return doc


def lookup(spreads: Mapping[str, Any], scenario: str | None, stage: str, tensor: str,
           pair: str | None) -> tuple[float, int, int] | None:
    """The ``(d, n_over, n)`` entry of one comparison, or None when the table has none."""
    if scenario is None or pair is None:
        return None
    entry = spreads.get("spreads", {}).get(scenario, {}).get(stage, {}).get(tensor, {}).get(pair)
    return None if entry is None else (float(entry[0]), int(entry[1]), int(entry[2]))

"""The judge: turn the records of one run of the gate into one :class:`Verdict` per scenario x stage.

It reads records only (``RUN/<sid>/<backend>/{produce,consume}.{json,npz}``, plus the
runner's ``<phase>.crash.json`` when a worker died) and never imports tensorflow or
torch, so a record written on a GPU machine or by last week's code is judged the same
way.  What is compared per stage, and between which pairs, is specified in
``specs/conformance.md``; in short:

* ``configure``/``physics_ops``/``forward``/``losses``/``gradients``/``train_k_steps``:
  every array of the stage, tensorflow~pytorch, and each backend~reference for the
  stages the NumPy reference computes (physics_ops, forward, losses);
* ``save_load``: each backend's fresh-process forward against its own saver's forward,
  and its params.cfg after loading against the one after training;
* ``transplant``: each backend running its peer's trained weights (in memory and through
  the peer's bundle file) against the peer's own forward, and the peer against the
  reference forward with the same weights;
* ``params_cfg``: tensorflow~pytorch key by key, types included, at every snapshot point;
* ``bundle_layout``: member tree (modulo backend payload files), manifest keys and
  backend-neutral manifest values, canonical weight names/shapes/dtypes, backend tag;
* ``e2e``: physics-aware scores (:mod:`ptycho.evaluation`) of each backend's
  reconstruction against the ground truth and against each other, within stated bands.

Array checks use :mod:`conformance.tolerances`; a scenario's tolerance overrides and
expected failures are applied here.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance.record import Record, load_record
from conformance.scenarios import (
    BACKENDS,
    PHASE_STAGES,
    PHASES,
    REFERENCE,
    REFERENCE_STAGES,
    STAGES,
    ExpectedFailure,
    Scenario,
    ToleranceOverride,
)
from conformance.spreads import element_spread
from conformance.tolerances import (
    DTYPE_DEFAULTS,
    E2E_CROSS,
    E2E_GAP,
    E2E_VS_TRUTH,
    E2E_VS_TRUTH_BY_SCENARIO,
    STAGE_TOLERANCES,
    Tolerance,
    compare_arrays,
    resolve_tolerance,
)
from conformance.verdicts import Comparison, Verdict
from ptycho import evaluation as metrics
from ptycho.bundle import PAYLOAD_MEMBERS

__all__ = [
    "BACKENDS",
    "PHASES",
    "REFERENCE",
    "REFERENCE_STAGES",
    "STAGES",
    "ArrayPair",
    "SideRecord",
    "Spread",
    "array_pairs",
    "crash_path",
    "judge",
    "judge_scenario",
    "load_side",
    "measure_scenario_spreads",
    "measure_spread",
    "repro_command",
]

#: Which phase(s) of a worker record each stage (``save_load``: the saver in produce, the fresh load in consume).
STAGE_PHASES: dict[str, tuple[str, ...]] = {s: tuple(ph for ph in PHASES if s in PHASE_STAGES[ph]) for s in STAGES}
#: Manifest entries that legitimately differ between backends (everything else must agree).
BACKEND_SPECIFIC_MANIFEST_KEYS: frozenset[str] = frozenset({"backend", "framework", "members"})
#: Manifest values derived from trained float32 weights (``intensity_scale`` = exp of the trained
#: ``log_scale``): compared with the float32 default tolerance, not exactly, because one backend may
#: round the last Adam step one ulp differently (over DEFAULT_GATE they were equal).
TRAINED_MANIFEST_FLOATS: frozenset[str] = frozenset({"intensity_scale"})
#: params.cfg keys holding the backend's own name: each backend must record itself (the reference is not
#: compared on them); between two snapshots of the same backend they must be equal like any other key.
BACKEND_TAG_PARAMS: frozenset[str] = frozenset({"backend"})
STDERR_TAIL_LINES = 40
_MAX_LISTED = 8


def crash_path(run_dir: Path, scenario: str, backend: str, phase: str) -> Path:
    """Where the runner leaves the evidence of a worker that died before writing a record."""
    return Path(run_dir) / scenario / backend / f"{phase}.crash.json"


def repro_command(scenario: str, stage: str, mutant: str | None = None) -> str:
    """The one-line command that reruns exactly this scenario and stage."""
    prefix = f"PTYCHO_MUTANT={mutant} " if mutant else ""
    return f"{prefix}python -m conformance run --scenario {scenario} --stage {stage}"


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


# --------------------------------------------------------------------------- records


@dataclass
class SideRecord:
    """Everything one side (a backend or the reference) wrote for one scenario, both phases merged."""

    side: str
    #: stage -> entry; an ``error`` in either phase wins over an ``ok`` in the other
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    params_cfg: dict[str, dict[str, Any]] = field(default_factory=dict)
    bundle_layout: dict[str, Any] | None = None
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: phase -> why its record is absent or unreadable
    missing: dict[str, str] = field(default_factory=dict)
    #: phase -> stderr tail of the crashed worker (from the runner's crash file)
    stderr: dict[str, str] = field(default_factory=dict)
    mutant: str | None = None

    def keys(self, prefix: str) -> list[str]:
        """Array keys starting with ``prefix``, sorted."""
        return sorted(k for k in self.arrays if k.startswith(prefix))


def load_side(run_dir: Path, scenario: str, side: str) -> SideRecord:
    """Read both phases of one side's records for ``scenario`` (absent phases noted in ``missing``)."""
    rec = SideRecord(side)
    records: list[Record] = []
    for phase in PHASES:
        try:
            records.append(load_record(run_dir, scenario, side, phase))
        except FileNotFoundError:
            crash = crash_path(run_dir, scenario, side, phase)
            if crash.exists():
                info = json.loads(crash.read_text())
                rec.missing[phase] = info.get("reason", "the worker crashed")
                rec.stderr[phase] = info.get("stderr_tail", "")
            else:
                rec.missing[phase] = f"no {phase} record in {Path(run_dir) / scenario / side}"
        except ValueError as exc:  # another schema, or JSON that does not parse
            rec.missing[phase] = f"unreadable {phase} record: {exc}"
    for record in records:
        rec.mutant = rec.mutant or record.mutant
        for stage, entry in record.stages.items():
            if (rec.stages.get(stage) or {}).get("status", "ok") == "ok":
                rec.stages[stage] = entry
        rec.params_cfg.update(record.params_cfg)
        rec.bundle_layout = record.bundle_layout or rec.bundle_layout
    rec.arrays = ChainMap(*(_read_arrays(r) for r in records))
    return rec


def _read_arrays(record: Record) -> dict[str, np.ndarray]:
    """Every array of a record in one pass over its npz (a per-key lazy read reopens the zip each time)."""
    path = record.arrays.path
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


# --------------------------------------------------------------------------- array pairs


@dataclass
class ArrayPair:
    """Two arrays to compare: ``a`` against the expected ``b`` (None when a side lacks the tensor)."""

    tensor: str
    pair: str
    a: np.ndarray | None
    b: np.ndarray | None


def _keyed_pairs(ra: SideRecord, rb: SideRecord, prefix: str, pair: str) -> Iterator[ArrayPair]:
    """A pair for every key under ``prefix`` that either side holds."""
    for key in sorted(set(ra.keys(prefix)) | set(rb.keys(prefix))):
        yield ArrayPair(key, pair, ra.arrays.get(key), rb.arrays.get(key))


def _generic_pairs(stage: str, sides: Mapping[str, SideRecord]) -> Iterator[ArrayPair]:
    tf, pt = sides["tensorflow"], sides["pytorch"]
    yield from _keyed_pairs(tf, pt, f"{stage}/", "tensorflow~pytorch")
    if stage in REFERENCE_STAGES:
        ref = sides[REFERENCE]
        for name in BACKENDS:
            yield from _keyed_pairs(sides[name], ref, f"{stage}/", f"{name}~{REFERENCE}")


def _save_load_pairs(sides: Mapping[str, SideRecord]) -> Iterator[ArrayPair]:
    for name in BACKENDS:
        rec = sides[name]
        saver = {k.replace("save_load/saver/", "save_load/", 1): k for k in rec.keys("save_load/saver/")}
        loaded = [k for k in rec.keys("save_load/") if not k.startswith("save_load/saver/")]
        for key in sorted(set(saver) | set(loaded)):
            yield ArrayPair(key, f"{name}:loaded~{name}:saver", rec.arrays.get(key), rec.arrays.get(saver.get(key, "")))


def _transplant_pairs(sides: Mapping[str, SideRecord]) -> Iterator[ArrayPair]:
    ref = sides[REFERENCE]
    for name in BACKENDS:
        peer = BACKENDS[1 - BACKENDS.index(name)]
        rec, peer_rec = sides[name], sides[peer]
        keys = sorted(
            {k.split("/", 2)[2] for k in rec.keys("transplant/memory/") + rec.keys("transplant/file/")}
            | {k.split("/", 2)[2] for k in peer_rec.keys("save_load/saver/")}
        )
        for key in keys:
            own = peer_rec.arrays.get(f"save_load/saver/{key}")
            for route in ("memory", "file"):
                tensor = f"transplant/{route}/{key}"
                yield ArrayPair(tensor, f"{name}<-{peer}:{route}~{peer}", rec.arrays.get(tensor), own)
            ref_key = f"transplant/{peer}/{key}"
            yield ArrayPair(ref_key, f"{peer}~{REFERENCE}<-{peer}", own, ref.arrays.get(ref_key))


def _inference_pairs(sides: Mapping[str, SideRecord]) -> Iterator[ArrayPair]:
    """Each backend's inference entry points on its own bundle against the reference forward of that bundle."""
    ref = sides[REFERENCE]
    expected = {"api/objects": "objects", "api/offsets": "offsets", "api/stitched": "stitched",
                "cli/stitched": "cli_stitched", "torch_cli/stitched": "torch_cli_stitched"}
    for name in BACKENDS:
        rec = sides[name]
        own = {k.split("/", 1)[1] for k in rec.keys("inference/")}
        wanted = {k for k, v in expected.items() if f"inference/{name}/{v}" in ref.arrays}
        for key in sorted(own | wanted):
            ref_key = f"inference/{name}/{expected.get(key, key)}"
            yield ArrayPair(f"inference/{key}", f"{name}~{REFERENCE}<-{name}", rec.arrays.get(f"inference/{key}"),
                            ref.arrays.get(ref_key))


def array_pairs(stage: str, sides: Mapping[str, SideRecord]) -> list[ArrayPair]:
    """Every array comparison of ``stage`` (structured stages return none)."""
    if stage == "inference":
        return list(_inference_pairs(sides))
    if stage == "save_load":
        return list(_save_load_pairs(sides))
    if stage == "transplant":
        return list(_transplant_pairs(sides))
    if stage in ("params_cfg", "bundle_layout"):
        return []
    if stage == "e2e":  # the reconstructions are scored by metrics; the loss histories compare as arrays
        tf, pt = sides["tensorflow"], sides["pytorch"]
        key = "e2e/loss_history"
        return [ArrayPair(key, "tensorflow~pytorch", tf.arrays.get(key), pt.arrays.get(key))]
    return list(_generic_pairs(stage, sides))


# --------------------------------------------------------------------------- structured checks


def _structured(tensor: str, pair: str, diffs: list[str], n_total: int, ctx: str) -> Comparison:
    """A Comparison for a keyed structure, compared exactly: ``diffs`` lists what differs (empty: identical)."""
    passed = not diffs
    if passed:
        body = f"identical ({n_total} entries)"
    else:
        body = f"{len(diffs)}/{n_total} entries differ: " + "; ".join(diffs[:_MAX_LISTED])
        if len(diffs) > _MAX_LISTED:
            body += f"; ... and {len(diffs) - _MAX_LISTED} more"
    return Comparison(tensor, pair, passed, 0.0, 0.0, None, None, len(diffs), n_total, [], [], "json", None,
                      f"{ctx}{tensor} [{pair}]: {body}")


def _json_diff(a: Any, b: Any) -> str | None:
    """Why two JSON values differ (exactly, types included), or None.

    Configuration is compared exactly: over DEFAULT_GATE every params.cfg value and manifest
    entry was bit-identical between the backends and the reference (measured spread 0); the
    only exception, :data:`TRAINED_MANIFEST_FLOATS`, is handled by the caller.
    """
    if type(a) is not type(b):
        return f"{a!r} ({type(a).__name__}) vs {b!r} ({type(b).__name__})"
    if isinstance(a, list):
        if len(a) != len(b):
            return f"length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            why = _json_diff(x, y)
            if why:
                return f"[{i}]: {why}"
        return None
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"keys only in one side: {sorted(set(a) ^ set(b))}"
        for k in sorted(a):
            why = _json_diff(a[k], b[k])
            if why:
                return f"[{k!r}]: {why}"
        return None
    return None if a == b else f"{a!r} vs {b!r}"


def _params_point(
    point: str, ra: SideRecord, rb: SideRecord, pair: str, ctx: str, *, tensor: str | None = None,
    point_b: str | None = None,
) -> Comparison:
    """Key-by-key comparison of one params.cfg snapshot (types, values, array contents)."""
    point_b = point_b or point
    tensor = tensor or f"params_cfg/{point}"
    la, lb = pair.split("~")
    snap_a, snap_b = ra.params_cfg.get(point), rb.params_cfg.get(point_b)
    if snap_a is None or snap_b is None:
        absent = [f"{lb} ({point_b})" if snap_b is None else "", f"{la} ({point})" if snap_a is None else ""]
        return _structured(tensor, pair, [f"snapshot missing in {' and '.join(x for x in absent if x)}"], 1, ctx)
    diffs = [f"key '{k}' missing in {lb}" for k in sorted(set(snap_a) - set(snap_b))]
    diffs += [f"key '{k}' missing in {la}" for k in sorted(set(snap_b) - set(snap_a))]
    for key in sorted(set(snap_a) & set(snap_b)):
        ea, eb = snap_a[key], snap_b[key]
        if key in BACKEND_TAG_PARAMS and ra.side != rb.side:
            diffs += [f"'{key}': {r.side} records {e.get('value')!r}, expected its own name {r.side!r}"
                      for r, e in ((ra, ea), (rb, eb)) if r.side in BACKENDS and e.get("value") != r.side]
            continue
        if ea.get("type") != eb.get("type"):
            diffs.append(f"'{key}': type {ea.get('type')} vs {eb.get('type')}")
            continue
        if ea.get("type") == "ndarray":
            arr_a = ra.arrays.get(f"params_cfg/{point}/{key}")
            arr_b = rb.arrays.get(f"params_cfg/{point_b}/{key}")
            if arr_a is None or arr_b is None:
                diffs.append(f"'{key}': array value missing from the npz of {la if arr_a is None else lb}")
                continue
            cmp = compare_arrays(key, arr_a, arr_b, 0.0, 0.0, pair=pair)
            if not cmp.passed:
                diffs.append(f"'{key}': {cmp.message.split(': ', 1)[1]}")
            continue
        why = _json_diff(ea.get("value"), eb.get("value"))
        if why:
            diffs.append(f"'{key}': {why}")
    return _structured(tensor, pair, diffs, len(set(snap_a) | set(snap_b)), ctx)


def _params_checks(sides: Mapping[str, SideRecord], ctx: str, points: Iterable[str] | None = None) -> list[Comparison]:
    """tensorflow~pytorch at every snapshot point, and each backend~reference at the reference's points."""
    tf, pt, ref = sides["tensorflow"], sides["pytorch"], sides[REFERENCE]
    if points is None:  # the params_cfg stage: the pipeline snapshots (user-path stages judge their own '<stage>/...')
        points = [p for p in sorted(set(tf.params_cfg) | set(pt.params_cfg)) if "/" not in p]
    wanted = list(points)
    checks = [_params_point(p, tf, pt, "tensorflow~pytorch", ctx) for p in wanted]
    ref_points = [p for p in wanted if p in ref.params_cfg]
    if not ref_points:
        checks.append(_structured("params_cfg/reference", f"tensorflow~{REFERENCE}",
                                  [f"the reference recorded none of the snapshots {wanted}"], 1, ctx))
    for name in BACKENDS:
        checks += [_params_point(p, sides[name], ref, f"{name}~{REFERENCE}", ctx) for p in ref_points]
    return checks


def _normalised_members(members: Iterable[str], backend: str) -> list[str]:
    """Bundle member names with this backend's payload files renamed to ``<model>/<payload>``."""
    own = PAYLOAD_MEMBERS.get(backend, ())
    out = set()
    for name in members:
        model, _, fname = name.rpartition("/")
        out.add(f"{model}/<payload>" if model and fname in own else name)
    return sorted(out)


def _bundle_checks(sides: Mapping[str, SideRecord], ctx: str) -> list[Comparison]:
    checks = []
    layouts = {name: sides[name].bundle_layout for name in BACKENDS}
    for name, layout in layouts.items():
        if layout is None or layout.get("manifest") is None:
            why = "no manifest.json in the bundle" if layout else "no bundle layout recorded"
            checks.append(_structured("bundle_layout/backend", f"bundle~{name}", [why], 1, ctx))
            layouts[name] = None
            continue
        if layout.get("read_error"):  # the core reader refuses it; still judge what the archive holds
            checks.append(_structured("bundle_layout/readable", f"bundle~{name}",
                                      [f"ptycho.bundle.read_bundle refuses it: {layout['read_error']}"], 1, ctx))
        manifest_tag = (layout.get("manifest") or {}).get("backend")
        diffs = []
        if layout.get("backend") != name:
            diffs.append(f"layout backend tag {layout.get('backend')!r}, expected {name!r}")
        if manifest_tag != name:
            diffs.append(f"manifest backend {manifest_tag!r}, expected {name!r}")
        checks.append(_structured("bundle_layout/backend", f"bundle~{name}", diffs, 2, ctx))
    tf, pt = layouts["tensorflow"], layouts["pytorch"]
    if tf is None or pt is None:  # already a failing check above
        return checks
    pair = "tensorflow~pytorch"
    m_tf = _normalised_members(tf.get("members", []), "tensorflow")
    m_pt = _normalised_members(pt.get("members", []), "pytorch")
    diffs = [f"'{m}' only in tensorflow" for m in sorted(set(m_tf) - set(m_pt))]
    diffs += [f"'{m}' only in pytorch" for m in sorted(set(m_pt) - set(m_tf))]
    checks.append(_structured("bundle_layout/members", pair, diffs, len(set(m_tf) | set(m_pt)), ctx))

    k_tf, k_pt = set(tf.get("manifest_keys", [])), set(pt.get("manifest_keys", []))
    diffs = [f"'{k}' only in tensorflow" for k in sorted(k_tf - k_pt)]
    diffs += [f"'{k}' only in pytorch" for k in sorted(k_pt - k_tf)]
    checks.append(_structured("bundle_layout/manifest_keys", pair, diffs, len(k_tf | k_pt), ctx))

    man_tf, man_pt = tf.get("manifest") or {}, pt.get("manifest") or {}
    shared = sorted((set(man_tf) & set(man_pt)) - BACKEND_SPECIFIC_MANIFEST_KEYS)
    diffs = []
    for k in shared:
        a, b = man_tf[k], man_pt[k]
        if k in TRAINED_MANIFEST_FLOATS and isinstance(a, float) and isinstance(b, float):
            rtol, atol = DTYPE_DEFAULTS["float32"]
            if not abs(a - b) <= atol + rtol * abs(b):  # NaN fails too
                diffs.append(f"'{k}': {a!r} vs {b!r} (beyond the float32 tolerance rtol {rtol:g}, atol {atol:g})")
        elif why := _json_diff(a, b):
            diffs.append(f"'{k}': {why}")
    checks.append(_structured("bundle_layout/manifest", pair, diffs, len(shared), ctx))

    w_tf, w_pt = tf.get("weights") or {}, pt.get("weights") or {}
    diffs = [f"weight '{w}' only in tensorflow" for w in sorted(set(w_tf) - set(w_pt))]
    diffs += [f"weight '{w}' only in pytorch" for w in sorted(set(w_pt) - set(w_tf))]
    for w in sorted(set(w_tf) & set(w_pt)):
        a, b = w_tf[w], w_pt[w]
        if list(a.get("shape", [])) != list(b.get("shape", [])) or a.get("dtype") != b.get("dtype"):
            diffs.append(f"weight '{w}': {a.get('shape')} {a.get('dtype')} vs {b.get('shape')} {b.get('dtype')}")
    checks.append(_structured("bundle_layout/weights", pair, diffs, len(set(w_tf) | set(w_pt)), ctx))
    return checks


# --------------------------------------------------------------------------- end to end


def _metric_check(tensor: str, pair: str, scores: Mapping[str, float], limits: Mapping[str, tuple[str, float]],
                  ctx: str) -> Comparison:
    """Check ``scores[m] >= limit`` (``'min'``) or ``<= limit`` (``'max'``) for each metric ``m`` of ``limits``."""
    diffs, shown = [], []
    for metric, (kind, limit) in limits.items():
        value = float(scores.get(metric, math.nan))
        ok = value >= limit if kind == "min" else value <= limit
        shown.append(f"{metric} {value:.4g} ({'>=' if kind == 'min' else '<='} {limit:g})")
        if not ok:
            diffs.append(f"{metric} = {value:.4g}, required {'>=' if kind == 'min' else '<='} {limit:g}")
    cmp = _structured(tensor, pair, diffs, len(limits), ctx)
    cmp.message = f"{ctx}{tensor} [{pair}]: " + ("; ".join(diffs) if diffs else "all within band: " + ", ".join(shown))
    return cmp


def _e2e_checks(run_dir: Path, scenario: str, sides: Mapping[str, SideRecord], ctx: str) -> list[Comparison]:
    """Score each backend's stitched reconstruction against the ground truth and the other backend's."""
    inputs_path = Path(run_dir) / scenario / "inputs.npz"
    with np.load(inputs_path, allow_pickle=False) as npz:
        truth = npz["e2e/object_truth"]
        mask = npz["e2e/mask"] if "e2e/mask" in npz.files else None
    recons, checks, scores = {}, [], {}
    for name in BACKENDS:
        arrays = sides[name].arrays
        if "e2e/amplitude" not in arrays or "e2e/phase" not in arrays:
            checks.append(_structured("e2e/reconstruction", f"{name}~truth", ["no e2e/amplitude or e2e/phase"], 1, ctx))
            continue
        recon = arrays["e2e/amplitude"].astype(np.float64) * np.exp(1j * arrays["e2e/phase"].astype(np.float64))
        if recon.shape != truth.shape:
            checks.append(_structured("e2e/reconstruction", f"{name}~truth",
                                      [f"shape {list(recon.shape)} vs truth {list(truth.shape)}"], 1, ctx))
            continue
        nonfinite = int(np.count_nonzero(~np.isfinite(recon)))
        if nonfinite:
            checks.append(_structured("e2e/reconstruction", f"{name}~truth",
                                      [f"{nonfinite} non-finite pixels in the reconstruction"], 1, ctx))
            continue
        recons[name] = recon
        scores[name] = metrics.score_pair(recon, truth, mask)
        floors = E2E_VS_TRUTH_BY_SCENARIO.get(scenario, E2E_VS_TRUTH)
        checks.append(_metric_check("e2e/vs_truth", f"{name}~truth", scores[name], floors, ctx))
    if len(scores) == len(BACKENDS):
        gap = {m: abs(scores["tensorflow"][m] - scores["pytorch"][m]) for m in E2E_GAP}
        checks.append(_metric_check("e2e/gap", "tensorflow~pytorch", gap, E2E_GAP, ctx))
        cross = metrics.score_pair(recons["tensorflow"], recons["pytorch"], mask)
        checks.append(_metric_check("e2e/cross", "tensorflow~pytorch", cross, E2E_CROSS, ctx))
    return checks


# --------------------------------------------------------------------------- judging


def _missing_comparison(p: ArrayPair, ctx: str) -> Comparison:
    la, lb = p.pair.split("~")
    present, absent = (la, lb) if p.a is not None else (lb, la)
    ref = p.a if p.a is not None else p.b
    return Comparison(p.tensor, p.pair, False, 0.0, 0.0, None, None, int(ref.size), int(ref.size), [],
                      list(ref.shape), str(ref.dtype), None,
                      f"{ctx}{p.tensor} [{p.pair}]: present in {present}, missing in {absent}")


def compare_pair(p: ArrayPair, stage: str, overrides: Iterable[ToleranceOverride], ctx: str,
                 scenario: str | None = None) -> Comparison:
    """Compare one :class:`ArrayPair` with the tolerance :func:`resolve_tolerance` picks (for ``scenario``:
    derived from its measured spread, ``conformance/spreads.json``)."""
    if p.a is None or p.b is None:
        return _missing_comparison(p, ctx)
    tol = resolve_tolerance(stage, p.tensor, (p.a.dtype, p.b.dtype), overrides, scenario=scenario, pair=p.pair)
    return compare_arrays(p.tensor, p.a, p.b, tol.rtol, tol.atol, pair=p.pair, scale_atol=tol.scale_atol,
                          context=ctx, source=tol.source, max_mismatch_fraction=tol.max_mismatch_fraction)


def _required_sides(stage: str) -> tuple[str, ...]:
    return BACKENDS + ((REFERENCE,) if stage in REFERENCE_STAGES else ())


def _stage_errors(stage: str, sides: Mapping[str, SideRecord]) -> tuple[list[str], list[str]]:
    """(messages, stderr/traceback tails) for every required side that did not produce ``stage``."""
    messages, tails = [], []
    for name in _required_sides(stage):
        rec = sides[name]
        lost = [(ph, rec.missing[ph]) for ph in STAGE_PHASES[stage] if ph in rec.missing]
        if lost:
            for phase, why in lost:
                messages.append(f"{name} {phase} worker: {why}")
                if rec.stderr.get(phase):
                    tails.append(f"--- {name} {phase} stderr (tail)\n{tail(rec.stderr[phase])}")
            continue
        entry = rec.stages.get(stage)
        if entry is None:
            messages.append(f"{name}: the record has no '{stage}' stage although the scenario lists it")
        elif entry.get("status") != "ok":
            err = entry.get("error") or {}
            messages.append(f"{name}: {err.get('type', 'error')}: {err.get('message', '(no message)')}")
            if err.get("traceback"):
                tails.append(f"--- {name} traceback (tail)\n{tail(err['traceback'])}")
    return messages, tails


def _stage_seconds(stage: str, sides: Mapping[str, SideRecord]) -> float:
    return float(sum(float((rec.stages.get(stage) or {}).get("seconds") or 0.0) for rec in sides.values()))


def _checks(stage: str, scenario: Scenario, run_dir: Path, sides: Mapping[str, SideRecord], ctx: str
            ) -> list[Comparison]:
    overrides = tuple(scenario.tolerance_overrides)
    checks = [compare_pair(p, stage, overrides, ctx, scenario.id) for p in array_pairs(stage, sides)]
    if stage == "configure":
        checks += _params_checks(sides, ctx, points=["after_configure"])
    elif stage == "params_cfg":
        checks += _params_checks(sides, ctx)
    elif stage == "save_load":
        for name in BACKENDS:
            checks.append(_params_point("after_load", sides[name], sides[name], f"{name}:loaded~{name}:saver", ctx,
                                        tensor="params_cfg/after_load", point_b="after_training"))
    elif stage == "bundle_layout":
        checks += _bundle_checks(sides, ctx)
    elif stage in ("physics_ops", "forward"):
        checks += _refusal_checks(stage, sides, ctx)
    elif stage == "e2e":
        checks += _e2e_checks(run_dir, scenario.id, sides, ctx)
    elif stage == "config":
        checks += _config_checks(sides, ctx)
    elif stage == "workflow":
        checks += _workflow_checks(scenario, sides, ctx)
    elif stage == "inference":
        checks += _inference_config_checks(sides, ctx)
    return checks


# --------------------------------------------------------------------------- user paths


def _config_checks(sides: Mapping[str, SideRecord], ctx: str) -> list[Comparison]:
    """Every config door of each backend against the reference's params.cfg for that door, key by key and type by
    type, and tensorflow~pytorch on the doors both run (``conformance.user_paths.DOORS``); the execution config
    each PyTorch execution door handed to the training workflow; each training CLI's refusal of a bad file."""
    from conformance.user_paths import DOORS, REFUSAL_DOORS

    checks = []
    for door, (runners, _fields) in DOORS.items():
        point = f"config/{door}"
        for name in runners:
            checks.append(_params_point(point, sides[name], sides[REFERENCE], f"{name}~{REFERENCE}", ctx,
                                        tensor=f"config/{door}"))
        if set(BACKENDS) <= set(runners):
            checks.append(_params_point(point, sides["tensorflow"], sides["pytorch"], "tensorflow~pytorch", ctx,
                                        tensor=f"config/{door}"))
    expected = _stage_values(sides[REFERENCE], "config")
    for door, want in sorted((expected.get("execution") or {}).items()):
        got = (_stage_values(sides["pytorch"], "config").get("execution") or {}).get(door)
        checks.append(_keyed(f"config/execution/{door}", f"pytorch~{REFERENCE}", got, want, ctx))
    for door, want in sorted((expected.get("refusals") or {}).items()):
        for name in REFUSAL_DOORS[door]:
            got = (_stage_values(sides[name], "config").get("refusals") or {}).get(door)
            checks.append(_keyed(f"config/refusal/{door}", f"{name}~{REFERENCE}", got, want, ctx))
    return checks


def _refusal_checks(stage: str, sides: Mapping[str, SideRecord], ctx: str) -> list[Comparison]:
    """Each backend against the reference on the input contracts (``conformance.contracts``): per malformed call the
    same outcome as the executable spec (computes / refuses / fails), exactly."""
    want = _stage_values(sides[REFERENCE], stage).get("refusals")
    if want is None:
        return []
    checks = []
    for name in BACKENDS:
        got = _stage_values(sides[name], stage).get("refusals") or {}
        diffs = [f"{case}: {name} {got.get(case, 'did not probe')}, {REFERENCE} {want[case]}" for case in sorted(want)
                 if got.get(case) != want[case]]
        diffs += [f"{case}: probed by {name} only" for case in sorted(set(got) - set(want))]
        checks.append(_structured(f"{stage}/refusals", f"{name}~{REFERENCE}", diffs, len(want), ctx))
    return checks


def _stage_values(record: SideRecord, stage: str) -> dict[str, Any]:
    return ((record.stages.get(stage) or {}).get("values")) or {}


def _keyed(tensor: str, pair: str, got: Mapping[str, Any] | None, want: Mapping[str, Any], ctx: str) -> Comparison:
    """Exact key-by-key comparison of a recorded dict with the expected one (types included)."""
    a = pair.split("~")[0]
    if got is None:
        return _structured(tensor, pair, [f"nothing recorded by {a}"], len(want), ctx)
    diffs = [f"key '{k}' missing in {a}" for k in sorted(set(want) - set(got))]
    diffs += [f"unexpected key '{k}' in {a}" for k in sorted(set(got) - set(want))]
    for key in sorted(set(got) & set(want)):
        why = _json_diff(got[key], want[key])
        if why:
            diffs.append(f"'{key}': {why}")
    return _structured(tensor, pair, diffs, len(want), ctx)


def _workflow_checks(scenario: Scenario, sides: Mapping[str, SideRecord], ctx: str) -> list[Comparison]:
    """Which parameters each backend's training loop updates, against the network spec and the scenario's flags."""
    from conformance.user_paths import expected_trainable
    from ptycho.network_spec import network_spec_from_config

    cfg = scenario.training_config()
    want = expected_trainable(network_spec_from_config(scenario.model_config()).param_names(),
                              intensity_scale_trainable=cfg.intensity_scale_trainable,
                              probe_trainable=cfg.probe_trainable)
    checks = []
    for name in BACKENDS:
        got = ((sides[name].stages.get("workflow") or {}).get("values") or {}).get("trainable")
        if got is None:
            diffs = ["no trainable list recorded"]
        else:
            diffs = [f"'{p}' is not trained" for p in sorted(set(want) - set(got))]
            diffs += [f"'{p}' is trained but should be frozen" for p in sorted(set(got) - set(want))]
        checks.append(_structured("workflow/trainable", f"{name}~spec", diffs, len(want), ctx))
    return checks


def _inference_config_checks(sides: Mapping[str, SideRecord], ctx: str) -> list[Comparison]:
    """params.cfg after each backend loads its bundle against the one it saved it with; the torch inference
    payload against the dataclass path with the same values and the bundle's architecture."""
    checks = [
        _params_point("inference/loaded", sides[name], sides[name], f"{name}:loaded~{name}:saved", ctx,
                      tensor="inference/params_cfg", point_b="workflow/saved")
        for name in BACKENDS
    ]
    checks.append(_params_point("inference/payload", sides["pytorch"], sides[REFERENCE], f"pytorch~{REFERENCE}", ctx,
                                tensor="inference/payload"))
    return checks


def _matches(xf: ExpectedFailure, stage: str, check: Comparison) -> bool:
    return (
        xf.stage == stage
        and fnmatch.fnmatchcase(check.tensor, xf.tensor_glob)
        and fnmatch.fnmatchcase(check.pair, xf.backend_pair_glob)
    )


def _apply_expectations(
    stage: str, checks: list[Comparison], expected: Sequence[ExpectedFailure]
) -> tuple[str, str, str | None]:
    """(status, message, expected-failure reason) from the checks and the scenario's expected failures."""
    entries = [xf for xf in expected if xf.stage == stage]
    failing = [c for c in checks if not c.passed]
    unexpected = [c for c in failing if not any(_matches(xf, stage, c) for xf in entries)]
    unmatched = [xf for xf in entries if not any(_matches(xf, stage, c) for c in failing)]
    stale = [xf for xf in unmatched if xf.strict]
    stale_text = "; ".join(
        f"strict expected failure {xf.tensor_glob} [{xf.backend_pair_glob}] ('{xf.reason}') "
        "matched no failing check: the bug is fixed or the entry is stale, remove it"
        for xf in stale
    )
    if unexpected:
        text = "; ".join(c.message for c in unexpected[:3])
        if len(unexpected) > 3:
            text += f"; ... and {len(unexpected) - 3} more failing checks"
        return "fail", text + (f" || {stale_text}" if stale_text else ""), None
    if stale:
        return "xpass", stale_text, "; ".join(xf.reason for xf in stale)
    if failing:
        reasons = "; ".join(dict.fromkeys(xf.reason for xf in entries if xf not in unmatched))
        return "xfail", f"{len(failing)} failing checks, all expected: {reasons}", reasons
    worst = max((c for c in checks if c.max_abs is not None), key=lambda c: c.max_abs, default=None)
    text = f"{len(checks)} checks passed"
    if worst is not None:
        text += f"; largest max abs error {worst.max_abs:.3g} in {worst.tensor} [{worst.pair}]"
    if unmatched:
        text += "; non-strict expected failures that did not occur: " + "; ".join(xf.reason for xf in unmatched)
    return "pass", text, None


def judge_scenario(run_dir: Path, scenario: Scenario, stages: Sequence[str]) -> list[Verdict]:
    """One verdict per stage of ``stages`` for ``scenario`` (a ``conformance.scenarios.Scenario``)."""
    sid = scenario.id
    sides = {name: load_side(run_dir, sid, name) for name in (*BACKENDS, REFERENCE)}
    mutant = next((rec.mutant for rec in sides.values() if rec.mutant), None)
    verdicts = []
    for stage in stages:
        repro = repro_command(sid, stage, mutant)
        if stage not in scenario.stages:
            verdicts.append(Verdict(sid, stage, "not_run", [], f"scenario {sid} does not list stage {stage}", 0.0,
                                    repro))
            continue
        seconds = _stage_seconds(stage, sides)
        messages, tails = _stage_errors(stage, sides)
        ctx = f"{sid} / {stage} / "
        if messages:
            # A bundle the reader refuses is still laid out on disk: judge it, so the diagnosis names the
            # structural check (backend tag, members, manifest keys) and not only the refusal.
            # So is an inference stage where some entry points failed: the others' checks name what differs.
            checks = _checks(stage, scenario, run_dir, sides, ctx) if stage in ("bundle_layout", "inference") else []
            verdicts.append(Verdict(sid, stage, "error", checks, f"{sid} / {stage}: " + " | ".join(messages),
                                    seconds, repro, stderr_tail="\n".join(tails) or None))
            continue
        checks = _checks(stage, scenario, run_dir, sides, ctx)
        if not checks:
            verdicts.append(Verdict(sid, stage, "fail", [], f"{sid} / {stage}: the records hold nothing to compare",
                                    seconds, repro))
            continue
        status, message, reason = _apply_expectations(stage, checks, tuple(scenario.expected_failures))
        verdicts.append(Verdict(sid, stage, status, checks, message, seconds, repro, expected_failure=reason))
    return verdicts


def judge(run_dir: Path, scenarios: Sequence[Scenario], stages: Sequence[str] | None = None) -> list[Verdict]:
    """Judge every scenario x stage of a run from its records (``stages`` default: all, in :data:`STAGES` order)."""
    wanted = list(STAGES) if stages is None else [s for s in STAGES if s in set(stages)]
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stages {unknown}; expected some of {STAGES}")
    out: list[Verdict] = []
    for scenario in scenarios:
        out.extend(judge_scenario(Path(run_dir), scenario, wanted))
    return out


# --------------------------------------------------------------------------- measuring spreads


@dataclass
class Spread:
    """The worst disagreement seen for one tensor of one stage over a set of records.

    ``worst_scaled`` is ``max|a-b| / max(max|a|, max|b|)`` (what a magnitude-scaled ``atol`` must
    cover, :func:`conformance.tolerances.symmetric_scale`), ``worst_fraction`` the largest fraction of a
    tensor's elements outside the element-wise bound of the stage row (what a mismatch budget must cover).
    """

    stage: str
    tensor: str
    n: int = 0
    worst_abs: float = 0.0
    worst_scaled: float = 0.0
    worst_rel: float = 0.0
    worst_fraction: float = 0.0
    where: str = ""

    def add(self, scenario: str, p: ArrayPair, tol: Tolerance) -> None:
        """Fold one finite, same-shape comparison into the worst-case statistics."""
        cmp = compare_arrays(p.tensor, p.a, p.b, tol.rtol, tol.atol, pair=p.pair, scale_atol=tol.scale_atol)
        scaled = element_spread(p.a, p.b, scaled=True, over=None)[0]
        self.n += 1
        self.worst_abs = max(self.worst_abs, cmp.max_abs or 0.0)
        self.worst_rel = max(self.worst_rel, cmp.max_rel or 0.0)
        self.worst_fraction = max(self.worst_fraction, cmp.n_mismatch / max(cmp.n_total, 1))
        if scaled >= self.worst_scaled:
            self.worst_scaled, self.where = scaled, f"{scenario} [{p.pair}]"


def _spread_pairs(run_dir: Path, scenarios: Sequence[Scenario], stages: Sequence[str] | None
                  ) -> Iterator[tuple[Scenario, str, ArrayPair]]:
    """Every finite, same-shape, numeric array pair of the records (the judge fails the others)."""
    wanted = [s for s in STAGES if stages is None or s in stages]
    for scenario in scenarios:
        sides = {name: load_side(Path(run_dir), scenario.id, name) for name in (*BACKENDS, REFERENCE)}
        for stage in wanted:
            if stage not in scenario.stages:
                continue
            for p in array_pairs(stage, sides):
                if p.a is None or p.b is None or p.a.shape != p.b.shape or p.a.dtype != p.b.dtype:
                    continue
                if not np.issubdtype(p.b.dtype, np.number):
                    continue
                if not (np.all(np.isfinite(p.a)) and np.all(np.isfinite(p.b))):
                    continue
                yield scenario, stage, p


def measure_spread(run_dir: Path, scenarios: Sequence[Scenario], stages: Sequence[str] | None = None) -> list[Spread]:
    """Worst errors per stage and tensor over every array pair of the records (the evidence for tolerances).

    Pairs with a missing side, a shape/dtype mismatch or non-finite values are skipped
    (the judge fails those); everything else counts, whatever the verdict.  Judged with the stage rows
    (not the per-scenario tolerances derived from an earlier measurement).
    """
    table: dict[tuple[str, str], Spread] = {}
    for scenario, stage, p in _spread_pairs(run_dir, scenarios, stages):
        tol = resolve_tolerance(stage, p.tensor, (p.a.dtype, p.b.dtype), tuple(scenario.tolerance_overrides))
        table.setdefault((stage, p.tensor), Spread(stage, p.tensor)).add(scenario.id, p, tol)
    return [table[k] for k in sorted(table, key=lambda k: (STAGES.index(k[0]), k[1]))]


def measure_scenario_spreads(run_dir: Path, scenarios: Sequence[Scenario], stages: Sequence[str] | None = None
                             ) -> dict[str, dict[str, dict[str, dict[str, tuple[float, int, int]]]]]:
    """``{scenario: {stage: {tensor: {pair: (d, n_over, n)}}}}`` for every pair a stage row governs.

    ``d`` is normalised as the row says (:func:`conformance.spreads.element_spread`); ``n_over`` counts,
    for rows with a mismatch budget, the elements beyond a tenth of the row's ``atol``.  This is what
    ``python -m conformance spread --write`` stores in ``conformance/spreads.json``.
    """
    out: dict[str, dict[str, dict[str, dict[str, tuple[float, int, int]]]]] = {}
    for scenario, stage, p in _spread_pairs(run_dir, scenarios, stages):
        row = next((e for e in STAGE_TOLERANCES if e.matches(stage, p.tensor)), None)
        if row is None:
            continue
        over = row.atol / 10.0 if row.max_mismatch_fraction else None
        spread = element_spread(p.a, p.b, scaled=row.scale_atol, over=over)
        out.setdefault(scenario.id, {}).setdefault(stage, {}).setdefault(p.tensor, {})[p.pair] = spread
    return out

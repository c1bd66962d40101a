"""Tolerances and the array comparison every numeric check of the gate goes through.

Three layers decide the tolerance of one tensor, first match wins:

1. a scenario's ``ToleranceOverride`` (by scenario id, with a reason and evidence);
2. :data:`STAGE_TOLERANCES` (per stage and tensor pattern, each with the spread measured
   over ``DEFAULT_GATE`` that justifies it, see ``specs/conformance.md``);
3. :data:`DTYPE_DEFAULTS` (torch.testing's per-dtype table; integers and bools exact).

An element passes when ``|a - b| <= atol_eff + rtol * max(|a|, |b|)``, with
``atol_eff = atol * max(max|a|, max|b|)`` for stages that sum many terms (``scale_atol``), else
``atol``: symmetric in the two sides, so an all-zero gradient on one side fails.  Complex arrays
are compared as complex (``|.|`` is the modulus), never as separate real and imaginary parts.
Any NaN or inf in either side fails.  This module never imports tensorflow or torch.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.scenarios import ToleranceOverride
from conformance.verdicts import Comparison

__all__ = [
    "DTYPE_DEFAULTS",
    "E2E_VS_TRUTH_BY_SCENARIO",
    "STAGE_TOLERANCES",
    "StageTolerance",
    "Tolerance",
    "SPREAD_FLOOR",
    "compare_arrays",
    "derive_tolerance",
    "dtype_default",
    "resolve_tolerance",
    "symmetric_scale",
    "worst_slice",
]

#: Per-dtype defaults ``(rtol, atol)``: torch.testing's ``_DTYPE_PRECISIONS`` for floats;
#: complex dtypes use their real component's values; integers, bools and anything
#: non-numeric compare exactly.
DTYPE_DEFAULTS: dict[str, tuple[float, float]] = {
    "float16": (1e-3, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
    "complex64": (1.3e-6, 1e-5),
    "complex128": (1e-7, 1e-7),
}

_N_LOCATIONS = 5


@dataclass(frozen=True)
class Tolerance:
    """The tolerance applied to one tensor and where it came from (shown in messages)."""

    rtol: float
    atol: float
    scale_atol: bool
    source: str
    max_mismatch_fraction: float = 0.0


@dataclass(frozen=True)
class StageTolerance:
    """A stage-specific tolerance and the measurement that justifies it.

    ``measured`` is the worst *normalised* absolute error seen over every scenario of
    ``DEFAULT_GATE`` and every pair of the stage (``max|a-b| / max(max|a|, max|b|)`` when
    ``scale_atol``, else ``max|a-b|``): the largest ``d`` of ``conformance/spreads.json`` among the
    row's tensors.  A row is the *upper bound and fallback*: a scenario's tensor the spread table
    measured gets :func:`derive_tolerance` from its own spread instead;
    ``atol`` is at least 10 x ``measured`` (unless a mismatch budget covers the worst
    elements, below).  ``basis`` says what was measured where and why the spread is what it is.

    ``max_mismatch_fraction`` (default 0: every element must match) lets that fraction of a
    tensor's elements (rounded down, so a tensor with fewer than ``1 / fraction`` elements
    gets no budget) fall outside the element-wise bound; it is for tensors where float32
    noise legitimately flips a few elements by a large amount (Adam steps of parameters whose
    gradient is at noise level) and must be at least 10 x ``measured_fraction``, the worst
    fraction seen.
    """

    stage: str
    tensor_glob: str
    rtol: float
    atol: float
    scale_atol: bool
    measured: float
    basis: str
    max_mismatch_fraction: float = 0.0
    measured_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_mismatch_fraction and self.measured > 0 and self.atol < 10 * self.measured:
            raise ValueError(
                f"stage tolerance {self.stage}/{self.tensor_glob}: atol {self.atol:g} is less than 10x the "
                f"measured spread {self.measured:g}; such a gate would be flaky"
            )
        if self.measured_fraction > 0 and self.max_mismatch_fraction < 10 * self.measured_fraction:
            raise ValueError(
                f"stage tolerance {self.stage}/{self.tensor_glob}: mismatch budget {self.max_mismatch_fraction:g} "
                f"is less than 10x the measured fraction {self.measured_fraction:g}"
            )

    def matches(self, stage: str, tensor: str) -> bool:
        """True when this entry governs ``tensor`` (a ``stage/...`` key) of ``stage``."""
        return stage == self.stage and fnmatch.fnmatchcase(tensor, self.tensor_glob)


_F32 = DTYPE_DEFAULTS["float32"][0]
_GATE = ("DEFAULT_GATE (30 scenarios), CPU, 1 thread per worker, TF 2.21 / torch 2.13, the worse of two machines "
         "(conformance/spreads.json: measured.machines)")
_EDGE = ("float32 image arithmetic in the bilinear sampling and the reassembly sums (both backends sample with "
         "float64 weights since ptycho_tf/physics.py was fixed), amplified where reassembly divides by mask sums "
         "near REASSEMBLY_NORM_EPS at the coverage edge")


def _stage(stage: str, glob: str, atol: float, measured: float, basis: str, *, scale: bool = True,
           rtol: float = _F32, budget: float = 0.0, measured_fraction: float = 0.0) -> StageTolerance:
    return StageTolerance(stage, glob, rtol, atol, scale, measured, f"{basis}; measured over {_GATE}", budget,
                          measured_fraction)


#: Stage tolerances, most specific first (the first entry whose stage and pattern match wins).
#: ``measured`` is the worst spread ``python -m conformance spread`` printed for the entry's tensors
#: over DEFAULT_GATE; each ``atol`` is >= 10 x it.  Tensors not listed use :data:`DTYPE_DEFAULTS`
#: (save_load: a fresh-process load reproduces the saver bit for bit, measured 0).
#: The table with the numbers is in specs/conformance.md.
STAGE_TOLERANCES: tuple[StageTolerance, ...] = (
    # physics ops on identical inputs, each backend vs the float64 reference
    _stage("physics_ops", "physics_ops/*", 1e-5, 3.45e-7, "float32 rounding of sums (FFT, patch extraction, "
           "losses) relative to the largest value"),
    # the network forward from identical canonical weights
    _stage("forward", "forward/padded_object", 5e-5, 4.24e-6, _EDGE),
    _stage("forward", "forward/trimmed_object", 5e-5, 4.24e-6, _EDGE),
    _stage("forward", "forward/object_patches", 5e-5, 3.86e-6, _EDGE),
    _stage("forward", "forward/illuminated", 5e-5, 4.24e-6, _EDGE),
    _stage("forward", "forward/*amplitude", 3e-5, 2.02e-6, "the reassembly-edge error after the FFT (N*N-term sums)"),
    _stage("forward", "forward/pred_intensity", 3e-5, 2.59e-6, "the reassembly-edge error after the FFT, squared"),
    _stage("forward", "forward/*", 5e-5, 4.42e-6, "float32 convolution sums in the CNN (encoded, amp, phase); "
           "worst: the phase of gs1_n128_nfs2, whose largest value is below 1 (the symmetric scale has no floor)"),
    _stage("losses", "losses/*", 1e-5, 4.72e-7, "float32 means over B*N*N*C elements (stored as float64)"),
    # gradients of every trainable canonical parameter, tensorflow~pytorch
    _stage("gradients", "gradients/decoder_phase.*", 0.8, 7.15e-2,
           "phase-branch gradients sum large terms that nearly cancel (a constant phase leaves the intensity "
           "unchanged), so float32 differences in the backward pass show up at a few % of the tensor's largest "
           "component (worst: decoder_phase.head.center.bias in probe_big_false; the median tensor 3.7e-6)"),
    _stage("gradients", "gradients/*", 0.2, 1.25e-2, "sums over every pixel of the batch with partial "
           "cancellation (worst: decoder_amp.head.border.block.conv0.kernel in offcentre_gs2; median 1.4e-6)"),
    # k Adam steps from identical weights on identical batches
    _stage("train_k_steps", "train_k_steps/loss", 1e-2, 2.88e-4, "per-step losses drift as the weights drift "
           "(worst: nfs2_gs2_n32)"),
    _stage("train_k_steps", "train_k_steps/weights/*", 1e-3, 4.33e-3,
           "atol is the learning rate: Adam moves a parameter by about lr per step whatever its gradient's size, "
           "so an element whose gradient is at float32 noise level can step the other way in one backend "
           "(worst |a-b| 4.3e-3 in nfs2_gs2_n32); the budget covers those elements", scale=False, rtol=0.0,
           budget=0.2, measured_fraction=1.56e-2),
    # each side's optimizer alone on identical fixed gradients from zero weights (conformance.optimizer_check)
    _stage("optimizer", "optimizer/*", 1e-4, 7.58e-6,
           "Keras' Adam (tensorflow) computes the bias correction 1 - beta**t in float32 (1 - 0.999f is off by "
           "1.3e-5 relative), so its steps differ from the float64-corrected formula by ~7e-6 relative; "
           "KerasAdam (pytorch) agrees with the reference to ~2e-7"),
    # the forward after transplanting trained weights (memory and file routes, and the reference)
    _stage("transplant", "transplant/*/padded_object", 3e-5, 2.28e-6, _EDGE),
    _stage("transplant", "transplant/*/trimmed_object", 3e-5, 2.28e-6, _EDGE),
    _stage("transplant", "transplant/*/object_patches", 3e-5, 2.28e-6, _EDGE),
    _stage("transplant", "transplant/*/illuminated", 2e-5, 1.47e-6, _EDGE),
    _stage("transplant", "transplant/*/*amplitude", 2e-5, 1.05e-6, "the reassembly-edge error after the FFT"),
    _stage("transplant", "transplant/*/pred_intensity", 2e-5, 1.73e-6, "the reassembly-edge error after the FFT, "
           "squared"),
    _stage("transplant", "transplant/*", 3e-5, 2.88e-6, "float32 convolution sums in the CNN (worst: the phase of "
           "object_big_false_gs2, largest value below 1)"),
    # end to end: the training-loss history of each backend's own workflow
    _stage("e2e", "e2e/loss_history", 2e-4, 1.99e-5, "3 epochs of each workflow from the same initial weights and "
           "batch order; per-epoch mean losses drift with the weights (worst: the gridsize-2 e2e_gs2_n32)"),
    # user paths: each backend's own data pipeline yields the core's batches bit for bit (a copy and a layout
    # transpose of the same float32 values; no arithmetic)
    _stage("data", "data/*", 0.0, 0.0, "batches are gathered, not computed: every element must be identical",
           scale=False, rtol=0.0),
    # each backend's own training loop (a few epochs, non-default schedules and losses), tensorflow~pytorch
    _stage("workflow", "workflow/*_loss", 6e-3, 5.72e-4, "per-epoch mean training / validation losses of the two "
           "loops from the same initial weights and batch order drift with the weights (worst: wf_gs3_warmup)"),
    _stage("workflow", "workflow/weights/*", 0.08, 7.02e-3, "final weights after 9-12 Adam steps: a parameter whose "
           "gradient is at float32 noise level can step the other way in each step (|a-b| up to ~7 lr; worst: "
           "decoder_amp.head.border.block.conv1.kernel in e2e_gs2_n32); the per-epoch learning rate is compared "
           "exactly (float64 default) and which parameters train by name, so this row only has to catch weights the "
           "loop did not update or updated from another loss", scale=False),
    # each backend's inference entry points on its own saved bundle vs the reference forward of its weights
    _stage("inference", "inference/*stitched", 9e-5, 8.49e-6, "stitching averages float32 objects whose "
           "reassembly-edge error (below) is damped by the central crop, after multiplying in the common tilt "
           "fitted to the patterns (ptycho.common_tilt): a global fit, so a float32 difference anywhere in the "
           "objects moves the tilt by ~1e-7 rad/px, which the field turns into up to 8.5e-6 (worst: wf_gs3_warmup, "
           "the CLI route; 9.72e-7 before the fit)"),
    _stage("inference", "inference/*", 4e-5, 3.19e-6, _EDGE + " (trained weights; worst: wf_gs3_warmup objects)"),
)


def dtype_default(*dtypes: np.dtype | str) -> Tolerance:
    """The loosest default over ``dtypes`` (exact for ints, bools and non-numeric dtypes)."""
    rtol = atol = 0.0
    names = []
    for dt in dtypes:
        name = np.dtype(dt).name
        names.append(name)
        r, a = DTYPE_DEFAULTS.get(name, (0.0, 0.0))
        rtol, atol = max(rtol, r), max(atol, a)
    label = "/".join(dict.fromkeys(names))
    return Tolerance(rtol, atol, False, f"{label} default" if rtol or atol else f"{label} exact")


#: The smallest tolerance a measured spread can derive: 1e-6 of the larger side's largest value for scaled
#: rows (about 8 float32 ulps of it), 1e-6 absolute otherwise.  A tensor the backends compute bit for bit
#: (spread 0) gets this, not 0, so a different summation order on another CPU does not fail the gate.
SPREAD_FLOOR = 1e-6


def _ceil_1sig(x: float) -> float:
    """``x`` rounded up to one significant digit (3.45e-6 -> 4e-6; 0 -> 0)."""
    if x <= 0:
        return 0.0
    exp = math.floor(math.log10(x))
    mant = math.ceil(round(x / 10.0**exp, 9))
    return float(f"{mant}e{exp}")


def derive_tolerance(entry: StageTolerance, spread: tuple[float, int, int]) -> Tolerance | None:
    """The tolerance of one scenario's tensor and pair from its measured clean spread ``(d, n_over, n)``.

    ``atol`` = max(:data:`SPREAD_FLOOR`, 10 x ``d`` rounded up to one significant digit), with the stage
    row's ``rtol`` and scaling and no mismatch budget, when that is within the row's ``atol``.  A tensor
    of a row with a mismatch budget (Adam weights) that has elements beyond a tenth of the row's ``atol``
    (``n_over`` > 0: parameters whose gradient is at float32 noise level, which Adam can step either way)
    keeps the row (``atol`` = lr, its budget).  None when the table is worse than the row (a stale
    table: the row applies and ``tests/conformance/test_tolerances.py`` fails).
    """
    d, n_over, _n = spread
    if entry.atol == 0.0 and entry.rtol == 0.0 and d == 0.0:  # an exact row (data batches): stays exact
        return Tolerance(0.0, 0.0, entry.scale_atol, f"stage tolerance {entry.tensor_glob} (exact; measured 0)")
    bound = max(SPREAD_FLOOR, _ceil_1sig(10.0 * d))
    if bound <= entry.atol and not n_over:
        return Tolerance(entry.rtol, bound, entry.scale_atol,
                         f"10 x this scenario's clean spread {d:.3g} (conformance/spreads.json)")
    if entry.max_mismatch_fraction and n_over:
        return Tolerance(entry.rtol, entry.atol, entry.scale_atol,
                         f"stage tolerance {entry.tensor_glob} (this scenario has {n_over} noise-level elements)",
                         entry.max_mismatch_fraction)
    return None


def resolve_tolerance(
    stage: str,
    tensor: str,
    dtypes: Iterable[np.dtype | str],
    overrides: Iterable[ToleranceOverride] = (),
    *,
    table: Iterable[StageTolerance] = STAGE_TOLERANCES,
    scenario: str | None = None,
    pair: str | None = None,
    spreads: Mapping[str, Any] | None = None,
) -> Tolerance:
    """The tolerance for ``tensor`` of ``stage``: scenario override, else the scenario's measured spread,
    else stage table, else dtype default.

    ``overrides`` are the scenario's ``ToleranceOverride`` entries; one without a reason or evidence raises
    ``ValueError`` (an unexplained tolerance bump is exactly what makes a gate
    untrustworthy).  An override keeps the stage entry's magnitude scaling and mismatch budget.
    With ``scenario`` and ``pair`` given, a tensor the stage table governs and the spread table
    (``spreads``, default :func:`conformance.spreads.load_spreads`) measured for that scenario and pair
    gets :func:`derive_tolerance`; without an entry (a new scenario or tensor) the stage row applies.
    """
    entry = next((e for e in table if e.matches(stage, tensor)), None)
    scale = entry.scale_atol if entry is not None else False
    budget = entry.max_mismatch_fraction if entry is not None else 0.0
    for ov in overrides:
        if ov.stage != stage or not fnmatch.fnmatchcase(tensor, ov.tensor_glob):
            continue
        reason, evidence = str(ov.reason or "").strip(), str(ov.evidence or "").strip()
        if not reason or not evidence:
            raise ValueError(f"tolerance override {stage}/{ov.tensor_glob} lacks a reason or the evidence for it")
        return Tolerance(float(ov.rtol), float(ov.atol), scale, f"override: {reason}", budget)
    if entry is not None:
        if scenario is not None and pair is not None:
            from conformance.spreads import load_spreads, lookup

            measured = lookup(load_spreads() if spreads is None else spreads, scenario, stage, tensor, pair)
            derived = derive_tolerance(entry, measured) if measured is not None else None
            if derived is not None:
                return derived
        return Tolerance(entry.rtol, entry.atol, entry.scale_atol, f"stage tolerance {entry.tensor_glob}", budget)
    return dtype_default(*dtypes)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _nonfinite_summary(label: str, arr: np.ndarray) -> str | None:
    if not np.issubdtype(arr.dtype, np.inexact):
        return None
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    if not n_nan and not n_inf:
        return None
    return f"{label}: {n_nan} NaN, {n_inf} inf"


def worst_slice(diff: np.ndarray, location: tuple[int, ...]) -> np.ndarray | None:
    """A 2-D slice of ``diff`` through ``location`` along its two longest axes (None for 0-d)."""
    if diff.ndim == 0:
        return None
    if diff.ndim == 1:
        return diff[np.newaxis, :].astype(np.float32)
    axes = sorted(sorted(range(diff.ndim), key=lambda i: (-diff.shape[i], i))[:2])
    index = tuple(slice(None) if i in axes else location[i] for i in range(diff.ndim))
    return np.asarray(diff[index], dtype=np.float32)


def _structure_failure(
    name: str, pair: str, a: np.ndarray, b: np.ndarray, rtol: float, atol: float, what: str, context: str
) -> Comparison:
    la, lb = _labels(pair)
    detail = f"{la} {list(a.shape)} {a.dtype} vs {lb} {list(b.shape)} {b.dtype}"
    return Comparison(
        tensor=name,
        pair=pair,
        passed=False,
        rtol=rtol,
        atol=atol,
        max_abs=None,
        max_rel=None,
        n_mismatch=max(a.size, b.size),
        n_total=max(a.size, b.size),
        mismatch_locations=[],
        shape=list(b.shape),
        dtype=str(b.dtype),
        nonfinite=None,
        message=f"{context}{name} [{pair}]: {what} differs: {detail}",
    )


def _labels(pair: str) -> tuple[str, str]:
    la, _, lb = pair.partition("~")
    return la or "a", lb or "b"


def symmetric_scale(a: np.ndarray, b: np.ndarray) -> float:
    """``max(max|a|, max|b|)`` over the finite elements (0.0 when both are empty or all zero).

    What a scaled ``atol`` multiplies: the larger of the two sides, so swapping them never changes a
    verdict, and a tensor that is all zeros on one side fails against a non-zero other side (``|a - b|``
    then reaches the scale itself, far above any float32 ``atol``).  ``|.|`` is the modulus for complex.
    """
    mags = [np.abs(x[np.isfinite(x)]) for x in (np.asarray(a), np.asarray(b))]
    return float(max((m.max(initial=0.0) for m in mags), default=0.0))


def compare_arrays(
    name: str,
    a: np.ndarray,
    b: np.ndarray,
    rtol: float,
    atol: float,
    *,
    pair: str = "a~b",
    scale_atol: bool = False,
    context: str = "",
    source: str = "",
    max_mismatch_fraction: float = 0.0,
) -> Comparison:
    """Compare ``a`` and ``b`` element-wise, symmetrically; never raises on bad data.

    Shape or dtype mismatch, any NaN/inf in either array, or any element with
    ``|a - b| > atol_eff + rtol * max(|a|, |b|)`` fails, where ``atol_eff = atol * max(max|a|, max|b|)``
    (:func:`symmetric_scale`) when ``scale_atol``, else ``atol``: swapping ``a`` and ``b`` gives the same
    verdict, and an all-zero side against a non-zero one fails.  ``context`` prefixes the message (e.g.
    ``"scenario s / stage forward / "``); ``source`` names where the tolerance came from.
    ``max_mismatch_fraction`` allows ``floor(fraction * size)`` finite elements outside the
    bound (see :class:`StageTolerance`); non-finite values always fail.
    The result carries max abs/rel error over the finite elements, the mismatch count,
    the first five mismatch locations and, when it fails, a 2-D ``|a - b|`` slice through the worst one.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    la, lb = _labels(pair)
    if a.shape != b.shape:
        return _structure_failure(name, pair, a, b, rtol, atol, "shape", context)
    if a.dtype != b.dtype:
        return _structure_failure(name, pair, a, b, rtol, atol, "dtype", context)

    numeric = np.issubdtype(b.dtype, np.number) or b.dtype == np.bool_
    if not numeric:
        equal = a == b
        mismatch = ~np.asarray(equal, dtype=bool)
        n_mismatch = int(np.count_nonzero(mismatch))
        locations = [list(map(int, loc)) for loc in np.argwhere(mismatch)[:_N_LOCATIONS]]
        passed = n_mismatch == 0
        message = (
            f"{context}{name} [{pair}]: "
            + ("equal" if passed else f"{n_mismatch}/{b.size} elements differ; first at {locations}")
        )
        return Comparison(name, pair, passed, rtol, atol, None, None, n_mismatch, int(b.size), locations,
                          list(b.shape), str(b.dtype), None, message)

    wide = np.complex128 if np.iscomplexobj(b) else np.float64
    aw = a.astype(wide)
    bw = b.astype(wide)
    nonfinite_parts = [s for s in (_nonfinite_summary(la, a), _nonfinite_summary(lb, b)) if s]
    finite = np.isfinite(aw) & np.isfinite(bw)
    diff = np.where(finite, np.abs(aw - bw), 0.0)
    mag_b = np.where(finite, np.abs(bw), 0.0)
    mag = np.maximum(np.where(finite, np.abs(aw), 0.0), mag_b)  # symmetric: the larger side, element-wise
    scale = symmetric_scale(aw, bw) if scale_atol else 1.0
    atol_eff = atol * scale
    mismatch = ~finite | (diff > atol_eff + rtol * mag)
    n_mismatch = int(np.count_nonzero(mismatch))
    n_total = int(b.size)
    locations = [list(map(int, loc)) for loc in np.argwhere(mismatch)[:_N_LOCATIONS]]

    max_abs = float(diff.max(initial=0.0)) if finite.any() else None
    nonzero = finite & (mag_b > 0)
    max_rel = float((diff[nonzero] / mag_b[nonzero]).max()) if nonzero.any() else None
    nonfinite = "; ".join(nonfinite_parts) or None
    budget = int(max_mismatch_fraction * n_total)
    passed = nonfinite is None and n_mismatch <= budget
    worst = None  # the heatmap slice, only for failures
    tol_text = f"rtol {rtol:.3g}, atol {atol:.3g}"
    if scale_atol:
        tol_text += f" x max(max|{la}|, max|{lb}|) {scale:.3g} = {atol_eff:.3g}"
    if max_mismatch_fraction:
        tol_text += f", at most {budget} elements ({max_mismatch_fraction:.3g}) outside"
    if source:
        tol_text += f"; {source}"
    head = f"{context}{name} [{pair}]"
    stats = f"max abs {_fmt(max_abs)}, max rel {_fmt(max_rel)}"
    if passed:
        outside = f"{n_mismatch}/{n_total} elements outside the element-wise bound (within budget); " * bool(n_mismatch)
        message = f"{head}: within tolerance, {outside}{stats} ({tol_text})"
    else:
        pct = 100.0 * n_mismatch / max(n_total, 1)
        where = ""
        if max_abs is not None and diff.ndim:
            worst_loc = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
            worst = worst_slice(diff, worst_loc)
            where = f" at {list(worst_loc)}"
        message = (
            f"{head}: {n_mismatch}/{n_total} elements ({pct:.3g}%) outside |{la}-{lb}| <= atol + "
            f"rtol*max(|{la}|,|{lb}|) "
            f"({tol_text}); {stats}{where}; first mismatches at {locations}"
        )
        if nonfinite:
            message += f"; non-finite values: {nonfinite}"
    return Comparison(
        tensor=name,
        pair=pair,
        passed=passed,
        rtol=float(rtol),
        atol=float(atol),
        max_abs=max_abs,
        max_rel=max_rel,
        n_mismatch=n_mismatch,
        n_total=n_total,
        mismatch_locations=locations,
        shape=list(b.shape),
        dtype=str(b.dtype),
        nonfinite=nonfinite,
        message=message,
        worst=worst,
    )


#: End-to-end bands (``ptycho.evaluation.score_pair`` keys -> ``('min'|'max', limit)``), measured on
#: e2e_gs1_n32 (3 epochs, 64 groups).  Margins: 10 x in the deficit ``1 - score`` for SSIM / FRC area,
#: 10 dB for PSNR, 10 x the measured gap.  After 3 epochs the reconstructions barely resemble the
#: object (amplitude SSIM 0.035), so the ground-truth floors only catch a collapsed reconstruction;
#: the two backends agreeing with each other (``E2E_CROSS``, ``E2E_GAP``) is the real check.
#: Each backend's reconstruction against the ground truth (measured: tensorflow / pytorch) ...
#: The phase floor was 0.1 (measured 0.2003 / 0.2011) until stitching multiplied in the common tilt the
#: patterns call for (``ptycho.common_tilt``, stop 19): for this 3-epoch network, whose objects do not yet
#: resemble the truth, the best-fitting tilt is (-0.011, -0.003) rad/px and the phase SSIM 0.068 / 0.067;
#: trained networks gain from it (specs/physics.md §21).  The floor stays "about half the measured".
E2E_VS_TRUTH: dict[str, tuple[str, float]] = {
    "phase_ssim": ("min", 0.03),  # 0.0678 / 0.0668
    "amp_psnr": ("min", 4.0),  # 7.94 / 7.99 dB
}
#: Scenarios whose short run reconstructs less than e2e_gs1_n32 (same rule: about half the measured score).
#: e2e_gs2_n32 trains on 28 groups for 3 epochs with a frozen intensity scale and a trainable probe (its
#: point is the two gridsize-2 workflows agreeing, checked by E2E_GAP and E2E_CROSS): amplitude PSNR
#: 2.414 / 2.413 dB, phase SSIM 0.1193 / 0.1187 (tensorflow / pytorch).
E2E_VS_TRUTH_BY_SCENARIO: dict[str, dict[str, tuple[str, float]]] = {
    "e2e_gs2_n32": {"phase_ssim": ("min", 0.06), "amp_psnr": ("min", 1.2)},
}
#: ... the absolute gap between the two backends' scores against the ground truth ...
E2E_GAP: dict[str, tuple[str, float]] = {
    "amp_ssim": ("max", 0.01),  # 7e-4
    "phase_ssim": ("max", 0.01),  # 8e-4
    "amp_psnr": ("max", 0.6),  # 0.051 dB
    "phase_psnr": ("max", 0.6),  # 0.053 dB
    "frc_area": ("max", 0.02),  # 1.4e-3
}
#: ... and the two reconstructions scored against each other.
E2E_CROSS: dict[str, tuple[str, float]] = {
    "amp_ssim": ("min", 0.999),  # 0.9999
    "phase_ssim": ("min", 0.96),  # 0.9961
    "frc_area": ("min", 0.995),  # 0.9995
    "amp_psnr": ("min", 33.0),  # 43.3 dB
}

"""The scenario registry of the conformance gate: what runs, on which data, with which config.

A :class:`Scenario` is declarative and JSON round-trippable (``to_dict`` / ``from_dict``):

* ``data`` (:class:`DataSpec`): the simulated dataset and its grouping (``N``, ``gridsize``,
  ``n_groups`` = the batch ``B`` of the parity stages, ``K``, object kind, photon count, seed, and
  ``offsets``: ``'group'`` = the core grouping's ``coords_relative``, ``'off_centre'`` = those plus a
  fixed sub-pixel shift ``shift_xy`` (pixels, ``(x, y)``) kept within the canvas margin
  ``|offset| <= (P - N) / 2``);
* ``model``: ``ModelConfig`` fields (``N`` and ``gridsize`` always equal the data's);
* ``training``: ``TrainingConfig`` fields plus the harness keys of :data:`HARNESS_TRAINING_KEYS`
  (``k_steps``: Adam steps of ``train_k_steps``; ``lr``: their learning rate);
* ``stages``: which stages of :data:`STAGES` run (the judge reports the others as ``not_run``);
* ``tolerance_overrides`` / ``expected_failures``: per-scenario exceptions, each with a reason
  (and, for tolerances, the measured spread that justifies it).

:data:`REGISTRY` holds every scenario by id; :data:`DEFAULT_GATE` is the ordered tuple of ids
``nox -s parity`` runs.  :func:`make_scenario` is the factory the registry (and the hypothesis
strategies) build scenarios with.  This module imports neither tensorflow nor torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

from ptycho import conventions
from ptycho.config.config import ModelConfig, TrainingConfig

__all__ = [
    "BACKENDS",
    "CORE",
    "DEFAULT_GATE",
    "E2E",
    "FULL",
    "HARNESS_TRAINING_KEYS",
    "OFF_CENTRE_SHIFT",
    "PHASES",
    "PHASE_STAGES",
    "REFERENCE",
    "REFERENCE_STAGES",
    "REGISTRY",
    "SIDES",
    "STAGES",
    "STAGE_REQUIRES",
    "TRAIN",
    "USER",
    "DataSpec",
    "ExpectedFailure",
    "Scenario",
    "ToleranceOverride",
    "make_scenario",
    "scenarios_from_ids",
    "stage_closure",
]

# --------------------------------------------------------------------------- stages and sides
#: Every stage, in pipeline order (the names used in records, verdicts and reports).
STAGES: tuple[str, ...] = (
    "configure",
    "physics_ops",
    "forward",
    "losses",
    "gradients",
    "train_k_steps",
    "optimizer",
    "save_load",
    "transplant",
    "params_cfg",
    "bundle_layout",
    "e2e",
    "data",
    "config",
    "workflow",
    "inference",
)
BACKENDS: tuple[str, ...] = ("tensorflow", "pytorch")
REFERENCE = "reference"
#: The three kinds of worker: the two backends and the NumPy reference.
SIDES: tuple[str, ...] = (*BACKENDS, REFERENCE)
PHASES: tuple[str, ...] = ("produce", "consume")
#: Stages each phase records (``params_cfg`` in both: snapshots after configure/training, after load).
PHASE_STAGES: dict[str, tuple[str, ...]] = {
    "produce": (
        "configure", "physics_ops", "forward", "losses", "gradients", "train_k_steps", "optimizer", "save_load",
        "bundle_layout", "params_cfg", "e2e", "data", "config", "workflow",
    ),
    "consume": ("save_load", "transplant", "params_cfg", "inference"),
}  # fmt: skip
#: Stages the NumPy reference runs (it has no gradients, bundle or workflow; its optimiser is the formula
#: ``ptycho.reference.optim.adam_step``, stepped on the fixed gradients of the ``optimizer`` stage).
REFERENCE_STAGES: frozenset[str] = frozenset({"configure", "physics_ops", "forward", "losses", "optimizer",
                                              "transplant", "params_cfg", "data", "config", "inference"})
#: A stage needs these stages of the same scenario to have run first (they are added by :func:`stage_closure`).
STAGE_REQUIRES: dict[str, tuple[str, ...]] = {
    "transplant": ("save_load",),  # the peer's bundle and trained weights are written by its save_load
    "bundle_layout": ("save_load",),  # the layout is read from the bundle save_load wrote
    "inference": ("workflow",),  # the bundles reloaded are the ones each backend's own workflow saved
}

#: The stage sets the registry uses: CORE (no training, no bundle), TRAIN (+ k Adam steps and the optimizer
#: alone on fixed gradients), FULL (+ bundle, fresh-process load, transplant, layout), E2E (each backend's own
#: workflow).
CORE: tuple[str, ...] = ("configure", "physics_ops", "forward", "losses", "gradients", "params_cfg")
TRAIN: tuple[str, ...] = (*CORE[:-1], "train_k_steps", "optimizer", "params_cfg")
FULL: tuple[str, ...] = (*CORE[:-1], "train_k_steps", "optimizer", "save_load", "transplant", "params_cfg",
                         "bundle_layout")
E2E: tuple[str, ...] = ("configure", "params_cfg", "e2e")
#: Each backend's user-facing code (specs/conformance.md, "User paths"): its own data pipeline, every config
#: door, its own training loop (the run e2e scores) and its inference entry points on the saved bundles.
USER: tuple[str, ...] = ("data", "config", "workflow", "inference")

#: Keys of ``Scenario.training`` that belong to the harness, not to ``TrainingConfig``.
HARNESS_TRAINING_KEYS: dict[str, Any] = {"k_steps": 3, "lr": conventions.LEARNING_RATE}
#: The fixed sub-pixel shift ``(x, y)`` in pixels added to every position of an off-centre scenario
#: (different magnitudes and signs on x and y, so sign flips and x/y swaps change the result).
OFF_CENTRE_SHIFT: tuple[float, float] = (2.25, -1.5)

_MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
_TRAINING_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainingConfig)) - {"model"}
#: TrainingConfig fields the harness sets itself (from the data spec and the run directory).
_HARNESS_SET_TRAINING = frozenset({"train_data_file", "test_data_file", "output_dir", "nphotons", "neighbor_count",
                                   "subsample_seed"})


def stage_closure(stages: Iterable[str], available: Iterable[str]) -> tuple[str, ...]:
    """``stages`` plus everything they require (:data:`STAGE_REQUIRES`) that ``available`` lists, in STAGES order."""
    avail = set(available)
    want = set(stages)
    todo = list(want)
    while todo:
        for req in STAGE_REQUIRES.get(todo.pop(), ()):
            if req in avail and req not in want:
                want.add(req)
                todo.append(req)
    return tuple(s for s in STAGES if s in want)


# --------------------------------------------------------------------------- exceptions to the defaults
@dataclass(frozen=True)
class ToleranceOverride:
    """A looser (or tighter) tolerance for the tensors of one stage of one scenario.

    ``tensor_glob`` is an ``fnmatch`` pattern over tensor names (``'forward/pred_*'``).  ``reason``
    says why the default does not fit and ``evidence`` gives the measured spread that justifies
    ``rtol`` / ``atol`` (e.g. ``'max rel err 3.1e-6 over 20 runs (conformance.compare.measure_spread)'``);
    both are mandatory (``ValueError``).
    """

    stage: str
    tensor_glob: str
    rtol: float
    atol: float
    reason: str
    evidence: str

    def __post_init__(self) -> None:
        _check_stage(self.stage, "ToleranceOverride")
        if not str(self.reason).strip():
            raise ValueError(f"ToleranceOverride {self.stage}/{self.tensor_glob} needs a reason")
        if not str(self.evidence).strip():
            raise ValueError(
                f"ToleranceOverride {self.stage}/{self.tensor_glob} needs evidence: the measured spread that "
                "justifies it (conformance.compare.measure_spread)"
            )
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"ToleranceOverride.{name} must be a finite number >= 0, got {v!r}")


@dataclass(frozen=True)
class ExpectedFailure:
    """A check of one stage that is known to fail, with the reason.

    Matches failing checks whose tensor matches ``tensor_glob`` and whose pair
    (``'tensorflow~pytorch'``, ...) matches ``backend_pair_glob``.  ``strict`` entries that match
    no failure make the stage fail (``xpass``): the bug is fixed or the entry is stale.  Only
    hypothesis-driven scenarios use ``strict=False``.  Everything after ``tensor_glob`` is
    keyword-only.
    """

    stage: str
    tensor_glob: str
    _: KW_ONLY
    reason: str
    backend_pair_glob: str = "*"
    strict: bool = True

    def __post_init__(self) -> None:
        _check_stage(self.stage, "ExpectedFailure")
        if not str(self.reason).strip():
            raise ValueError(f"ExpectedFailure {self.stage}/{self.tensor_glob} needs a reason")


def _check_stage(stage: str, what: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"{what}: unknown stage {stage!r}; expected one of {STAGES}")


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class DataSpec:
    """The simulated dataset of a scenario and how it is grouped.

    Attributes:
        N: patch / detector size in pixels (32, 64 or 128).
        gridsize: groups of ``gridsize x gridsize`` positions, ``C = gridsize**2`` channels.
        n_groups: ``B``, the batch of the parity stages (forward, losses, gradients, each
            training step).
        K: nearest neighbours a group is drawn from (``K >= C - 1``).
        object_kind: ``'lines'`` or ``'grf'`` (``ptycho.simulate``).
        nphotons: mean photons per pattern; sets ``intensity_scale = sqrt(nphotons) / (N/2)``.
        seed: root seed of the simulation, the grouping and the canonical initial weights.
        offsets: ``'group'`` (``coords_relative``) or ``'off_centre'`` (plus ``shift_xy``).
        shift_xy: ``(x, y)`` shift in pixels for ``'off_centre'``.
        n_positions: scan positions simulated (default: enough for ``B * (1 + k_steps)``
            groups); for e2e scenarios the training scan.
        n_test_positions: e2e only: extra positions of the same object, the test scan.
        bad_pixels: detector pixels marked bad (``RawData.bad_pixels``; 0 = no mask); they hold
            hot values in the simulated data and every side leaves them out of the losses.
    """

    N: int
    gridsize: int
    n_groups: int
    K: int = 7
    object_kind: str = "lines"
    nphotons: float = 1e9
    seed: int = 0
    offsets: Literal["group", "off_centre"] = "group"
    shift_xy: tuple[float, float] = OFF_CENTRE_SHIFT
    n_positions: int | None = None
    n_test_positions: int | None = None
    bad_pixels: int = 0

    def __post_init__(self) -> None:
        if self.N not in conventions.SUPPORTED_N:
            raise ValueError(f"DataSpec.N={self.N!r}: expected one of {conventions.SUPPORTED_N}")
        for name in ("gridsize", "n_groups", "K"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DataSpec.{name}={v!r}: expected a positive integer")
        if self.gridsize > 1 and self.K < self.C - 1:
            raise ValueError(f"DataSpec.K={self.K} < C - 1 = {self.C - 1}: a group needs C - 1 neighbours")
        if self.offsets not in ("group", "off_centre"):
            raise ValueError(f"DataSpec.offsets={self.offsets!r}: expected 'group' or 'off_centre'")
        object.__setattr__(self, "shift_xy", tuple(float(v) for v in self.shift_xy))
        if len(self.shift_xy) != 2 or max(abs(v) for v in self.shift_xy) > self.margin:
            raise ValueError(f"DataSpec.shift_xy={self.shift_xy}: expected (x, y) with |v| <= (P - N)/2 = "
                             f"{self.margin}")
        if not (isinstance(self.nphotons, int | float) and self.nphotons > 0):
            raise ValueError(f"DataSpec.nphotons={self.nphotons!r}: expected a positive photon count")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"DataSpec.seed={self.seed!r}: expected an integer >= 0")
        b = self.bad_pixels
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < self.N * self.N:
            raise ValueError(f"DataSpec.bad_pixels={b!r}: expected an integer in [0, N*N)")

    @property
    def C(self) -> int:
        """Channels per group, ``gridsize**2``."""
        return conventions.channels(self.gridsize)

    @property
    def P(self) -> int:
        """Canvas size ``conventions.padded_size(N, gridsize)`` in pixels."""
        return conventions.padded_size(self.N, self.gridsize)

    @property
    def margin(self) -> float:
        """``(P - N) / 2``: the largest |offset| (pixels) that keeps a patch on the canvas."""
        return (self.P - self.N) / 2.0


# --------------------------------------------------------------------------- scenarios
@dataclass(frozen=True)
class Scenario:
    """One declarative conformance case (module docstring).  Validated on construction (``ValueError``)."""

    id: str
    data: DataSpec
    model: Mapping[str, Any]
    training: Mapping[str, Any]
    stages: tuple[str, ...]
    tolerance_overrides: tuple[ToleranceOverride, ...] = ()
    expected_failures: tuple[ExpectedFailure, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not self.id or not all(ch.isalnum() or ch in "_-." for ch in self.id):
            raise ValueError(f"scenario id {self.id!r}: use letters, digits, '_', '-' and '.' only")
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "model", dict(self.model))
        object.__setattr__(self, "training", dict(self.training))
        object.__setattr__(self, "tolerance_overrides", tuple(self.tolerance_overrides))
        object.__setattr__(self, "expected_failures", tuple(self.expected_failures))
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or len(set(self.stages)) != len(self.stages) or not self.stages:
            raise ValueError(f"scenario {self.id}: stages {self.stages} must be distinct names from {STAGES}")
        missing = [s for s in stage_closure(self.stages, STAGES) if s not in self.stages]
        if missing:
            raise ValueError(f"scenario {self.id}: stages {self.stages} lack the required {missing}")
        bad = sorted(set(self.model) - _MODEL_FIELDS)
        if bad:
            raise ValueError(f"scenario {self.id}: unknown ModelConfig fields {bad}")
        if self.model.get("N") != self.data.N or self.model.get("gridsize") != self.data.gridsize:
            raise ValueError(f"scenario {self.id}: model N/gridsize must equal the data's ({self.data.N}, "
                             f"{self.data.gridsize})")
        bad = sorted(set(self.training) - _TRAINING_FIELDS - set(HARNESS_TRAINING_KEYS))
        if bad:
            raise ValueError(f"scenario {self.id}: unknown training keys {bad}")
        bad = sorted(set(self.training) & _HARNESS_SET_TRAINING)
        if bad:
            raise ValueError(f"scenario {self.id}: training keys {bad} are set by the harness from the data spec")
        k = self.k_steps
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"scenario {self.id}: k_steps={k!r} must be a positive integer")
        for entry in (*self.tolerance_overrides, *self.expected_failures):
            if entry.stage not in self.stages:
                raise ValueError(f"scenario {self.id}: {type(entry).__name__} for stage {entry.stage!r}, "
                                 "which the scenario does not run")
        self.model_config()  # validates every value (ConfigError is a ValueError)

    def __hash__(self) -> int:  # model/training are dicts: hash the canonical JSON instead
        return hash(self.to_json())

    # ------------------------------------------------------------------ derived
    @property
    def batch(self) -> int:
        """``B``: groups per batch of the parity stages."""
        return self.data.n_groups

    @property
    def C(self) -> int:
        return self.data.C

    @property
    def k_steps(self) -> int:
        """Adam steps of ``train_k_steps``."""
        return self.training.get("k_steps", HARNESS_TRAINING_KEYS["k_steps"])

    @property
    def lr(self) -> float:
        """Learning rate of ``train_k_steps``."""
        return float(self.training.get("lr", HARNESS_TRAINING_KEYS["lr"]))

    @property
    def loss_weights(self) -> dict[str, float]:
        """``{'nll_weight', 'mae_weight'}`` of the losses, gradients and training steps."""
        cfg = self.training_config()
        return {"nll_weight": float(cfg.nll_weight), "mae_weight": float(cfg.mae_weight)}

    def model_config(self) -> ModelConfig:
        """The ``ModelConfig`` of ``model``."""
        return ModelConfig(**self.model)

    def training_fields(self) -> dict[str, Any]:
        """Every ``TrainingConfig`` field the scenario sets (its ``training`` entries and the data-derived ones).

        ``n_groups`` defaults to ``data.n_groups``; ``nphotons``, ``neighbor_count`` (``K``) and
        ``subsample_seed`` (the data seed: the workflow seed) always come from the data spec.
        """
        out = {k: v for k, v in self.training.items() if k not in HARNESS_TRAINING_KEYS}
        out.setdefault("n_groups", self.data.n_groups)
        out.update(nphotons=float(self.data.nphotons), neighbor_count=self.data.K, subsample_seed=self.data.seed)
        return out

    def training_config(self, train_data_file: str | None = None, output_dir: str = "out") -> TrainingConfig:
        """The ``TrainingConfig`` the backends configure with (paths relative to the scenario directory)."""
        return TrainingConfig(model=self.model_config(), train_data_file=train_data_file, output_dir=output_dir,
                              **self.training_fields())

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it exactly."""
        return {
            "id": self.id,
            "description": self.description,
            "data": dataclasses.asdict(self.data) | {"shift_xy": list(self.data.shift_xy)},
            "model": dict(self.model),
            "training": dict(self.training),
            "stages": list(self.stages),
            "tolerance_overrides": [dataclasses.asdict(t) for t in self.tolerance_overrides],
            "expected_failures": [dataclasses.asdict(x) for x in self.expected_failures],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scenario:
        """Inverse of :meth:`to_dict` (validates)."""
        data = dict(d["data"])
        data["shift_xy"] = tuple(data.get("shift_xy", OFF_CENTRE_SHIFT))
        return cls(
            id=d["id"],
            data=DataSpec(**data),
            model=dict(d["model"]),
            training=dict(d["training"]),
            stages=tuple(d["stages"]),
            tolerance_overrides=tuple(ToleranceOverride(**t) for t in d.get("tolerance_overrides", ())),
            expected_failures=tuple(
                ExpectedFailure(x["stage"], x["tensor_glob"], reason=x["reason"],
                                backend_pair_glob=x.get("backend_pair_glob", "*"), strict=x.get("strict", True))
                for x in d.get("expected_failures", ())
            ),
            description=d.get("description", ""),
        )

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, stable bytes for the same scenario)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Scenario:
        return cls.from_dict(json.loads(text))


def make_scenario(
    sid: str,
    *,
    N: int = 32,
    gridsize: int = 1,
    batch: int = 2,
    stages: Sequence[str] = CORE,
    model: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    description: str = "",
    tolerance_overrides: Sequence[ToleranceOverride] = (),
    expected_failures: Sequence[ExpectedFailure] = (),
    **data: Any,
) -> Scenario:
    """A :class:`Scenario` with the harness defaults.

    ``model`` adds ``ModelConfig`` fields to ``{N, gridsize, n_filters_scale=1}`` (the smallest
    network); ``training`` adds ``TrainingConfig`` fields / harness keys; ``data`` are further
    :class:`DataSpec` fields (``K`` defaults to ``max(7, C - 1)``).
    """
    C = conventions.channels(gridsize)
    data.setdefault("K", max(7, C - 1))
    spec = DataSpec(N=N, gridsize=gridsize, n_groups=batch, **data)
    return Scenario(
        id=sid,
        data=spec,
        model={"N": N, "gridsize": gridsize, "n_filters_scale": 1, **(model or {})},
        training=dict(training or {}),
        stages=tuple(stages),
        tolerance_overrides=tuple(tolerance_overrides),
        expected_failures=tuple(expected_failures),
        description=description,
    )


def _registry(scenarios: Iterable[Scenario]) -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}
    for s in scenarios:
        if s.id in out:
            raise ValueError(f"duplicate scenario id {s.id!r}")
        out[s.id] = s
    return out


#: e2e training: 64 groups (~61 after the validation split), 4 batches of 16 per epoch, 3 epochs.
_E2E_TRAINING = {"nepochs": 3, "batch_size": 16, "n_groups": 64}

#: Every registered scenario, by id.  Small on purpose: the whole gate (every scenario x 3 workers x
#: 2 phases) must stay well under 5 minutes on 2 CPU cores.
REGISTRY: dict[str, Scenario] = _registry([
    # ---- geometry: gridsize 1/2/3 x N 32/64/128, every stage
    make_scenario("gs1_n32", gridsize=1, batch=4, stages=FULL, description="gridsize 1, N 32: every stage"),
    make_scenario("gs2_n32", gridsize=2, batch=4, stages=FULL, description="gridsize 2, N 32: every stage"),
    make_scenario("gs3_n32", gridsize=3, batch=2, stages=FULL, seed=3, description="gridsize 3, N 32: every stage"),
    make_scenario("gs1_n64", N=64, gridsize=1, batch=2, stages=FULL, seed=1, description="N 64, gs 1: every stage"),
    make_scenario("gs2_n64", N=64, gridsize=2, batch=2, stages=FULL, seed=2, description="N 64, gs 2: every stage"),
    make_scenario("gs1_n128_nfs2", N=128, gridsize=1, batch=1, model={"n_filters_scale": 2}, seed=4,
                  description="N 128 with the default n_filters_scale=2 (batch 1 for time)"),
    make_scenario("gs2_n128", N=128, gridsize=2, batch=1, seed=5, description="N 128, gridsize 2 (batch 1)"),
    make_scenario("nfs2_gs2_n32", gridsize=2, batch=2, stages=FULL, model={"n_filters_scale": 2}, seed=6,
                  description="n_filters_scale 2 at N 32, every stage"),
    # ---- architecture and physics flags
    make_scenario("object_big_false_gs2", gridsize=2, batch=4, stages=FULL, model={"object_big": False}, seed=7,
                  description="object_big=False: one decoder patch padded onto the canvas (no reassembly)"),
    make_scenario("probe_big_false", gridsize=1, batch=4, model={"probe_big": False}, seed=8,
                  description="probe_big=False: zero border branch in the decoder heads"),
    make_scenario("pad_object_false_gs2", gridsize=2, batch=2, stages=FULL, model={"pad_object": False}, seed=9,
                  description="pad_object=False: full-N decoder output"),
    make_scenario("probe_mask_trainable", gridsize=1, batch=4, model={"probe_mask": True},
                  training={"probe_trainable": True}, seed=10,
                  description="probe_mask=True with a trainable probe (gradients of probe.real/imag)"),
    make_scenario("probe_mask_gs2", gridsize=2, batch=2, model={"probe_mask": True}, seed=11,
                  description="probe_mask=True at gridsize 2"),
    make_scenario("smoothing_gs1", gridsize=1, batch=4, model={"gaussian_smoothing_sigma": 0.8}, seed=12,
                  description="gaussian_smoothing_sigma=0.8 on the exit wave"),
    make_scenario("smoothing_mask_gs2", gridsize=2, batch=2, stages=FULL,
                  model={"gaussian_smoothing_sigma": 0.5, "probe_mask": True}, seed=13,
                  description="smoothing then probe mask (order matters), every stage"),
    # ---- amplitude activations (sigmoid is the default everywhere else)
    make_scenario("amp_swish", gridsize=1, batch=4, model={"amp_activation": "swish"}, seed=14,
                  description="amp_activation=swish"),
    make_scenario("amp_softplus_gs2", gridsize=2, batch=2, model={"amp_activation": "softplus"}, seed=15,
                  description="amp_activation=softplus at gridsize 2"),
    make_scenario("amp_relu", gridsize=1, batch=4, stages=TRAIN, model={"amp_activation": "relu"}, seed=16,
                  description="amp_activation=relu (zero-gradient regions), with training steps"),
    # ---- losses and model type
    make_scenario("supervised_mae", gridsize=1, batch=4, model={"model_type": "supervised"},
                  training={"nll_weight": 0.0, "mae_weight": 1.0}, seed=17,
                  description="model_type=supervised in params.cfg; amplitude MAE loss only"),
    make_scenario("pinn_mixed_loss_gs2", gridsize=2, batch=2, stages=FULL,
                  training={"nll_weight": 1.0, "mae_weight": 0.3, "intensity_scale_trainable": False}, seed=18,
                  description="PINN with Poisson NLL + 0.3 MAE and a frozen intensity scale, every stage"),
    # ---- off-centre offsets
    make_scenario("offcentre_gs1", gridsize=1, batch=4, offsets="off_centre", seed=19,
                  description=f"positions shifted by {OFF_CENTRE_SHIFT} px (x, y)"),
    make_scenario("offcentre_gs2", gridsize=2, batch=4, stages=FULL, offsets="off_centre", seed=20,
                  description=f"gridsize 2, group offsets shifted by {OFF_CENTRE_SHIFT} px, every stage"),
    make_scenario("offcentre_gs3", gridsize=3, batch=2, offsets="off_centre", seed=23,
                  description=f"gridsize 3, group offsets shifted by {OFF_CENTRE_SHIFT} px"),
    # ---- batch x C >= 64 (reassembly must never merge the samples of a batch)
    make_scenario("bc64_gs2_b16", gridsize=2, batch=16, stages=TRAIN,
                  seed=22, description="batch 16 x C 4 = 64 patches per batch, with training steps"),
    make_scenario("bc72_gs3_b8", gridsize=3, batch=8, seed=21, description="batch 8 x C 9 = 72 patches per batch"),
    make_scenario("bc64_offcentre_gs2", gridsize=2, batch=16, offsets="off_centre", seed=24, K=4,
                  description="batch 16 x C 4 with off-centre offsets"),
    # ---- detector bad pixels (hot values in the data, masked out of both diffraction losses)
    make_scenario("bad_pixels_gs2", gridsize=2, batch=4, stages=TRAIN, training={"mae_weight": 0.3}, seed=26,
                  bad_pixels=37, description="37 hot bad detector pixels masked out of the Poisson + MAE losses"),
    # ---- end to end: each backend's own workflow on simulated data
    make_scenario("e2e_gs1_n32", gridsize=1, batch=4, stages=(*E2E, "data", "workflow", "inference"),
                  training={**_E2E_TRAINING, "scheduler": "ReduceLROnPlateau", "plateau_patience": 1,
                            "plateau_threshold": 0.9, "mae_weight": 0.2, "realspace_weight": 1.0,
                            "realspace_mae_weight": 0.1},
                  seed=25, n_positions=96, n_test_positions=48,
                  description="run_cdi_example / run_cdi_example_torch: 3 epochs, stitched test reconstruction; "
                              "ReduceLROnPlateau (patience 1, so the rate halves within the run) and Poisson + MAE "
                              "+ real-space losses; the same run's data pipeline, training record and bundle"),
    # ---- each backend's user-facing code at gridsize 2 and 3 with non-default options (specs: "User paths")
    make_scenario("e2e_gs2_n32", gridsize=2, batch=4, stages=(*E2E, *USER), seed=26, n_positions=80,
                  n_test_positions=32,
                  training={"nepochs": 3, "batch_size": 8, "n_groups": 29, "scheduler": "Exponential",
                            "probe_trainable": True, "intensity_scale_trainable": False, "mae_weight": 0.3},
                  description="gridsize 2 end to end: Exponential schedule, trainable probe, frozen intensity "
                              "scale, Poisson + 0.3 MAE; 29 groups (28 + 1 for validation; 29 test groups: not "
                              "multiples of the batch of 8); every config door"),
    make_scenario("wf_gs3_warmup", gridsize=3, batch=4, stages=(*E2E[:2], "data", "workflow", "inference"), seed=27,
                  n_positions=48, n_test_positions=21, nphotons=1e3,
                  training={"nepochs": 3, "batch_size": 8, "n_groups": 20, "scheduler": "WarmupCosine",
                            "lr_warmup_epochs": 1, "lr_min_ratio": 0.2, "realspace_weight": 1.0,
                            "realspace_mae_weight": 1.0},
                  description="gridsize 3 workflow with WarmupCosine and the real-space loss at full weight, at "
                              "1e3 photons per pattern so that it is a visible part of the objective (at 1e9 the "
                              "Poisson NLL is ~1e7 and any real-space term ~1e-8 of it); 20 test groups reloaded "
                              "through every inference entry point"),
])

#: The scenarios ``nox -s parity`` runs, in report order.
DEFAULT_GATE: tuple[str, ...] = tuple(REGISTRY)


def scenarios_from_ids(ids: Iterable[str]) -> list[Scenario]:
    """Registry lookup with an error naming the unknown ids."""
    ids = list(ids)
    unknown = [i for i in ids if i not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown scenario ids {unknown}; `python -m conformance list` shows the registry")
    return [REGISTRY[i] for i in ids]

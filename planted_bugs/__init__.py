"""Negative controls for the conformance gate: one injected upstream-style parity bug per mutant.

Each mutant is a module of this package with a ``TARGET`` (``"package.module:attr"``, the one
thing it replaces) and an ``apply()`` that monkeypatches exactly that attribute of ONE
backend's own code (``ptycho_tf/physics.py``, ``ptycho_tf/model.py``, ``ptycho_torch/*.py``...),
never the shared NumPy core, so the other backend's worker and the reference stay correct.
The worker calls :func:`activate` with ``$PTYCHO_MUTANT`` first thing; a mutant applies only
in the worker of its own backend.

``python -m planted_bugs`` (``nox -s mutants``) runs the real gate once per mutant on
the scenarios listed in its :class:`Mutant` record and requires that the gate fails with a
diagnosis naming one of the ``expected`` checks; it also runs the clean gate twice and
requires identical verdicts (:mod:`planted_bugs.kill`).

This module imports neither TensorFlow nor PyTorch: only :func:`activate` imports the
patched backend module, in the worker that already uses it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from planted_bugs._patch import Patch

__all__ = [
    "BACKENDS",
    "REGISTRY",
    "REQUIRED_BUG_CLASSES",
    "Mutant",
    "activate",
    "active",
    "deactivate",
    "get",
    "module",
]

#: The backends a mutant can target (the reference is never mutated).
BACKENDS: tuple[str, ...] = ("tensorflow", "pytorch")

#: The bug classes issue 5 item 9 requires a mutant for, plus those of issue 10 item 2 (``Mutant.bug_class``).
REQUIRED_BUG_CLASSES: tuple[str, ...] = (
    "offset sign flip",
    "x/y swap",
    "gridsize not propagated to channels",
    "probe_big/object_big default drift",
    "N^2 vs (N/2)^2 normalisation",
    "batch-merging reassembly (B x C >= 64)",
    "config field dropped on the way to params.cfg",
    "bundle without its backend tag",
    "non-strict weight loading",
    "ifftshift added before the FFT",
    "channels-first/last confusion in stitching",
    "Gaussian smoothing sigma ignored",
    "optimizer constant drift",
    "gradient lost on one side",
)


@dataclass(frozen=True)
class Mutant:
    """One negative control.

    Attributes:
        name: id, also the module name under ``planted_bugs`` and the value of
            ``$PTYCHO_MUTANT``.
        backend: ``'tensorflow'`` or ``'pytorch'``: the only worker it is applied in.
        bug_class: one of :data:`REQUIRED_BUG_CLASSES`.
        upstream: the upstream finding(s) it models (``docs/findings.md`` IDs or reference sections).
        description: what goes wrong, in one sentence.
        expected: ``(stage, tensor glob)`` pairs; the gate must fail with at least one failing
            verdict of that stage whose failing checks name a matching tensor (``"*"`` also
            accepts a stage-level error without checks).
        scenarios: the ``conformance.scenarios.DEFAULT_GATE`` ids the kill run uses (a small
            subset that exercises the bug).
    """

    name: str
    backend: str
    bug_class: str
    upstream: str
    description: str
    expected: tuple[tuple[str, str], ...]
    scenarios: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"mutant {self.name!r}: backend {self.backend!r} is not one of {BACKENDS}")
        if self.bug_class not in REQUIRED_BUG_CLASSES:
            raise ValueError(f"mutant {self.name!r}: unknown bug class {self.bug_class!r}")
        if not self.expected or not self.scenarios:
            raise ValueError(f"mutant {self.name!r} needs at least one expected check and one scenario")

    @property
    def target(self) -> str:
        """The ``"package.module:attr"`` the mutant replaces (its module's ``TARGET``)."""
        return str(module(self.name).TARGET)

    def expected_labels(self) -> list[str]:
        """``["stage:glob", ...]`` for tables."""
        return [f"{stage}:{glob}" for stage, glob in self.expected]


_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        name="offset_sign_flip",
        backend="pytorch",
        bug_class="offset sign flip",
        upstream="TORCH-REASSEMBLY-SIGN-001",
        description="torch reassembly shifts patches by +coords_relative instead of -coords_relative",
        expected=(("forward", "forward/padded_object"), ("physics_ops", "physics_ops/reassemble_patches*")),
        scenarios=("probe_mask_gs2",),
    ),
    Mutant(
        name="xy_swap",
        backend="tensorflow",
        bug_class="x/y swap",
        upstream="REASSEMBLY-BRIDGE-001, TORCH-GS2-POSITION-OFFSETS-001",
        description="TensorFlow physics reads the (x, y) offsets as (y, x)",
        expected=(
            ("forward", "forward/padded_object"),
            ("forward", "forward/object_patches"),
            ("physics_ops", "physics_ops/reassemble_patches*"),
            ("physics_ops", "physics_ops/extract_patches*"),
        ),
        scenarios=("probe_mask_gs2",),
    ),
    Mutant(
        name="gridsize_channels",
        backend="pytorch",
        bug_class="gridsize not propagated to channels",
        upstream="BUG-TF-001; upstream create_torch_model_with_gridsize left C_model=1",
        description="torch bundle loader rebuilds a gridsize>1 model with one input channel",
        expected=(("save_load", "*"),),
        scenarios=("gs2_n32",),
    ),
    Mutant(
        name="object_big_default_drift",
        backend="pytorch",
        bug_class="probe_big/object_big default drift",
        upstream="GRIDLINES-OBJECT-BIG-001, GRIDLINES-PROBE-BIG-001, PORT-ABLATION-FWD-001",
        description="torch model builder uses upstream torch's object_big=False instead of the configured True",
        expected=(("forward", "forward/padded_object"), ("forward", "forward/trimmed_object")),
        scenarios=("smoothing_gs1",),
    ),
    Mutant(
        name="intensity_norm_n_squared",
        backend="tensorflow",
        bug_class="N^2 vs (N/2)^2 normalisation",
        upstream="NORMALIZATION-001; TF reference quirk 6 (torch normalised to N^2)",
        description="TensorFlow normalize_x_full targets a mean pattern energy of N^2 instead of (N/2)^2",
        expected=(("physics_ops", "physics_ops/normalize_x_full*"),),
        scenarios=("smoothing_gs1",),
    ),
    Mutant(
        name="batch_merge_reassembly",
        backend="tensorflow",
        bug_class="batch-merging reassembly (B x C >= 64)",
        upstream="REASSEMBLY-BATCH-001; TF reference quirk 2",
        description="TensorFlow reassembly puts all B x C >= 64 patches of a batch on one shared canvas",
        expected=(("forward", "forward/padded_object"), ("forward", "forward/trimmed_object")),
        scenarios=("bc72_gs3_b8",),
    ),
    Mutant(
        name="config_field_dropped",
        backend="pytorch",
        bug_class="config field dropped on the way to params.cfg",
        upstream="CONFIG-001, MAINREF-CLI-001",
        description="torch config bridge leaves n_filters_scale at its default on the way to params.cfg",
        expected=(("configure", "params_cfg/after_configure"), ("params_cfg", "params_cfg/*")),
        scenarios=("smoothing_gs1",),
    ),
    Mutant(
        name="bundle_backend_tag",
        backend="pytorch",
        bug_class="bundle without its backend tag",
        upstream="upstream-torch §6 (spec §4.6: manifest MUST carry backend; not implemented upstream)",
        description="torch bundles are written without the manifest 'backend' key",
        expected=(("bundle_layout", "bundle_layout/backend"),),
        scenarios=("gs2_n32",),
    ),
    Mutant(
        name="nonstrict_weight_loading",
        backend="tensorflow",
        bug_class="non-strict weight loading",
        upstream="upstream torch load_torch_bundle: load_state_dict(strict=False), shape errors ignored",
        description="TensorFlow weight loading silently skips one layer, which keeps its initial weights",
        expected=(("forward", "forward/encoded"), ("transplant", "transplant/*")),
        scenarios=("smoothing_gs1",),
    ),
    Mutant(
        name="ifftshift_before_fft",
        backend="tensorflow",
        bug_class="ifftshift added before the FFT",
        upstream="conventions FFT_IFFTSHIFT_BEFORE=False; TF reference quirk 7",
        description="TensorFlow diffraction applies tf.signal.ifftshift (all axes) before the FFT",
        expected=(("forward", "forward/amplitude"), ("physics_ops", "physics_ops/diffract_channels*")),
        scenarios=("probe_mask_gs2",),
    ),
    Mutant(
        name="stitch_channels_confusion",
        backend="pytorch",
        bug_class="channels-first/last confusion in stitching",
        upstream="TORCH-GS2-STITCH-001",
        description="torch stitcher gets every object transposed by a channels-last permute of a channels-first tensor",
        expected=(("physics_ops", "physics_ops/reassemble_position*"),),
        scenarios=("smoothing_gs1",),
    ),
    Mutant(
        name="gaussian_sigma_ignored",
        backend="tensorflow",
        bug_class="Gaussian smoothing sigma ignored",
        upstream="PORT-ABLATION-FWD-001 (a configured physics option never reaches the op)",
        description="TensorFlow illumination smooths with sigma 0 whatever gaussian_smoothing_sigma says",
        expected=(("forward", "forward/illuminated"),),
        scenarios=("smoothing_gs1",),
    ),
)

_MUTANTS += (
    Mutant(
        name="adam_beta2_drift",
        backend="tensorflow",
        bug_class="optimizer constant drift",
        upstream="issue 10 item 2: optimizer constants whose drift hides inside the train_k_steps tolerance",
        description="TensorFlow's Adam uses beta_2 = 0.99 instead of the shared 0.999",
        expected=(("optimizer", "optimizer/*"),),
        scenarios=("gs1_n32",),
    ),
    Mutant(
        name="adam_epsilon_drift",
        backend="pytorch",
        bug_class="optimizer constant drift",
        upstream="issue 10 item 2; torch.optim.Adam's eps default 1e-8 vs Keras' 1e-7",
        description="torch's KerasAdam defaults to eps = 1e-8 instead of the shared 1e-7",
        expected=(("optimizer", "optimizer/tiny/*"), ("optimizer", "optimizer/mixed/*")),
        scenarios=("gs1_n32",),
    ),
    Mutant(
        name="gradient_zeroed",
        backend="pytorch",
        bug_class="gradient lost on one side",
        upstream="issue 10 item 2: an all-zero gradient on one side must fail (symmetric scale)",
        description="torch reports an all-zero gradient for the phase head's last border convolution",
        expected=(("gradients", "gradients/decoder_phase.head.border.block.conv1.kernel"),),
        scenarios=("gs1_n32",),
    ),
)

#: Every mutant by name.
REGISTRY: dict[str, Mutant] = {m.name: m for m in _MUTANTS}

_ACTIVE: dict[str, Patch] = {}


def get(name: str) -> Mutant:
    """The mutant called ``name``; ``ValueError`` listing every name otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown mutant {name!r}; known mutants: {', '.join(sorted(REGISTRY))}") from None


def module(name: str) -> ModuleType:
    """The module implementing mutant ``name`` (imports no framework)."""
    return importlib.import_module(f"{__name__}.{get(name).name}")


def activate(name: str | None, backend: str) -> None:
    """Apply mutant ``name`` in this process if it targets ``backend``; the worker calls it first thing.

    ``name`` None or empty (``$PTYCHO_MUTANT`` unset) and a mutant of the other backend (or of
    the reference worker, which is never mutated) are no-ops; activating the same mutant again
    is a no-op too.  An unknown name raises ``ValueError`` listing the known ones.
    """
    if not name:
        return
    mutant = get(name)
    if mutant.backend != backend or name in _ACTIVE:
        return
    _ACTIVE[name] = module(name).apply()


def active() -> dict[str, str]:
    """``{mutant name: patched target}`` for the mutants applied in this process."""
    return {name: p.target for name, p in _ACTIVE.items()}


def deactivate() -> None:
    """Undo every mutant applied in this process (for tests; a worker never needs it)."""
    while _ACTIVE:
        _ACTIVE.popitem()[1].undo()

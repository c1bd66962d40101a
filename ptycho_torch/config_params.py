"""PyTorch-side configuration dataclasses (upstream ``ptycho_torch.config_params`` names).

These are the upstream field names that torch users and scripts know (``grid_size`` tuples,
``mode``, ``epochs``, ``K``, ``nll`` ...).  They are a facade: the one source of truth is the
canonical ``ptycho.config.config`` dataclasses, reached through :mod:`ptycho_torch.config_bridge`.

Deviations from upstream, on purpose (``specs/pytorch-backend.md``):

* Every default that has a canonical counterpart is READ from the canonical dataclass defaults
  (``nphotons`` 1e9, ``probe_scale`` 4.0, ``K`` 4, ``amp_activation`` 'sigmoid', ``object_big``
  True, ``probe_big`` True, ``grid_size`` (1, 1), ...), so torch defaults cannot diverge from the
  TensorFlow ones and cannot leak different values into ``params.cfg``.
* ``C`` (channels) is a read-only property ``grid_size[0] * grid_size[1]``, never a field:
  a channel count that disagrees with the grid cannot be configured (upstream kept ``C``,
  ``C_model`` and ``C_forward`` as independent fields and got them wrong).
* Execution knobs (accelerator, workers, logger, checkpointing) live only in the canonical
  ``PyTorchExecutionConfig``; they are not duplicated here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from ptycho.config.config import InferenceConfig as _CanonicalInference
from ptycho.config.config import ModelConfig as _CanonicalModel
from ptycho.config.config import TrainingConfig as _CanonicalTraining
from ptycho.conventions import LEARNING_RATE
from ptycho.errors import ConfigError

__all__ = ["DataConfig", "InferenceConfig", "ModelConfig", "TrainingConfig", "update_existing_config"]

_M = _CanonicalModel()
_T = _CanonicalTraining(model=_M)


def _inference_default(name: str) -> Any:
    return next(f.default for f in fields(_CanonicalInference) if f.name == name)


def _check_grid(grid_size: Any) -> tuple[int, int]:
    try:
        gx, gy = (int(v) for v in grid_size)
    except (TypeError, ValueError):
        raise ConfigError("grid_size", grid_size, "a pair of positive integers (gx, gy)") from None
    if gx < 1 or gy < 1 or (gx, gy) != tuple(grid_size):
        raise ConfigError("grid_size", grid_size, "a pair of positive integers (gx, gy)")
    return gx, gy


@dataclass
class DataConfig:
    """Data and grouping settings (upstream DataConfig; defaults from the canonical configs)."""

    #: Mean photons per pattern (canonical ``TrainingConfig.nphotons``).
    nphotons: float = _T.nphotons
    #: Patch / diffraction size in pixels.
    N: int = _M.N
    #: Group shape ``(gx, gy)``; only square grids map to the canonical ``gridsize``.
    grid_size: tuple[int, int] = (_M.gridsize, _M.gridsize)
    #: Nearest neighbours considered per group (canonical ``neighbor_count``).
    K: int = _T.neighbor_count
    #: Scan points subsampled before grouping (None = all).
    n_subsample: int | None = _T.n_subsample
    #: Seed of subsampling / grouping (None = the workflow default seed 0).
    subsample_seed: int | None = _T.subsample_seed
    #: Probe normalisation ``mean|disk * probe| = 1 / probe_scale`` (canonical ``ModelConfig.probe_scale``).
    probe_scale: float = _M.probe_scale
    #: Take groups in scan order instead of at random.
    sequential_sampling: bool = _T.sequential_sampling

    def __post_init__(self) -> None:
        self.grid_size = _check_grid(self.grid_size)

    @property
    def C(self) -> int:
        """Channels per group, ``gx * gy`` (derived; not settable)."""
        gx, gy = _check_grid(self.grid_size)
        return gx * gy


@dataclass
class ModelConfig:
    """Network and physics settings (upstream ModelConfig; defaults from the canonical configs)."""

    #: 'Unsupervised' (PINN, canonical model_type 'pinn') or 'Supervised'.
    mode: Literal["Unsupervised", "Supervised"] = "Unsupervised" if _M.model_type == "pinn" else "Supervised"
    #: Amplitude head activation; upstream's 'silu'/'SiLU' map to 'swish'.
    amp_activation: str = _M.amp_activation
    n_filters_scale: int = _M.n_filters_scale
    object_big: bool = _M.object_big
    probe_big: bool = _M.probe_big
    pad_object: bool = _M.pad_object
    #: Multiply the exit wave by the probe disk mask.
    probe_mask: bool = _M.probe_mask
    gaussian_smoothing_sigma: float = _M.gaussian_smoothing_sigma
    #: log_scale is a trained parameter (canonical ``TrainingConfig.intensity_scale_trainable``).
    intensity_scale_trainable: bool = _T.intensity_scale_trainable
    #: probe is a trained parameter (canonical ``TrainingConfig.probe_trainable``).
    probe_trainable: bool = _T.probe_trainable
    #: 'Poisson' or 'MAE' (canonical ``torch_loss_mode`` 'poisson' / 'mae').
    loss_function: Literal["Poisson", "MAE"] = "Poisson" if _T.torch_loss_mode == "poisson" else "MAE"


@dataclass
class TrainingConfig:
    """Training run settings (upstream TrainingConfig)."""

    train_data_file: Path | None = None
    test_data_file: Path | None = None
    output_dir: Path = field(default_factory=lambda: Path(_T.output_dir))
    #: Number of groups to train on (required by the bridge).
    n_groups: int | None = None
    #: Epochs (canonical ``nepochs``).
    epochs: int = _T.nepochs
    batch_size: int = _T.batch_size
    #: Initial learning rate (the execution config's value unless overridden).
    learning_rate: float = LEARNING_RATE
    scheduler: str = _T.scheduler
    #: Poisson term on (canonical ``nll_weight`` 1.0) or off (0.0).
    nll: bool = _T.nll_weight > 0
    mae_weight: float = _T.mae_weight

    def __post_init__(self) -> None:
        for name in ("train_data_file", "test_data_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))
        self.output_dir = Path(self.output_dir)


@dataclass
class InferenceConfig:
    """Inference settings (upstream InferenceConfig)."""

    #: Groups per inference batch (None = the execution config's ``inference_batch_size``, else 16).
    batch_size: int | None = None
    n_groups: int | None = _inference_default("n_groups")
    output_dir: Path = field(default_factory=lambda: Path(_inference_default("output_dir")))

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)


def update_existing_config(instance: Any, values: dict[str, Any]) -> list[str]:
    """Set every attribute of ``instance`` named in ``values``; return the names it does not have.

    Upstream printed a warning for unknown keys; here the caller decides (the factory raises).
    """
    known = {f.name for f in fields(instance)}
    unknown = [k for k in values if k not in known]
    for key, value in values.items():
        if key in known:
            setattr(instance, key, value)
    if hasattr(instance, "__post_init__"):
        instance.__post_init__()
    return unknown

"""Helpers shared by the PyTorch training and inference CLIs.

* :func:`validate_paths` -> ``FileNotFoundError`` for a missing input; creates the output directory.
* :func:`resolve_accelerator` maps ``--accelerator`` and the deprecated ``--device`` to one value.
* :func:`build_execution_config_from_args` builds the ``PyTorchExecutionConfig`` (runtime only; it
  never reaches ``params.cfg``).
* :func:`apply_deprecated_flags` turns ``--device`` / ``--disable_mlflow`` / ``--n_images`` into
  their replacements, each with a ``DeprecationWarning``.
* :func:`validate_numeric_flags` checks every numeric flag up front (``ConfigError`` naming it).
* :func:`run_cli` prints a readable one-line error (no traceback) for bad input, a bad bundle, an
  OS error (an ``--output_dir`` that is a file) or running out of memory.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from ptycho.config.config import PyTorchExecutionConfig
from ptycho.errors import PtychoError

__all__ = [
    "add_common_execution_flags",
    "apply_deprecated_flags",
    "TORCH_LEGACY_FLAGS",
    "TRAINING_EXECUTION_ARGS",
    "build_execution_config_from_args",
    "resolve_accelerator",
    "run_cli",
    "validate_numeric_flags",
    "validate_paths",
]

_DEVICE_TO_ACCELERATOR = {"cpu": "cpu", "cuda": "cuda", "gpu": "gpu", "mps": "mps", "auto": "auto"}


def validate_paths(
    train_file: str | PathLike | None,
    test_file: str | PathLike | None,
    output_dir: str | PathLike,
    *,
    create: bool = True,
) -> Path:
    """Check that the given input files exist and create ``output_dir`` (with ``create``); returns it as a Path.

    Raises ``FileNotFoundError`` naming the missing file (``None`` inputs are skipped) and
    ``FileExistsError`` when ``output_dir`` is an existing file.
    """
    for label, path in (("training data", train_file), ("test data", test_file)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: {label} file not found")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--output_dir {out} is an existing file, not a directory")
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def validate_numeric_flags(args: argparse.Namespace) -> None:
    """The shared numeric checks (``ptycho.cli._common.validate_numeric_args``) plus the torch-only flags.

    Raises ConfigError naming the flag, before any data is read.
    """
    from ptycho.cli._common import _check_int, validate_numeric_args

    validate_numeric_args(args)
    for flag, low in (("nepochs", 1), ("batch_size", 1), ("M", 1), ("num_workers", 0),
                      ("n_subsample", 1), ("neighbor_count", 1), ("accumulate_grad_batches", 1),
                      ("checkpoint_save_top_k", -1), ("early_stop_patience", 0)):
        _check_int(f"--{flag}", getattr(args, flag, None), low)
    lr = getattr(args, "learning_rate", None)
    if lr is not None and not (lr > 0 and lr < float("inf")):
        from ptycho.errors import ConfigError

        raise ConfigError("--learning-rate", lr, "a finite number > 0")


def resolve_accelerator(accelerator: str | None, device: str | None = None) -> str:
    """The accelerator to request: ``--accelerator`` when given, else the legacy ``--device``, else 'cpu'.

    CPU is the default (README): a GPU is used only when asked for (``--accelerator gpu`` / ``auto``).

    The returned name is what the user asked for (``'auto'`` stays ``'auto'``); the workflow
    resolves it against the hardware (``ptycho_torch.runtime.resolve_accelerator``).
    """
    if accelerator is not None:
        return accelerator
    if device is not None:
        if device not in _DEVICE_TO_ACCELERATOR:
            raise ValueError(f"--device {device!r} is invalid: expected one of {sorted(_DEVICE_TO_ACCELERATOR)}")
        return _DEVICE_TO_ACCELERATOR[device]
    return "cpu"


def apply_deprecated_flags(args: argparse.Namespace) -> argparse.Namespace:
    """Map the deprecated flags onto their replacements, warning once per flag used."""
    if getattr(args, "device", None) is not None:
        warnings.warn("--device is deprecated; use --accelerator", DeprecationWarning, stacklevel=2)
    args.accelerator = resolve_accelerator(getattr(args, "accelerator", None), getattr(args, "device", None))
    if getattr(args, "disable_mlflow", False):
        warnings.warn("--disable_mlflow is deprecated; use --logger none --quiet", DeprecationWarning, stacklevel=2)
        args.logger = "none"
        args.quiet = True
    if getattr(args, "n_images", None) is not None:
        warnings.warn("--n_images is deprecated; use --n_groups", DeprecationWarning, stacklevel=2)
        if args.n_groups is not None and args.n_groups != args.n_images:
            raise ValueError(
                f"--n_groups {args.n_groups} and --n_images {args.n_images} disagree; pass only --n_groups"
            )
        args.n_groups = args.n_images
    return args


#: Legacy spellings of the torch CLIs' flags -> the one vocabulary every CLI shares (underscores, as
#: ``ptycho_train`` / ``ptycho_inference`` and the config field names).  Still accepted, with a DeprecationWarning.
TORCH_LEGACY_FLAGS: dict[str, str] = {
    "--max_epochs": "--nepochs", "--torch-loss-mode": "--torch_loss_mode", "--learning-rate": "--learning_rate",
    "--enable-checkpointing": "--enable_checkpointing", "--disable-checkpointing": "--disable_checkpointing",
    "--checkpoint-save-top-k": "--checkpoint_save_top_k", "--checkpoint-monitor": "--checkpoint_monitor",
    "--checkpoint-mode": "--checkpoint_mode", "--early-stop-patience": "--early_stop_patience",
    "--accumulate-grad-batches": "--accumulate_grad_batches", "--gradient-clip-val": "--gradient_clip_val",
    "--num-nodes": "--num_nodes", "--num-workers": "--num_workers", "--inference-batch-size": "--batch_size",
    "--inference_batch_size": "--batch_size",
}  # fmt: skip


def add_common_execution_flags(parser: argparse.ArgumentParser) -> None:
    """Flags both CLIs share: accelerator, workers, precision, speed options, quiet."""
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda", "mps"], default=None,
                        help="hardware to run on (default auto: CUDA if available, else CPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--num_workers", "--num-workers", dest="num_workers", type=int,
                        default=PyTorchExecutionConfig.num_workers, help="DataLoader worker processes")
    parser.add_argument("--precision", choices=["32-true", "16-mixed", "bf16-mixed"],
                        default=PyTorchExecutionConfig.precision,
                        help="numeric precision of the CNN (the physics always runs in float32)")
    parser.add_argument("--channels_last", dest="channels_last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last memory format for the CNN (default: on)")
    parser.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the CNN (default: on for CUDA, off on CPU)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


#: Training CLI attribute -> ``PyTorchExecutionConfig`` field.  An attribute the parsed arguments lack (or
#: hold as None) leaves the field at the dataclass default: the defaults live in the config alone, and the
#: training parser shows them (``ptycho_torch.train.build_parser`` reads them from the dataclass).
TRAINING_EXECUTION_ARGS: dict[str, str] = {
    "deterministic": "deterministic", "learning_rate": "learning_rate", "scheduler": "scheduler",
    "enable_checkpointing": "enable_checkpointing", "checkpoint_save_top_k": "checkpoint_save_top_k",
    "checkpoint_monitor": "checkpoint_monitor_metric", "checkpoint_mode": "checkpoint_mode",
    "early_stop_patience": "early_stop_patience", "accumulate_grad_batches": "accum_steps",
    "gradient_clip_val": "gradient_clip_val", "devices": "devices", "num_nodes": "num_nodes", "strategy": "strategy",
}  # fmt: skip


def build_execution_config_from_args(args: argparse.Namespace, mode: str = "training") -> PyTorchExecutionConfig:
    """``PyTorchExecutionConfig`` from parsed CLI arguments (``mode``: 'training' or 'inference').

    Missing (or None) attributes keep the dataclass defaults; ``--logger none`` means no logger; the
    progress bar is shown only on a terminal and without ``--quiet``.  Raises ``ConfigError`` for
    invalid values.
    """
    if mode not in ("training", "inference"):
        raise ValueError(f"mode={mode!r} is invalid: expected 'training' or 'inference'")
    given = {k: v for k, v in vars(args).items() if v is not None}
    kw: dict[str, Any] = {
        "accelerator": resolve_accelerator(given.get("accelerator"), given.get("device")),
        # Lightning's bar only on a terminal (as ptycho_train): without one it writes escape codes to logs
        "enable_progress_bar": not bool(given.get("quiet", False)) and sys.stderr.isatty(),
    }
    kw.update({f: given[f] for f in ("num_workers", "precision") if f in given})
    if mode == "training":
        kw.update({field: given[attr] for attr, field in TRAINING_EXECUTION_ARGS.items() if attr in given})
        if "logger" in given:
            kw["logger_backend"] = None if given["logger"] == "none" else given["logger"]
    elif "batch_size" in given:  # the inference CLI's --batch_size: groups per forward pass
        kw["inference_batch_size"] = int(given["batch_size"])
    return PyTorchExecutionConfig(**kw)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; errors are printed as ``error: <message>``, never as tracebacks (``--debug``: the
    traceback), with the exit status every CLI uses (``ptycho.cli._common.exit_status``: 2 refused input, 1
    failed run)."""
    from ptycho.cli._common import exit_status, one_line

    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except (PtychoError, FileNotFoundError, ValueError, KeyError, RuntimeError, OSError, MemoryError) as exc:
        if debug:
            raise
        message = f"out of memory ({exc or 'no detail'}); use smaller inputs" if isinstance(exc, MemoryError) else exc
        print(f"error: {one_line(message)}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

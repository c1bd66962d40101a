"""``python -m ptycho_torch.train``: train PtychoPINN with PyTorch/Lightning on an NPZ dataset.

Writes into ``--output_dir``: ``wts.h5.zip`` (both models), ``history.csv``, ``history.png``,
``checkpoints/`` (Lightning) and ``lightning_logs/`` (CSV logger by default).

Example (the CLI smoke)::

    python -m ptycho_torch.train --train_data_file tests/fixtures/pytorch_integration/minimal_dataset_v1.npz \\
        --test_data_file tests/fixtures/pytorch_integration/minimal_dataset_v1.npz --output_dir /tmp/cli_smoke \\
        --n_groups 64 --gridsize 2 --batch_size 4 --nepochs 1 --accelerator cpu --learning_rate 1e-3

The flags are the vocabulary every CLI shares (``ptycho_train``'s spellings, underscores); ``--config
run.yaml`` reads any of them from a YAML/JSON file (flags after it override it) and the run writes every
setting to ``--output_dir/config.yaml``.  Deprecated flags still work with a ``DeprecationWarning``:
``--n_images`` (-> ``--n_groups``), ``--device`` (-> ``--accelerator``), ``--disable_mlflow`` (-> ``--logger
none --quiet``) and the dashed spellings of ``ptycho_torch.cli.shared.TORCH_LEGACY_FLAGS``.  Bad input
prints ``error: ...`` and exits with status 2, a failed run with 1 (no traceback; ``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence

from ptycho.cli._common import (
    add_stream_argument,
    add_units_argument,
    fit_batch_size,
    make_parser,
    show_core_log,
    warn_legacy_flags,
    write_resolved_config,
)
from ptycho.config.config import PyTorchExecutionConfig
from ptycho.raw_data import RawData
from ptycho.training_plan import SCHEDULERS
from ptycho.workflows import common
from ptycho_torch.cli.shared import (
    TORCH_LEGACY_FLAGS,
    add_common_execution_flags,
    apply_deprecated_flags,
    build_execution_config_from_args,
    run_cli,
    validate_numeric_flags,
    validate_paths,
)
from ptycho_torch.config_factory import create_training_payload
from ptycho_torch.runtime import RuntimeOptions

__all__ = ["build_parser", "cli_main", "main"]

PROG = "python -m ptycho_torch.train"

#: The execution defaults the flags show and fall back to (one source: the core's dataclass).
_EXEC = PyTorchExecutionConfig()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the training CLI."""
    p = make_parser(PROG, __doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train_data_file", required=True, help="training data: NPZ (data contract), CXI or Ptychodus HDF5")
    p.add_argument("--test_data_file", default=None, help="test data (optional)")
    add_units_argument(p)
    p.add_argument("--output_dir", required=True, help="directory for wts.h5.zip, history and logs")
    p.add_argument("--n_groups", type=int, default=None, help="number of groups to train on (default 512)")
    p.add_argument("--n_images", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--n_subsample", type=int, default=None, help="scan points subsampled before grouping")
    p.add_argument("--gridsize", type=int, default=1, help="group side; C = gridsize**2 channels")
    p.add_argument("--batch_size", type=int, default=16, help="groups per batch (a power of 2)")
    p.add_argument("--nepochs", "--max_epochs", dest="nepochs", type=int, default=50, help="training epochs")
    p.add_argument("--nphotons", type=float, default=None, help="photons per pattern (sets the intensity scale)")
    p.add_argument("--neighbor_count", type=int, default=None, help="K nearest neighbours per group")
    p.add_argument("--seed", type=int, default=None, help="seed of grouping, initial weights and batch order")
    p.add_argument("--torch_loss_mode", "--torch-loss-mode", choices=["poisson", "mae"], default="poisson")
    p.add_argument("--learning_rate", "--learning-rate", type=float, default=_EXEC.learning_rate)
    p.add_argument("--scheduler", choices=list(SCHEDULERS), default=_EXEC.scheduler)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output_dir from checkpoints/last.ckpt (weights, optimizer, schedule, "
                        "epoch, history); --nepochs is the total")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=_EXEC.deterministic,
                   help="deterministic algorithms (reproducible on CPU)")
    p.add_argument("--logger", choices=["csv", "tensorboard", "mlflow", "none"], default=_EXEC.logger_backend or "none")
    p.add_argument("--disable_mlflow", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--enable_checkpointing", "--disable_checkpointing", "--enable-checkpointing",
                   "--disable-checkpointing", dest="enable_checkpointing", action=_CheckpointToggle, nargs=0,
                   default=_EXEC.enable_checkpointing, help="Lightning checkpoints on/off")
    p.add_argument("--checkpoint_save_top_k", "--checkpoint-save-top-k", type=int, default=_EXEC.checkpoint_save_top_k)
    p.add_argument("--checkpoint_monitor", "--checkpoint-monitor", default=_EXEC.checkpoint_monitor_metric)
    p.add_argument("--checkpoint_mode", "--checkpoint-mode", choices=["min", "max"], default=_EXEC.checkpoint_mode)
    p.add_argument("--early_stop_patience", "--early-stop-patience", type=int, default=_EXEC.early_stop_patience)
    p.add_argument("--accumulate_grad_batches", "--accumulate-grad-batches", type=int, default=_EXEC.accum_steps)
    p.add_argument("--gradient_clip_val", "--gradient-clip-val", type=float, default=None)
    p.add_argument("--devices", type=_devices, default=_EXEC.devices,
                   help="devices (processes) per node; > 1 trains data-parallel with --strategy")
    p.add_argument("--num_nodes", "--num-nodes", type=int, default=_EXEC.num_nodes,
                   help="nodes of a multi-node run (torchrun / SLURM set the ranks)")
    p.add_argument("--strategy", default=_EXEC.strategy,
                   help="Lightning strategy: auto, ddp (a process per device), ddp_spawn; batch_size is the "
                        "global batch, split over devices x num_nodes ranks")
    add_stream_argument(p, "training")
    add_common_execution_flags(p)
    return p


def _devices(text: str) -> int | str:
    """``--devices``: a positive integer or 'auto'."""
    return text if text == "auto" else int(text)


class _CheckpointToggle(argparse.Action):
    """``--enable_checkpointing`` sets True, ``--disable_checkpointing`` sets False."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        setattr(namespace, self.dest, option_string.startswith("--enable"))


def _overrides(args: argparse.Namespace) -> dict:
    out = {
        "n_groups": args.n_groups if args.n_groups is not None else 512,
        "gridsize": args.gridsize,
        "batch_size": args.batch_size,
        "max_epochs": args.nepochs,
        "torch_loss_mode": args.torch_loss_mode,
        "learning_rate": args.learning_rate,
        "scheduler": args.scheduler,
    }
    for key in ("test_data_file", "nphotons", "neighbor_count", "n_subsample"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    if args.seed is not None:
        out["subsample_seed"] = args.seed
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, train, save the bundle and the history; returns the exit status."""
    from ptycho_torch.workflows.components import run_cdi_example_torch

    warn_legacy_flags(argv, TORCH_LEGACY_FLAGS)
    args = apply_deprecated_flags(build_parser().parse_args(argv))
    show_core_log("ptycho_torch.train", bool(args.quiet))
    start = time.perf_counter()
    validate_numeric_flags(args)
    validate_paths(args.train_data_file, args.test_data_file, args.output_dir, create=False)
    if args.stream:  # positions and probe only; the patterns stay on disk
        from ptycho.streaming import open_streaming

        stream = open_streaming(args.train_data_file)
        n_points = len(stream)
    else:
        train = RawData.from_file(args.train_data_file, diffraction_is=args.diff3d_units)
        n_points = len(train.xcoords)
    test = RawData.from_file(args.test_data_file, diffraction_is=args.diff3d_units) if args.test_data_file else None
    n_groups = args.n_groups if args.n_groups is not None else 512
    args.batch_size = fit_batch_size("python -m ptycho_torch.train", args.batch_size, min(n_groups, n_points))
    output_dir = validate_paths(None, None, args.output_dir)
    write_resolved_config(args, output_dir)
    execution = build_execution_config_from_args(args, "training")
    payload = create_training_payload(args.train_data_file, output_dir, _overrides(args), execution)
    if args.stream:
        train = common.group_streamed(stream, payload.tf_training_config)
    _amp, _phase, results = run_cdi_example_torch(
        train, test, payload.tf_training_config, execution_config=payload.execution_config,
        runtime=RuntimeOptions(channels_last=args.channels_last, compile=args.compile), quiet=args.quiet,
        resume=args.resume,
    )
    if results.get("global_rank", 0) != 0:
        return 0  # a 'ddp' worker: rank 0 writes the bundle, history and images
    history = {k: v for k, v in results["history"].items() if v}
    common.write_history_csv(history, output_dir / "history.csv")
    common.plot_history_png({k: history[k] for k in ("train_loss", "val_loss") if k in history},
                            output_dir / "history.png")
    if not args.quiet:
        losses = results["history"]["train_loss"]
        print(f"trained {len(losses)} epoch(s) in {time.perf_counter() - start:.1f} s; final train_loss "
              f"{losses[-1]:.6g}; bundle {results['bundle_path']}")
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: :func:`main` with readable errors."""
    return run_cli(main, argv)


if __name__ == "__main__":
    warnings.simplefilter("default", DeprecationWarning)
    sys.exit(cli_main())

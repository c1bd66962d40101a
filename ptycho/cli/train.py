"""``ptycho_train``: train PtychoPINN with either backend and write the model bundle.

Examples::

    ptycho_train --simulate --output_dir run1                 # built-in simulated data
    ptycho_train --train_data_file train.npz --test_data_file test.npz --gridsize 2 \\
        --nepochs 30 --output_dir run2 [--backend pytorch]

Every setting may also come from ``--config run.yaml`` (YAML or JSON, keys = flag names; flags
after it override it); ``--debug`` shows the traceback of an error.

Outputs in ``--output_dir``: ``config.yaml`` (every setting of the run; ``--config`` it to repeat
the run), ``wts.h5.zip`` (the model bundle), ``history.csv`` (loss per epoch), ``history.png`` (loss
plot); with test data also the stitched reconstruction
(``reconstruction.npz``, ``amplitude.png``, ``phase.png``; when the test data has a true object
also ``comparison.png`` and ``score.json``: SSIM, PSNR, FRC and Pearson correlation against it,
``ptycho.evaluation.score_stitched``); with ``--simulate`` also ``simulated_data.npz``.
Training data may be an NPZ, a CXI file or a Ptychodus HDF5 training file (``--diff3d_units``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptycho.cli._common import (
    add_common_arguments,
    add_stream_argument,
    fit_batch_size,
    make_parser,
    require_file,
    resolve_n_groups,
    run_main,
    stitch_crop,
    write_resolved_config,
)
from ptycho.simulate import DEFAULT_SCAN_SPACING

PROG = "ptycho_train"
#: Per-epoch series written to history.csv when the backend reports them (the plot shows the first two).
HISTORY_SERIES: tuple[str, ...] = (
    "train_loss", "val_loss", "poisson_nll", "mae", "realspace", "val_poisson_nll", "val_mae", "val_realspace",
)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, "Train PtychoPINN and save wts.h5.zip.")
    add_common_arguments(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--train_data_file", type=Path,
                      help="training data: NPZ (data contract, specs/data.md), CXI or Ptychodus HDF5")
    data.add_argument("--test_data_file", type=Path, help="test data to reconstruct after training (optional)")
    data.add_argument(
        "--simulate", action="store_true",
        help="train on built-in simulated data (ptycho.simulate) when no --train_data_file is given",
    )
    add_stream_argument(data, "training")
    data.add_argument("--N", type=int, default=64, help="--simulate: patch size in pixels (default 64)")
    data.add_argument("--n_positions", type=int, default=512, help="--simulate: scan positions (default 512)")
    data.add_argument(
        "--scan_spacing", type=float, default=DEFAULT_SCAN_SPACING,
        help="--simulate: pixels per scan position, sets the object (and field) size: sqrt(n_positions) * "
             "spacing px wide (default %(default)g; smaller = more overlap)",
    )
    train = parser.add_argument_group("training")
    train.add_argument("--batch_size", type=int, default=16, help="power of 2 (default 16)")
    train.add_argument("--nepochs", type=int, default=50, help="epochs (default 50)")
    train.add_argument("--nphotons", type=float, default=1e9, help="photons per pattern (default 1e9)")
    train.add_argument("--n_filters_scale", type=int, default=2, help="CNN width multiplier (default 2)")
    train.add_argument(
        "--resume", action="store_true",
        help="continue the run in --output_dir from its last checkpoint (weights, optimizer, schedule, epoch, "
             "history); --nepochs is the total",
    )
    train.add_argument(
        "--logger", choices=("csv", "tensorboard", "mlflow", "none"), default="csv",
        help="per-epoch metrics: logs/metrics.csv (TF) or lightning_logs/ (PyTorch), TensorBoard, or MLflow "
             "(<output_dir>/mlflow.db) (default: %(default)s)",
    )
    train.add_argument(
        "--accelerator", choices=("cpu", "gpu", "cuda", "mps", "auto"), default="cpu",
        help="PyTorch device (default: %(default)s; 'auto' picks a GPU when present). TensorFlow places ops "
             "itself (CUDA_VISIBLE_DEVICES= hides a GPU)",
    )
    dist = parser.add_argument_group("data parallel (rule: ptycho.distributed; --batch_size is the global batch)")
    dist.add_argument("--devices", type=int, default=1,
                      help="devices per node (default 1); > 1 trains data-parallel: PyTorch with --strategy, "
                           "TensorFlow with MirroredStrategy (GPUs, else as many logical CPU devices)")
    dist.add_argument("--num_nodes", type=int, default=1,
                      help="nodes (default 1): PyTorch via Lightning (torchrun/SLURM set the ranks), TensorFlow "
                           "via MultiWorkerMirroredStrategy (TF_CONFIG)")
    dist.add_argument("--strategy", choices=("auto", "ddp", "ddp_spawn"), default=None,
                      help="PyTorch: Lightning strategy (default ddp when devices x num_nodes > 1, else auto); "
                           "TensorFlow always uses MirroredStrategy")
    return parser


def _load_data(args: argparse.Namespace, out: Path) -> tuple[Any, Any]:
    """(train RawData, test RawData or None); simulates and writes ``simulated_data.npz`` with ``--simulate``."""
    from ptycho.raw_data import RawData

    if args.stream:
        from ptycho.streaming import open_streaming

        if args.train_data_file is None:
            raise ValueError("--stream reads --train_data_file from disk: give one (it cannot stream --simulate)")
        train = open_streaming(require_file(args.train_data_file, "--train_data_file"))
    elif args.train_data_file is not None:
        train = RawData.from_file(require_file(args.train_data_file, "--train_data_file"),
                                  diffraction_is=args.diff3d_units)
    elif args.simulate:
        from ptycho.simulate import simulate_dataset

        path = out / "simulated_data.npz"
        out.mkdir(parents=True, exist_ok=True)
        simulate_dataset(N=args.N, n_positions=args.n_positions, nphotons=args.nphotons, scan_spacing=args.scan_spacing,
                         seed=args.seed).to_file(path)
        if not args.quiet:
            print(f"{PROG}: simulated {args.n_positions} patterns (N={args.N}) -> {path}", file=sys.stderr)
        train = RawData.from_file(path)
    else:
        raise ValueError("give --train_data_file, or --simulate to train on built-in simulated data")
    if args.test_data_file is not None:
        test = RawData.from_file(require_file(args.test_data_file, "--test_data_file"),
                                 diffraction_is=args.diff3d_units)
    else:
        test = train if args.simulate and args.train_data_file is None else None
    return train, test


def _save_bundle(backend: str, results: dict[str, Any], config: Any, out: Path) -> Path:
    if backend == "tensorflow":
        from ptycho_tf import model_manager

        return model_manager.save(out)
    if results.get("bundle_path") is not None:
        return Path(results["bundle_path"])
    from ptycho_torch.model_manager import save_torch_bundle

    return save_torch_bundle(results["models"], out, config)


def _execution_config(args: argparse.Namespace) -> Any:
    """The PyTorch execution config (CPU unless ``--accelerator`` asks otherwise); None for TensorFlow."""
    if args.backend != "pytorch":
        return None
    from ptycho.config.config import PyTorchExecutionConfig

    devices, nodes = args.devices, args.num_nodes
    strategy = args.strategy or ("ddp" if devices * nodes > 1 else "auto")
    progress = not args.quiet and sys.stderr.isatty()  # Lightning's bar only on a terminal
    return PyTorchExecutionConfig(accelerator=args.accelerator, devices=devices, num_nodes=nodes, strategy=strategy,
                                  enable_progress_bar=progress)


def _run(args: argparse.Namespace) -> int:
    from ptycho import startup
    from ptycho.config.config import ModelConfig, TrainingConfig

    startup.prepare_frameworks()  # before either framework is imported (ptycho.startup)
    startup.configure_cli_logging(args.quiet)
    if args.backend == "tensorflow":
        startup.import_tensorflow_quietly()

    if args.output_dir is None:
        raise ValueError("--output_dir is required")
    out = Path(args.output_dir)
    n_groups = resolve_n_groups(args)
    train, test = _load_data(args, out)  # creates out only for --simulate: a refused input leaves no directory
    out.mkdir(parents=True, exist_ok=True)
    write_resolved_config(args, out)
    gridsize = 1 if args.gridsize is None else args.gridsize
    extra = {} if n_groups is None else {"n_groups": n_groups}
    args.batch_size = fit_batch_size(PROG, args.batch_size, min(n_groups or len(train.xcoords), len(train.xcoords)))
    config = TrainingConfig(
        model=ModelConfig(N=train.N, gridsize=gridsize, n_filters_scale=args.n_filters_scale),
        train_data_file=args.train_data_file,
        test_data_file=args.test_data_file,
        batch_size=args.batch_size,
        nepochs=args.nepochs,
        nphotons=args.nphotons,
        subsample_seed=args.seed,
        output_dir=out,
        backend=args.backend,
        **extra,
    )
    if n_groups is None:
        config.n_groups = len(train.xcoords)
    from ptycho.workflows import common

    if args.stream:  # group on positions; the patterns stay on disk (a StreamingContainer)
        train = common.group_streamed(train, config)
    from ptycho.workflows.backend_selector import run_cdi_example_with_backend

    amp, phase, results = run_cdi_example_with_backend(
        train, test, config, M=stitch_crop(config.model.N), do_stitching=test is not None,
        torch_execution_config=_execution_config(args), quiet=args.quiet,
        devices=args.devices, num_nodes=args.num_nodes,
        resume=args.resume, checkpoint=True, logger=None if args.logger == "none" else args.logger,
    )
    if results.get("global_rank", 0) != 0:
        return 0  # a PyTorch 'ddp' worker process: rank 0 writes every output
    bundle = _save_bundle(args.backend, results, config, out)
    history = {k: list(v) for k, v in results["history"].items() if k in HISTORY_SERIES and v is not None and len(v)}
    common.write_history_csv(history, out / "history.csv")
    common.plot_history_png({k: history[k] for k in ("train_loss", "val_loss") if k in history}, out / "history.png")
    written = [bundle, out / "history.csv", out / "history.png"]
    score = None
    if amp is not None:
        N = config.model.N
        paths, score = common.write_stitched_outputs(out, results["stitched"], results["global_offsets"], N,
                                                     stitch_crop(N), getattr(test, "objectGuess", None))
        written += paths
    if not args.quiet:
        losses = results["history"]["train_loss"]
        print(f"{PROG}: loss {losses[0]:.6g} -> {losses[-1]:.6g} over {len(losses)} epochs", file=sys.stderr)
        if score is not None:
            print(f"{PROG}: stitched vs true object: {common.score_summary(score)}", file=sys.stderr)
        for path in written:
            print(f"{PROG}: wrote {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    return run_main(PROG, _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

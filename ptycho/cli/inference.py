"""``ptycho_inference``: reconstruct a dataset with a trained model bundle (either backend).

Example::

    ptycho_inference --model_path run1 --test_data run1/simulated_data.npz --output_dir recon1

Loads ``{model_path}/wts.h5.zip`` (restoring ``params.cfg``: N, gridsize, intensity scale,
probe ...), groups the test data, predicts one object per group and stitches them.
Outputs in ``--output_dir``: ``reconstruction.npz`` (``amplitude``, ``phase``, ``object``,
``global_offsets``, ``N``, ``M``, ``covered``), ``amplitude.png`` and ``phase.png``; when the data
has a true object (``objectGuess``) also ``comparison.png`` and ``score.json``
(``ptycho.evaluation.score_stitched``).  The data may be an NPZ, a CXI file or a Ptychodus HDF5
training file (``--diff3d_units``); ``--stream`` reads an uncompressed NPZ's patterns from disk a chunk of
groups at a time (``ptycho.streaming``, ``common.predict_crops``) for scans larger than memory.
``config.yaml``: every setting of the run (``--config`` takes such a file; flags after it override it).
``--debug`` shows the traceback of an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

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

PROG = "ptycho_inference"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, "Reconstruct a dataset with a trained wts.h5.zip.")
    add_common_arguments(parser)
    parser.add_argument("--model_path", type=Path, help="directory holding wts.h5.zip (or the zip itself)")
    parser.add_argument("--test_data", "--test_data_file", dest="test_data", type=Path,
                        help="data to reconstruct: NPZ, CXI or Ptychodus HDF5")
    parser.add_argument("--batch_size", type=int, default=None, help="prediction batch size (default 32)")
    add_stream_argument(parser, "test")
    # The bundle's manifest names the backend that wrote it; --backend only has to be given to insist.
    parser.set_defaults(backend=None)
    return parser


def _run(args: argparse.Namespace) -> int:
    from ptycho import bundle

    if args.output_dir is None:
        raise ValueError("--output_dir is required")
    if args.model_path is None:
        raise ValueError("--model_path is required")
    test_file = require_file(args.test_data, "--test_data")
    model_file = bundle.bundle_path(args.model_path)
    if not model_file.is_file():
        raise FileNotFoundError(f"--model_path {args.model_path}: no {bundle.BUNDLE_FILENAME} there")
    n_groups = resolve_n_groups(args)
    if args.backend is None:
        args.backend = bundle.read_bundle(model_file).backend

    from ptycho import startup

    startup.prepare_frameworks()  # before either framework is imported (ptycho.startup)
    startup.configure_cli_logging(args.quiet)
    if args.backend == "tensorflow":
        startup.import_tensorflow_quietly()

    from ptycho import params
    from ptycho.config.config import InferenceConfig, ModelConfig
    from ptycho.raw_data import RawData
    from ptycho.workflows import common
    from ptycho.workflows.backend_selector import backend_module, load_inference_bundle_with_backend

    if args.stream:
        from ptycho.streaming import open_streaming

        raw = open_streaming(test_file)
    else:
        raw = RawData.from_file(test_file, diffraction_is=args.diff3d_units)
    config = InferenceConfig(
        model=ModelConfig(N=0, gridsize=args.gridsize or 1),
        model_path=args.model_path,
        test_data_file=test_file,
        n_groups=n_groups,
        subsample_seed=args.seed,
        output_dir=args.output_dir,
        backend=args.backend,
    )
    model, _cfg = load_inference_bundle_with_backend(args.model_path, config)
    N, gridsize = int(params.cfg["N"]), int(params.cfg["gridsize"])
    if args.gridsize is not None and args.gridsize != gridsize:
        raise ValueError(f"--gridsize {args.gridsize} does not match the model's gridsize {gridsize}; omit --gridsize")
    if raw.N != N:
        raise ValueError(f"--test_data {test_file} has {raw.N}x{raw.N} patterns but the model was trained with N={N}")
    # Group the test data as the model's training data was grouped: a gridsize-3 group needs C - 1 = 8
    # neighbours, more than the InferenceConfig default of 4 (gridsize-3 bundles could not be reconstructed).
    neighbor_count = int(params.cfg.get("neighbor_count") or config.neighbor_count)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, N=N, gridsize=gridsize),
                                 neighbor_count=neighbor_count)
    if args.stream:  # grouped on positions; each chunk of groups reads its patterns when it is predicted
        container = common.group_streamed(raw, config)
    else:
        container = common.create_ptycho_data_container(raw, config)
    batch_size = None if args.batch_size is None else fit_batch_size(PROG, args.batch_size, len(container),
                                                                      power_of_two=False)
    M = stitch_crop(N)
    predict = functools.partial(backend_module(args.backend).predict_objects, model, batch_size=batch_size)
    crops = common.predict_crops(predict, container, M)
    _amp, _phase, stitched = common.stitch(crops, container.global_offsets, M)
    out = Path(args.output_dir)
    written, score = common.write_stitched_outputs(out, stitched, container.global_offsets, N, M, raw.objectGuess)
    written.append(write_resolved_config(args, out))
    if not args.quiet:
        print(f"{PROG}: {len(container)} groups of {gridsize}x{gridsize} -> {stitched.shape[0]}x{stitched.shape[1]}",
              file=sys.stderr)
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

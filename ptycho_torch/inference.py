"""``python -m ptycho_torch.inference``: reconstruct an NPZ dataset with a trained PyTorch bundle.

Loads ``--model_path/wts.h5.zip`` (restoring ``params.cfg``; the architecture, including the
gridsize, comes from the bundle), groups the test data, predicts the trimmed object of every group
and stitches them.  Writes into ``--output_dir``: ``reconstruction.npz`` (``amplitude``, ``phase``,
complex ``object``, the stitching grid), ``amplitude.png`` and ``phase.png``; with a true object in
the data also ``comparison.png`` and ``score.json`` (``ptycho.workflows.common.write_stitched_outputs``).

Example::

    python -m ptycho_torch.inference --model_path /tmp/cli_smoke \\
        --test_data tests/fixtures/pytorch_integration/minimal_dataset_v1.npz --output_dir /tmp/cli_smoke_infer \\
        --n_groups 32 --accelerator cpu

A missing file, a bad flag value or a TensorFlow bundle prints ``error: ...`` and exits with
status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import warnings
from collections.abc import Sequence

from ptycho.cli._common import (
    add_stream_argument,
    add_units_argument,
    make_parser,
    show_core_log,
    warn_legacy_flags,
    write_resolved_config,
)
from ptycho.raw_data import RawData
from ptycho.streaming import open_streaming
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
from ptycho_torch.config_factory import create_inference_payload
from ptycho_torch.runtime import RuntimeOptions

__all__ = ["build_parser", "cli_main", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the inference CLI."""
    p = make_parser("python -m ptycho_torch.inference", __doc__.splitlines()[0],
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_path", required=True, help="training output directory holding wts.h5.zip")
    p.add_argument("--test_data", "--test_data_file", dest="test_data", required=True,
                   help="data to reconstruct: NPZ, CXI or Ptychodus HDF5")
    add_units_argument(p)
    add_stream_argument(p, "test")
    p.add_argument("--output_dir", required=True, help="directory for reconstruction.npz and the PNGs")
    p.add_argument("--n_groups", type=int, default=None, help="groups to reconstruct (default: one per scan point)")
    p.add_argument("--n_images", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=None, help="seed of the grouping")
    p.add_argument("--batch_size", "--inference_batch_size", "--inference-batch-size", dest="batch_size",
                   type=int, default=None,
                   help="groups per forward pass (default 64)")
    p.add_argument("--M", dest="M", type=int, default=20, help="central crop of each object used for stitching")
    add_common_execution_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, load the bundle, reconstruct and write the outputs; returns the exit status."""
    from ptycho_torch.workflows.components import load_inference_bundle_torch, predict_objects

    warn_legacy_flags(argv, TORCH_LEGACY_FLAGS)
    args = apply_deprecated_flags(build_parser().parse_args(argv))
    show_core_log("ptycho_torch.inference", bool(args.quiet))
    start = time.perf_counter()
    validate_numeric_flags(args)
    output_dir = validate_paths(None, args.test_data, args.output_dir, create=False)  # created only to write
    execution = build_execution_config_from_args(args, "inference")
    overrides = {"n_groups": args.n_groups}
    if args.seed is not None:
        overrides["subsample_seed"] = args.seed
    payload = create_inference_payload(args.model_path, args.test_data, output_dir, overrides, execution)
    models, _params = load_inference_bundle_torch(args.model_path)
    if args.stream:  # positions only in memory; each chunk of groups reads its patterns when it is predicted
        test = open_streaming(args.test_data)
        container = common.group_streamed(test, payload.tf_inference_config)
    else:
        test = RawData.from_file(args.test_data, diffraction_is=args.diff3d_units)
        container = common.create_ptycho_data_container(test, payload.tf_inference_config)
    predict = functools.partial(predict_objects, models["diffraction_to_obj"],
                                execution_config=payload.execution_config,
                                runtime=RuntimeOptions(channels_last=args.channels_last, compile=args.compile))
    crops = common.predict_crops(predict, container, args.M)
    _amp, _phase, stitched = common.stitch(crops, container.global_offsets, args.M)
    output_dir.mkdir(parents=True, exist_ok=True)
    written, score = common.write_stitched_outputs(output_dir, stitched, container.global_offsets, test.N, args.M,
                                                   test.objectGuess, metadata={"n_groups": len(container)})
    written.append(write_resolved_config(args, output_dir))
    if not args.quiet:
        if score is not None:
            print(f"stitched vs true object: {common.score_summary(score)}")
        print(f"reconstructed {len(container)} group(s) in {time.perf_counter() - start:.1f} s; "
              f"wrote {', '.join(str(p) for p in written)}")
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: :func:`main` with readable errors."""
    return run_cli(main, argv)


if __name__ == "__main__":
    warnings.simplefilter("default", DeprecationWarning)
    sys.exit(cli_main())

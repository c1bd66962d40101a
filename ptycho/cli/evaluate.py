"""``ptycho_evaluate``: score a stitched reconstruction against the true object.

Example::

    ptycho_evaluate --reconstruction recon1/reconstruction.npz --truth sim.npz --output_dir recon1

``--reconstruction`` is the ``reconstruction.npz`` that ``ptycho_train`` / ``ptycho_inference`` write
(it carries ``object`` and the stitching grid: ``global_offsets``, ``N``, ``M``).  ``--truth`` is
any dataset with a true object (``objectGuess``): an NPZ of the data contract, a CXI file with
an object image or a Ptychodus training file.  The score (``ptycho.evaluation.score_stitched``:
amplitude and phase SSIM, PSNR, FRC with the 1/2-bit and 1/7 resolutions, after sub-pixel
registration and global phase-offset removal, over the scanned region) is printed as JSON and
written to ``score.json`` with ``comparison.png`` when ``--output_dir`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ptycho.cli._common import add_units_argument, require_file, run_main

PROG = "ptycho_evaluate"
_KEYS = ("object", "global_offsets", "N", "M")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Score a reconstruction against the true object.")
    parser.add_argument("--reconstruction", type=Path, required=True, help="reconstruction.npz of a ptycho run")
    parser.add_argument("--truth", type=Path, required=True, help="dataset with objectGuess (NPZ, CXI, Ptychodus HDF5)")
    parser.add_argument("--output_dir", type=Path, default=None, help="write score.json and comparison.png here")
    add_units_argument(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from ptycho.atomic import atomic_write_bytes
    from ptycho.errors import DataContractError
    from ptycho.evaluation import coverage_mask, ground_truth_canvas, json_ready, score_stitched
    from ptycho.raw_data import RawData
    from ptycho.workflows.common import save_comparison

    rec_path = require_file(args.reconstruction, "--reconstruction")
    with np.load(rec_path, allow_pickle=False) as z:
        missing = [k for k in _KEYS if k not in z.files]
        if missing:
            raise DataContractError(
                f"lacks {missing}: it was not written by ptycho_train / ptycho_inference of this version",
                file=str(rec_path), field=missing[0],
                fix="re-run ptycho_inference on the data to get a reconstruction.npz with its stitching grid",
            )
        obj, offsets, N, M = z["object"], z["global_offsets"], int(z["N"]), int(z["M"])
    truth = RawData.from_file(require_file(args.truth, "--truth"), diffraction_is=args.diff3d_units)
    if truth.objectGuess is None:
        raise DataContractError("has no true object", file=str(args.truth), field="objectGuess",
                                fix="pass the simulated dataset (or a file with an object image) as --truth")
    score = json_ready(score_stitched(obj, truth.objectGuess, offsets, N, M))
    text = json.dumps(score, indent=1, sort_keys=True)
    print(text)
    if args.output_dir is not None:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "score.json", text.encode())
        mask = coverage_mask(offsets, N, M)
        save_comparison(obj, ground_truth_canvas(truth.objectGuess, offsets, obj.shape[0]), out / "comparison.png",
                        mask=mask)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    return run_main(PROG, _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

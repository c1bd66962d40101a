"""``ptycho_convert``: write any supported input (NPZ, CXI, Ptychodus HDF5) as the NPZ data contract.

Example::

    ptycho_convert scan.cxi scan.npz
    ptycho_convert ptychodus_training.h5 train.npz --diff3d_units intensity

The input is read with ``RawData.from_file`` (so every check of ``specs/bad-input.md`` applies)
and written with ``RawData.to_file``: ``diff3d`` as float32 amplitude with ``diff3d_units =
'amplitude'``, ``bad_pixels`` when the input has a mask.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ptycho.cli._common import add_units_argument, require_file, run_main

PROG = "ptycho_convert"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Convert CXI / Ptychodus HDF5 / NPZ to the NPZ contract.")
    parser.add_argument("input", type=Path, help="input file (.npz, .cxi, .h5)")
    parser.add_argument("output", type=Path, help="output NPZ")
    add_units_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no summary line")
    return parser


def _run(args: argparse.Namespace) -> int:
    from ptycho.raw_data import RawData

    raw = RawData.from_file(require_file(args.input, "input"), diffraction_is=args.diff3d_units)
    path = raw.to_file(args.output)
    if not args.quiet:
        bad = 0 if raw.bad_pixels is None else int(raw.bad_pixels.sum())
        print(f"{PROG}: {raw.n_points} patterns of {raw.N}x{raw.N}, {bad} bad pixels -> {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    return run_main(PROG, _run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

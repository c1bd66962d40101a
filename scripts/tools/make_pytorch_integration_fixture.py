#!/usr/bin/env python
"""Write the small integration fixture ``minimal_dataset_v1.npz`` and its JSON provenance sidecar.

Usage (from the repository root)::

    python scripts/tools/make_pytorch_integration_fixture.py \
        --output tests/fixtures/pytorch_integration/minimal_dataset_v1.npz --subset-size 64

The dataset comes from the built-in simulator (``ptycho.simulate.simulate_dataset``)
with the fixed parameters in :data:`FIXTURE_PARAMS`: N=64, ``subset_size`` random
scan positions on a 128 x 128 'lines' object, 2e4 mean photons per pattern with
Poisson noise.  At that photon budget the brightest expected pixel holds about 50
photons, so the amplitude ``sqrt(counts)`` stays below 10 like upstream's
fixture (measured data at a similar dose).  The arrays are written by
``RawData.to_file``; the archive is then rewritten canonically (same members,
same bytes per member, plus a ``diffraction`` member identical to ``diff3d`` for
upstream's fixture contract, which reads that key) with a fixed member
timestamp and deflate compression, so re-running the script reproduces the same
bytes.  The sidecar ``<output>.json`` records the generator, version, seed,
parameters, shapes, dtypes, sha256 and a fixed ``created`` stamp.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.errors import PtychoError
from ptycho.simulate import GENERATOR, SIMULATOR_VERSION, SimulationParams, simulate_from_params

FIXTURE_VERSION = "v1"
GENERATOR_SCRIPT = "scripts/tools/make_pytorch_integration_fixture.py"
DEFAULT_OUTPUT = Path("tests/fixtures/pytorch_integration/minimal_dataset_v1.npz")
DEFAULT_SUBSET_SIZE = 64
#: Fixed provenance stamp: the day the v1 definition was fixed.  It is a constant
#: (not the wall clock) so that re-running the script reproduces the sidecar exactly.
CREATED = "2026-11-23T00:00:00Z"
#: Simulation parameters of the fixture (``n_positions`` comes from --subset-size).
FIXTURE_PARAMS: dict[str, Any] = {
    "N": 64,
    "object_kind": "lines",
    "object_size": 128,
    "scan": "random",
    "nphotons": 2e4,
    "noise": True,
    "seed": 0,
}
#: Timestamp of every archive member (the zip epoch), for byte-reproducible output.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
#: Upstream's fixture contract (tests/torch/test_fixture_pytorch_integration.py upstream).
MAX_AMPLITUDE = 10.0
MIN_OBJECT_SIDE = 128


def fixture_params(subset_size: int) -> SimulationParams:
    """The resolved simulation parameters of the fixture for ``subset_size`` positions."""
    return SimulationParams(n_positions=subset_size, **FIXTURE_PARAMS).resolved()


def _canonical_npz(src: Path, dst: Path) -> None:
    """Rewrite the NPZ ``src`` to ``dst`` with fixed member timestamps, deflate level 9,
    and a ``diffraction.npy`` member equal to ``diff3d.npy`` (written atomically)."""
    with zipfile.ZipFile(src) as zin:
        members = [(name, zin.read(name)) for name in zin.namelist()]
    names = [name for name, _ in members]
    if "diffraction.npy" not in names:
        members.insert(names.index("diff3d.npy") + 1, ("diffraction.npy", dict(members)["diff3d.npy"]))
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as zout:
            for name, data in members:
                info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                zout.writestr(info, data, compresslevel=9)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _dumps(obj: Any) -> str:
    """``json.dumps(indent=2)`` with lists of numbers kept on one line, plus a final newline."""
    text = json.dumps(obj, indent=2)
    number_list = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,\s*)*-?[0-9][0-9.eE+-]*)\s*\]")
    return number_list.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_fixture(output: Path, subset_size: int = DEFAULT_SUBSET_SIZE) -> dict[str, Any]:
    """Simulate, check the contract, write ``output`` and ``output.with_suffix('.json')``.

    Returns the sidecar dict.  Raises ``ValueError`` when the simulated data
    violates upstream's fixture contract (it does not for the fixed parameters).
    """
    output = Path(output)
    if output.suffix != ".npz":
        raise ValueError(f"--output {output}: expected a path ending in .npz")
    params = fixture_params(subset_size)
    raw = simulate_from_params(params)
    d = raw.diff3d
    x_range = float(np.ptp(raw.xcoords))
    y_range = float(np.ptp(raw.ycoords))
    problems = []
    if not float(d.max()) < MAX_AMPLITUDE or float(d.min()) < 0:
        problems.append(f"diffraction range [{d.min():g}, {d.max():g}] is not within [0, {MAX_AMPLITUDE})")
    if min(raw.objectGuess.shape) < MIN_OBJECT_SIDE:
        problems.append(f"objectGuess {raw.objectGuess.shape} is smaller than {MIN_OBJECT_SIDE}")
    if problems:
        raise ValueError("fixture violates its contract: " + "; ".join(problems))

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmpdir:
        plain = raw.to_file(Path(tmpdir) / "plain.npz")
        _canonical_npz(plain, output)

    with np.load(output, allow_pickle=False) as archive:
        arrays = {key: {"shape": list(archive[key].shape), "dtype": str(archive[key].dtype)} for key in archive.files}
    sidecar: dict[str, Any] = {
        "version": FIXTURE_VERSION,
        "created": CREATED,
        "created_note": "fixed date of the v1 definition, not the run time (re-runs reproduce the bytes)",
        "generator_script": GENERATOR_SCRIPT,
        "generator": f"{GENERATOR}.simulate_dataset",
        "simulator_version": SIMULATOR_VERSION,
        "source_dataset": "simulated by ptycho.simulate (no external data)",
        "subset_strategy": "every simulated position (uniform random scan)",
        "subset_size": int(subset_size),
        "seed": params.seed,
        "parameters": params.to_dict(),
        "transformations": [
            "simulate_dataset(**parameters) -> RawData (diff3d = sqrt(Poisson counts), float32)",
            "RawData.to_file -> NPZ data contract",
            "archive rewritten canonically: fixed member timestamps, deflate level 9",
            "diffraction: copy of diff3d (upstream fixture contract key)",
        ],
        "arrays": arrays,
        "statistics": {
            "diffraction_max": float(d.max()),
            "diffraction_min": float(d.min()),
            "mean_photons_per_pattern": float(np.mean(np.sum(np.square(d, dtype=np.float64), axis=(1, 2)))),
            "x_range": x_range,
            "y_range": y_range,
        },
        "sha256_checksum": _sha256(output),
        "size_bytes": output.stat().st_size,
        "environment": {"numpy": np.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION},
    }
    sidecar_path = output.with_suffix(".json")
    sidecar_path.write_text(_dumps(sidecar), encoding="utf-8")
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make_pytorch_integration_fixture.py",
        description="Write the simulated integration fixture (NPZ) and its JSON provenance sidecar.",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"NPZ path (default {DEFAULT_OUTPUT})")
    parser.add_argument(
        "--subset-size",
        type=int,
        default=DEFAULT_SUBSET_SIZE,
        help=f"number of scan positions (default {DEFAULT_SUBSET_SIZE})",
    )
    args = parser.parse_args(argv)
    try:
        sidecar = write_fixture(args.output, args.subset_size)
    except (PtychoError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.output} ({sidecar['size_bytes']} bytes, sha256 {sidecar['sha256_checksum']}) "
        f"and {args.output.with_suffix('.json')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

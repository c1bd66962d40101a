"""Golden baselines of the conformance harness: what is pinned, how records become baseline data, regeneration.

``tests/conformance/test_baselines.py`` checks the records of a few pinned scenarios
(:data:`PINNED`) against files under ``baselines/test_baselines/`` with pytest-regressions:

* ``<sid>/params_cfg-<backend>-<point>.yml`` (``data_regression``): the typed params.cfg
  snapshot of each backend at each snapshot point (after configure, after training, after
  loading the bundle in a fresh process);
* ``<sid>/bundle_layout-<backend>.yml`` (``data_regression``): member tree, manifest,
  manifest keys, backend tag and canonical weight names/shapes/dtypes of each backend's bundle;
* ``<sid>/reference-<stage>.npz`` (``ndarrays_regression``): the NumPy reference's arrays
  (physics ops, forward intermediates, losses);
* ``<sid>/<backend>-forward.npz`` (``ndarrays_regression``): each backend's forward
  intermediates from the canonical initial weights, checked with the gate's forward tolerance.

Arrays are stored for the first group of the batch (:func:`first_group`): every group runs the
same code and the gate compares all of them across backends on every run, so the baseline
stays small (the whole directory is well under 2 MB).

The baseline data is machine independent: absolute paths become ``<run>/...`` or
``<abs>/<name>``; versions, checksums and byte sizes become placeholders, and manifest floats
that come out of training (``intensity_scale``) become ``<float>`` (their values differ in the
last bits between CPUs; the gate compares them with a tolerance), see :func:`portable_params`
and :func:`portable_layout`.  What generated the files (versions, seeds, tolerances, command,
date, sha256 of each file) goes to the sidecar ``baselines/PROVENANCE.json``, which is not
compared but is checked to list exactly the files present with their checksums.

``python -m conformance.baselines`` (``nox -s baselines``) regenerates every file on purpose:
it runs the pinned scenarios through the workers once, runs the baseline tests with
``--regen-all`` on those records, removes baseline files no test wrote any more, rewrites
``PROVENANCE.json`` and prints ``git diff --stat`` (plus new files) for review.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BACKENDS",
    "BASELINE_DIR",
    "DATA_DIR",
    "PINNED",
    "PROVENANCE_PATH",
    "PROVENANCE_SCHEMA",
    "REFERENCE",
    "RUN_ENV",
    "Pinned",
    "array_tolerances",
    "baseline_files",
    "ensure_records",
    "first_group",
    "main",
    "portable_layout",
    "portable_params",
    "stage_arrays",
    "write_provenance",
]

REPO_ROOT: Path = Path(__file__).resolve().parents[1]
#: Root of every baseline file.
BASELINE_DIR: Path = REPO_ROOT / "baselines"
#: Where ``tests/conformance/test_baselines.py`` keeps its files (its ``original_datadir``).
DATA_DIR: Path = BASELINE_DIR / "test_baselines"
#: The provenance sidecar.
PROVENANCE_PATH: Path = BASELINE_DIR / "PROVENANCE.json"
#: The test module that checks the baselines (relative to the repository root).
TEST_MODULE = "tests/conformance/test_baselines.py"
#: Environment variable naming a finished run directory whose records the baseline tests reuse.
RUN_ENV = "PTYCHO_PARITY_RUN"
PROVENANCE_SCHEMA = "ptychopinn.baselines.provenance/1"
#: The sides whose records are baselined.
BACKENDS: tuple[str, ...] = ("tensorflow", "pytorch")
REFERENCE = "reference"


@dataclass(frozen=True)
class Pinned:
    """What is baselined for one pinned scenario (params.cfg and bundle layouts always).

    ``reference_stages``: reference stages stored as arrays; ``backend_forward``: store each
    backend's forward intermediates too.
    """

    reference_stages: tuple[str, ...] = ()
    backend_forward: bool = False


#: The pinned scenarios (every id is in ``DEFAULT_GATE``, so the gate's own run can be reused):
#: gridsize 1 with everything, gridsize 2 off-centre with the reference arrays, gridsize 3 with
#: params.cfg and bundle layouts (its arrays would cost ~1 MB).
PINNED: dict[str, Pinned] = {
    "gs1_n32": Pinned(("physics_ops", "forward", "losses"), backend_forward=True),
    "offcentre_gs2": Pinned(("physics_ops", "forward", "losses")),
    "gs3_n32": Pinned(),
}

_PLACEHOLDER_ABS = "<abs>"
_PLACEHOLDER_RUN = "<run>"


# --------------------------------------------------------------------------- portable data
def _portable_str(value: str, run_dir: Path | None) -> str:
    """``value`` with the run directory replaced by ``<run>`` and any other absolute path by ``<abs>/<name>``."""
    if run_dir is not None:
        for root in sorted({str(run_dir), os.path.realpath(run_dir)}, key=len, reverse=True):
            if root in value:
                value = value.replace(root, _PLACEHOLDER_RUN)
    if os.path.isabs(value):
        return f"{_PLACEHOLDER_ABS}/{Path(value).name}"
    return value


def _portable(value: Any, run_dir: Path | None) -> Any:
    if isinstance(value, str):
        return _portable_str(value, run_dir)
    if isinstance(value, list | tuple):
        return [_portable(v, run_dir) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _portable(v, run_dir) for k, v in value.items()}
    return value


def portable_params(snapshot: Mapping[str, Mapping[str, Any]], run_dir: Path | None) -> dict[str, dict[str, Any]]:
    """A typed params.cfg snapshot (record format) with machine-specific strings made portable.

    Each key keeps its ``type`` and, as recorded, ``value`` (JSON) or ``shape``/``dtype``
    (arrays; their contents live in the npz and are compared by the gate, not here).
    """
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(snapshot):
        entry = snapshot[key]
        item: dict[str, Any] = {"type": entry.get("type")}
        if entry.get("type") == "ndarray":
            item["shape"] = list(entry.get("shape") or [])
            item["dtype"] = entry.get("dtype")
        else:
            item["value"] = _portable(entry.get("value"), run_dir)
        out[str(key)] = item
    return out


#: Manifest entries whose values depend on the machine, the library versions or float rounding of
#: training: ``{key: placeholder}``.
_VOLATILE_MANIFEST = {"created_by": "<ptychopinn version>", "intensity_scale": "<float>"}


def portable_layout(layout: Mapping[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """A bundle layout (record format) without versions, checksums or byte sizes.

    Kept: member names, manifest keys and values (framework versions -> ``<version>``,
    member checksums/sizes -> ``<sha256>``/``<bytes>``, the trained intensity scale ->
    ``<float>``), the backend tag, weight names/shapes/dtypes.
    """
    manifest = dict(layout.get("manifest") or {})
    for key, placeholder in _VOLATILE_MANIFEST.items():
        if key in manifest:
            manifest[key] = placeholder
    if isinstance(manifest.get("framework"), Mapping):
        manifest["framework"] = {k: "<version>" for k in sorted(manifest["framework"])}
    if isinstance(manifest.get("members"), Mapping):
        manifest["members"] = {
            name: {field: f"<{'bytes' if field == 'size' else field}>" for field in sorted(info)}
            for name, info in sorted(manifest["members"].items())
        }
    return {
        "backend": layout.get("backend"),
        "members": sorted(layout.get("members") or []),
        "manifest_keys": sorted(layout.get("manifest_keys") or []),
        "manifest": _portable(manifest, run_dir),
        "weights": {
            name: {"shape": list(info.get("shape") or []), "dtype": info.get("dtype")}
            for name, info in sorted((layout.get("weights") or {}).items())
        },
    }


def first_group(arrays: Mapping[str, np.ndarray], batch: int, channels: int) -> dict[str, np.ndarray]:
    """The arrays of the first group of a batch: leading axis ``B`` -> ``[:1]``, ``B * C`` (flat) -> ``[:C]``.

    Arrays whose leading axis is neither (scalars, a stitched object) are kept whole.
    """
    out = {}
    for key, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.ndim and arr.shape[0] == batch:
            arr = arr[:1]
        elif arr.ndim and arr.shape[0] == batch * channels:
            arr = arr[:channels]
        out[key] = np.array(arr, order="C")  # a copy; ascontiguousarray would make 0-d arrays 1-d
    return out


def stage_arrays(arrays: Mapping[str, np.ndarray], stage: str, batch: int, channels: int) -> dict[str, np.ndarray]:
    """``{tensor: array}`` of ``stage`` (keys without the ``stage/`` prefix), reduced by :func:`first_group`."""
    prefix = f"{stage}/"
    picked = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    return first_group(picked, batch, channels)


def array_tolerances(
    stage: str, arrays: Mapping[str, np.ndarray], overrides: Sequence[Any] = ()
) -> dict[str, dict[str, float]]:
    """``{key: {"rtol", "atol"}}`` for ``ndarrays_regression``: the gate's tolerance for each ``stage/key``.

    The gate's ``atol`` of magnitude-scaled stages becomes ``atol * max(1, max|array|)``
    (``np.isclose`` has no scaling of its own).  Tensors whose gate tolerance has a mismatch
    budget (a fraction of elements may differ) raise ``ValueError``: they cannot be baselined
    element-wise.
    """
    from conformance.tolerances import resolve_tolerance

    out = {}
    for key, arr in arrays.items():
        tensor = key if key.startswith(f"{stage}/") else f"{stage}/{key}"
        tol = resolve_tolerance(stage, tensor, (arr.dtype,), overrides)
        if tol.max_mismatch_fraction:
            raise ValueError(f"{tensor}: its gate tolerance allows a fraction of mismatching elements "
                             f"({tol.source}), which an element-wise baseline cannot express; do not baseline it")
        scale = max(1.0, float(np.max(np.abs(arr), initial=0.0))) if tol.scale_atol else 1.0
        out[key] = {"rtol": float(tol.rtol), "atol": float(tol.atol * scale)}
    return out


# --------------------------------------------------------------------------- records
def _has_records(run_dir: Path, sid: str) -> bool:
    return all((run_dir / sid / side / "produce.json").exists() for side in (*BACKENDS, REFERENCE))


def ensure_records(scratch: Path, scenario_ids: Sequence[str] | None = None) -> Path:
    """A run directory holding the records of ``scenario_ids`` (default: every pinned scenario).

    Reuses the run named by ``$PTYCHO_PARITY_RUN`` when it holds them all (the gate's own
    run); otherwise runs the pinned scenarios through the real workers into ``scratch``.
    """
    ids = list(scenario_ids or PINNED)
    given = os.environ.get(RUN_ENV)
    if given:
        run_dir = Path(given)
        missing = [sid for sid in ids if not _has_records(run_dir, sid)]
        if not missing:
            return run_dir
        print(f"{RUN_ENV}={given} lacks the records of {missing}; running the pinned scenarios", file=sys.stderr)
    from conformance.runner import run_gate

    run_dir = Path(scratch) / "run"
    run_gate(ids, run_dir=run_dir, report_dir=None, progress=False, command="python -m conformance.baselines")
    return run_dir


# --------------------------------------------------------------------------- provenance
def baseline_files() -> list[Path]:
    """Every baseline file (relative to :data:`BASELINE_DIR`), sorted; the sidecar and obtained files excluded."""
    if not DATA_DIR.exists():
        return []
    return sorted(
        p.relative_to(BASELINE_DIR)
        for p in DATA_DIR.rglob("*")
        if p.is_file() and not fnmatch.fnmatch(p.name, "*.obtained*") and not p.name.endswith(".diff.html")
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _provenance_tolerances(run_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """The tolerance of every array baseline, per file and key, as the tests apply it."""
    from conformance.compare import load_side
    from conformance.scenarios import REGISTRY

    out: dict[str, dict[str, dict[str, float]]] = {}
    for sid, pinned in PINNED.items():
        scenario = REGISTRY[sid]
        overrides = tuple(scenario.tolerance_overrides)
        ref = load_side(run_dir, sid, REFERENCE).arrays
        for stage in pinned.reference_stages:
            arrays = stage_arrays(ref, stage, scenario.batch, scenario.C)
            out[f"test_baselines/{sid}/reference-{stage}.npz"] = array_tolerances(stage, arrays, overrides)
        for backend in BACKENDS if pinned.backend_forward else ():
            arrays = stage_arrays(load_side(run_dir, sid, backend).arrays, "forward", scenario.batch, scenario.C)
            out[f"test_baselines/{sid}/{backend}-forward.npz"] = array_tolerances("forward", arrays, overrides)
    return out


def write_provenance(run_dir: Path, command: str) -> dict[str, Any]:
    """Rewrite ``baselines/PROVENANCE.json`` from the records of ``run_dir`` and the files on disk."""
    from importlib.metadata import version

    from conformance.runner import record_versions
    from conformance.scenarios import REGISTRY

    versions = record_versions(run_dir, list(PINNED))
    versions["pytest-regressions"] = version("pytest-regressions")
    doc = {
        "schema": PROVENANCE_SCHEMA,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "versions": dict(sorted(versions.items())),
        "scenarios": {
            sid: {"baselined": dataclasses.asdict(pinned), "seed": REGISTRY[sid].data.seed,
                  "scenario": REGISTRY[sid].to_dict()}
            for sid, pinned in PINNED.items()
        },
        "tolerances": _provenance_tolerances(run_dir),
        "files": {
            str(rel): {"sha256": _sha256(BASELINE_DIR / rel), "bytes": (BASELINE_DIR / rel).stat().st_size}
            for rel in baseline_files()
        },
    }
    PROVENANCE_PATH.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return doc


# --------------------------------------------------------------------------- regeneration
def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "(git is not available)\n"
    return done.stdout + done.stderr


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate every baseline, rewrite the provenance sidecar and print the diff for review."""
    parser = argparse.ArgumentParser(prog="python -m conformance.baselines", description=main.__doc__)
    parser.add_argument("--run-dir", type=Path,
                        help=f"reuse the records of this finished gate run (default: ${RUN_ENV}, else run the "
                             "pinned scenarios now)")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest")
    args = parser.parse_args(argv)
    command = "python -m conformance.baselines"
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="ptycho-baselines-") as scratch:
        if args.run_dir is not None:
            os.environ[RUN_ENV] = str(args.run_dir)
        run_dir = ensure_records(Path(scratch))
        env = {**os.environ, RUN_ENV: str(run_dir)}
        pytest_cmd = [sys.executable, "-m", "pytest", TEST_MODULE, "--regen-all", "-m", "", "-q", "-p",
                      "no:cacheprovider", *args.pytest_args]
        print("+", " ".join(pytest_cmd), flush=True)
        code = subprocess.run(pytest_cmd, cwd=REPO_ROOT, env=env, check=False).returncode
        if code != 0:
            print(f"pytest exited with {code}: baselines were NOT fully regenerated; nothing was pruned",
                  file=sys.stderr)
            return code
        stale = [BASELINE_DIR / rel for rel in baseline_files() if (BASELINE_DIR / rel).stat().st_mtime < started]
        for path in stale:
            path.unlink()
            print(f"removed stale baseline {path.relative_to(REPO_ROOT)}")
        write_provenance(run_dir, command)
    total = sum((BASELINE_DIR / rel).stat().st_size for rel in baseline_files())
    print(f"baselines: {len(baseline_files())} files, {total / 1024:.1f} KiB; review the diff before committing:")
    print(_git("diff", "--stat", "--", "baselines/"), end="")
    print(_git("status", "--short", "--untracked-files=all", "--", "baselines/"), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

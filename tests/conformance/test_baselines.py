"""Golden baselines: the records of the pinned scenarios against the reviewed files under ``baselines/``.

What is pinned and how records become portable baseline data is :mod:`conformance.baselines`:

* ``data_regression``: params.cfg snapshots (typed) per side and snapshot point, bundle layouts
  per backend (``baselines/test_baselines/<sid>/*.yml``);
* ``ndarrays_regression``: the NumPy reference's physics ops, forward intermediates and losses,
  and each backend's forward intermediates, with the gate's tolerance for each tensor
  (``baselines/test_baselines/<sid>/*.npz``).

The records come from the real workers: the run named by ``$PTYCHO_PARITY_RUN`` (the gate's own
run, so ``nox -s parity`` pays nothing extra), else the pinned scenarios are run once per session
(about 90 s on 2 cores); those tests are marked ``parity``.  The checks of the baseline directory
itself (provenance, the missing-baseline guard, the portable transforms) need no worker.

A missing baseline FAILS (before pytest-regressions would quietly create it), so CI can never pass
by generating its own goldens.  Regenerate on purpose with ``python -m conformance.baselines``
(``nox -s baselines``), review ``git diff baselines/``, commit.  A single changed baseline can also
be refreshed with ``python -m pytest tests/conformance/test_baselines.py --force-regen``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conformance.baselines import (
    BACKENDS,
    BASELINE_DIR,
    DATA_DIR,
    PINNED,
    PROVENANCE_PATH,
    PROVENANCE_SCHEMA,
    REFERENCE,
    array_tolerances,
    baseline_files,
    ensure_records,
    first_group,
    portable_layout,
    portable_params,
    stage_arrays,
)
from conformance.compare import SideRecord, load_side
from conformance.scenarios import REGISTRY

#: Total size the baseline directory must stay under.
MAX_TOTAL_BYTES = 2 * 1024 * 1024


def _points(sid: str, side: str) -> list[str]:
    """The params.cfg snapshot points a side records for a scenario (from its stages)."""
    stages = REGISTRY[sid].stages
    if side == REFERENCE:
        return ["after_configure"]
    points = ["after_configure"]
    if "train_k_steps" in stages or "save_load" in stages:
        points.append("after_training")
    if "save_load" in stages:
        points.append("after_load")
    return points


PARAMS_CASES = [(sid, side, point) for sid in PINNED for side in (*BACKENDS, REFERENCE) for point in _points(sid, side)]
LAYOUT_CASES = [(sid, backend) for sid in PINNED if "bundle_layout" in REGISTRY[sid].stages for backend in BACKENDS]
REFERENCE_CASES = [(sid, stage) for sid, pinned in PINNED.items() for stage in pinned.reference_stages]
FORWARD_CASES = [(sid, backend) for sid, pinned in PINNED.items() if pinned.backend_forward for backend in BACKENDS]


# --------------------------------------------------------------------------- fixtures and guards
@pytest.fixture(scope="module")
def original_datadir() -> Path:
    """Baselines live in ``baselines/test_baselines/``, not next to this module (pytest-datadir override)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def parity_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory holding the pinned scenarios' records ($PTYCHO_PARITY_RUN or a fresh run)."""
    return ensure_records(tmp_path_factory.mktemp("baselines"))


def _regenerating(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("force_regen") or request.config.getoption("regen_all"))


def require_baseline(request: pytest.FixtureRequest, basename: str, ext: str) -> Path | None:
    """The baseline file for ``basename``; a missing one fails the test unless regenerating (then None)."""
    path = DATA_DIR / f"{basename}{ext}"
    if path.is_file():
        return path
    if not _regenerating(request):
        pytest.fail(
            f"missing baseline {path.relative_to(BASELINE_DIR.parent)}: a new or renamed baseline is never created "
            "silently. Run `python -m conformance.baselines` (nox -s baselines), review `git diff baselines/` "
            "and commit the files.",
            pytrace=False,
        )
    return None


def side_record(run_dir: Path, sid: str, side: str) -> SideRecord:
    """Both phases of one side's records; fails naming what is missing."""
    rec = load_side(run_dir, sid, side)
    if "produce" in rec.missing:
        pytest.fail(f"{sid}/{side}: no produce record ({rec.missing['produce']})", pytrace=False)
    return rec


def check_arrays(request: pytest.FixtureRequest, ndarrays_regression, basename: str, arrays: dict[str, np.ndarray],
                 tolerances: dict[str, dict[str, float]]) -> None:
    """``ndarrays_regression.check`` plus what it lets through: non-finite values and dtype changes."""
    assert arrays, f"{basename}: the record holds no arrays for this baseline"
    nonfinite = [k for k, a in arrays.items() if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a))]
    assert not nonfinite, f"{basename}: NaN or inf in {nonfinite}"
    expected = require_baseline(request, basename, ".npz")
    if expected is not None and not _regenerating(request):
        with np.load(expected) as npz:
            changed = {k: f"{npz[k].dtype} -> {arrays[k].dtype}" for k in npz.files
                       if k in arrays and npz[k].dtype != arrays[k].dtype}
        assert not changed, f"{basename}: dtypes changed {changed}"
    ndarrays_regression.check(arrays, basename=basename, tolerances=tolerances)


# --------------------------------------------------------------------------- params.cfg and bundles
@pytest.mark.parity
@pytest.mark.parametrize(("sid", "side", "point"), PARAMS_CASES)
def test_params_cfg_snapshot(parity_run: Path, data_regression, request: pytest.FixtureRequest, sid: str, side: str,
                             point: str) -> None:
    """params.cfg at each snapshot point, key by key with its type, as the baseline has it."""
    rec = side_record(parity_run, sid, side)
    assert point in rec.params_cfg, f"{sid}/{side}: no params.cfg snapshot '{point}' (has {sorted(rec.params_cfg)})"
    basename = f"{sid}/params_cfg-{side}-{point}"
    require_baseline(request, basename, ".yml")
    data_regression.check(portable_params(rec.params_cfg[point], parity_run), basename=basename)


@pytest.mark.parity
@pytest.mark.parametrize(("sid", "backend"), LAYOUT_CASES)
def test_bundle_layout(parity_run: Path, data_regression, request: pytest.FixtureRequest, sid: str,
                       backend: str) -> None:
    """The bundle's member tree, manifest, backend tag and weight names/shapes/dtypes, as the baseline has them."""
    rec = side_record(parity_run, sid, backend)
    assert rec.bundle_layout is not None, f"{sid}/{backend}: no bundle layout recorded"
    basename = f"{sid}/bundle_layout-{backend}"
    require_baseline(request, basename, ".yml")
    data_regression.check(portable_layout(rec.bundle_layout, parity_run), basename=basename)


# --------------------------------------------------------------------------- arrays
@pytest.mark.parity
@pytest.mark.parametrize(("sid", "stage"), REFERENCE_CASES)
def test_reference_arrays(parity_run: Path, ndarrays_regression, request: pytest.FixtureRequest, sid: str,
                          stage: str) -> None:
    """The NumPy reference's arrays of a stage (first group of the batch) within the gate's tolerances."""
    scenario = REGISTRY[sid]
    rec = side_record(parity_run, sid, REFERENCE)
    arrays = stage_arrays(rec.arrays, stage, scenario.batch, scenario.C)
    tolerances = array_tolerances(stage, arrays, scenario.tolerance_overrides)
    check_arrays(request, ndarrays_regression, f"{sid}/reference-{stage}", arrays, tolerances)


@pytest.mark.parity
@pytest.mark.parametrize(("sid", "backend"), FORWARD_CASES)
def test_backend_forward(parity_run: Path, ndarrays_regression, request: pytest.FixtureRequest, sid: str,
                         backend: str) -> None:
    """A backend's forward intermediates (first group) against its baseline, at the gate's forward tolerance."""
    scenario = REGISTRY[sid]
    rec = side_record(parity_run, sid, backend)
    arrays = stage_arrays(rec.arrays, "forward", scenario.batch, scenario.C)
    tolerances = array_tolerances("forward", arrays, scenario.tolerance_overrides)
    check_arrays(request, ndarrays_regression, f"{sid}/{backend}-forward", arrays, tolerances)


# --------------------------------------------------------------------------- the baseline directory itself
def test_provenance_lists_every_baseline(request: pytest.FixtureRequest) -> None:
    """PROVENANCE.json names exactly the baseline files present, with their checksums, versions and tolerances."""
    if _regenerating(request):
        pytest.skip("regenerating: python -m conformance.baselines rewrites PROVENANCE.json afterwards")
    assert PROVENANCE_PATH.is_file(), "baselines/PROVENANCE.json is missing: run python -m conformance.baselines"
    doc = json.loads(PROVENANCE_PATH.read_text())
    assert doc["schema"] == PROVENANCE_SCHEMA
    assert set(doc["scenarios"]) == set(PINNED)
    assert {"python", "numpy", "tensorflow", "torch", "ptychopinn"} <= set(doc["versions"])
    files = {str(p) for p in baseline_files()}
    assert set(doc["files"]) == files, (
        f"baseline files not in PROVENANCE.json: {sorted(files - set(doc['files']))}; "
        f"listed but absent: {sorted(set(doc['files']) - files)}"
    )
    edited = [rel for rel, info in doc["files"].items()
              if hashlib.sha256((BASELINE_DIR / rel).read_bytes()).hexdigest() != info["sha256"]]
    assert not edited, f"baseline files changed without regeneration (sha256 differs): {edited}"
    assert all(f.endswith(".npz") for f in doc["tolerances"]) and set(doc["tolerances"]) <= files
    total = sum((BASELINE_DIR / rel).stat().st_size for rel in files)
    assert total < MAX_TOTAL_BYTES, f"baselines total {total} bytes, over {MAX_TOTAL_BYTES}"


def test_missing_baseline_fails(request: pytest.FixtureRequest) -> None:
    """The guard: a baseline that does not exist fails the test instead of being created."""
    if _regenerating(request):
        pytest.skip("regenerating: missing baselines are created on purpose")
    with pytest.raises(pytest.fail.Exception, match="missing baseline"):
        require_baseline(request, "no_such_scenario/params_cfg-tensorflow-after_configure", ".yml")


def test_portable_data_strips_machine_details(tmp_path: Path) -> None:
    """Run-directory and other absolute paths, versions, checksums, sizes and trained floats become placeholders."""
    run = tmp_path / "run"
    snapshot = {
        "output_prefix": {"type": "str", "value": f"{run}/gs1_n32/out"},
        "model_path": {"type": "str", "value": "/home/someone/models/wts.h5.zip"},
        "paths": {"type": "list", "value": ["relative/file.npz", f"{run}/x"]},
        "N": {"type": "int", "value": 32},
        "probe": {"type": "ndarray", "value": None, "shape": [32, 32, 1], "dtype": "complex64"},
    }
    assert portable_params(snapshot, run) == {
        "N": {"type": "int", "value": 32},
        "model_path": {"type": "str", "value": "<abs>/wts.h5.zip"},
        "output_prefix": {"type": "str", "value": "<run>/gs1_n32/out"},
        "paths": {"type": "list", "value": ["relative/file.npz", "<run>/x"]},
        "probe": {"type": "ndarray", "shape": [32, 32, 1], "dtype": "complex64"},
    }
    layout = {
        "backend": "pytorch", "members": ["params.json", "manifest.json"], "manifest_keys": ["backend"],
        "manifest": {"backend": "pytorch", "created_by": "ptychopinn 9.9", "framework": {"torch": "9.9"},
                     "intensity_scale": 1975.88, "members": {"params.json": {"sha256": "ab", "size": 3}},
                     "network": {"N": 32}},
        "weights": {"b": {"shape": [2], "dtype": "float32"}, "a": {"shape": [1], "dtype": "float32"}},
        "read_error": None,
    }
    out = portable_layout(layout, run)
    assert out["manifest"] == {"backend": "pytorch", "created_by": "<ptychopinn version>",
                               "framework": {"torch": "<version>"}, "intensity_scale": "<float>",
                               "members": {"params.json": {"sha256": "<sha256>", "size": "<bytes>"}},
                               "network": {"N": 32}}
    assert out["members"] == ["manifest.json", "params.json"] and list(out["weights"]) == ["a", "b"]


def test_first_group_keeps_one_group() -> None:
    """Batch-leading arrays keep group 0, flat [B*C, ...] arrays its C patches, anything else stays whole."""
    arrays = {"chan": np.zeros((4, 8, 8, 4)), "flat": np.zeros((16, 8, 8)), "stitched": np.zeros((36, 36, 1)),
              "loss": np.float64(1.0)}
    shapes = {k: v.shape for k, v in first_group(arrays, batch=4, channels=4).items()}
    assert shapes == {"chan": (1, 8, 8, 4), "flat": (4, 8, 8), "stitched": (36, 36, 1), "loss": ()}

"""Distributed parity: data-parallel training computes what single-process training computes.

``python -m conformance.distributed [--run-dir DIR] [--report FILE] [--timeout S]`` (what ``.ci/run``
runs after the parity gate; ``nox -s parity`` runs it too).  Four workers, each its own process and
framework, train the same simulated data from the same canonical initial weights with the same
global batch plan (``ptycho.training_plan``; split over replicas by :mod:`ptycho.distributed`):

==================  =====================================================================
side                how
==================  =====================================================================
``pytorch:1``       the PyTorch workflow (``train_cdi_model_torch``), one process
``pytorch:ddp2``    the same with ``devices=2, strategy='ddp'`` (Lightning DDP, gloo, 2 processes)
``tensorflow:1``    the TensorFlow workflow (``train_cdi_model``), one replica
``tensorflow:mirrored2``  the same with ``devices=2`` (``MirroredStrategy`` over 2 logical CPUs)
==================  =====================================================================

Setup (:data:`SETUP`): N=32, gridsize 1, 13 groups (no validation split), global batch 8, so each
epoch takes 2 steps, of 8 groups (shards 4 + 4) and 5 groups (shards 3 + 2: unequal on purpose, the
loss weighting of :mod:`ptycho.distributed` must make them exact); 3 epochs = 6 Adam steps.  Each worker records the
per-epoch training loss (``history['train_loss']``, the mean of the step losses) and the canonical
weights after training.

Checks (``a~b``, ``b`` expected): ``pytorch:ddp2~pytorch:1`` and ``tensorflow:mirrored2~tensorflow:1``
with :data:`SELF_TOLERANCES` (derived from this check's own measured spreads), and, with the gate's
cross-backend ``train_k_steps`` tolerances (``conformance.tolerances.resolve_tolerance``),
``tensorflow:mirrored2~pytorch:ddp2`` and, as the baseline the gate already checks,
``tensorflow:1~pytorch:1``.  The spreads (worst normalised loss error,
worst weight error and the fraction of weight elements beyond one learning rate) are printed and
written to the report.  Exit status 0 when every check passes, 1 otherwise (a worker that fails or
times out is a failure, with its log tail).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conformance.tolerances import STAGE_TOLERANCES, StageTolerance, compare_arrays, resolve_tolerance

__all__ = ["PAIRS", "SELF_TOLERANCES", "SETUP", "SIDES", "judge", "main", "run_worker"]

#: The training setup every side uses.
SETUP: dict[str, Any] = {
    "N": 32, "gridsize": 1, "n_positions": 64, "n_groups": 13, "batch_size": 8, "nepochs": 3,
    "nphotons": 1e9, "seed": 0,
}
#: side -> (backend, replicas)
SIDES: dict[str, tuple[str, int]] = {
    "pytorch:1": ("pytorch", 1),
    "pytorch:ddp2": ("pytorch", 2),
    "tensorflow:1": ("tensorflow", 1),
    "tensorflow:mirrored2": ("tensorflow", 2),
}
#: Checks ``(a, b)``: ``a`` judged against the expected ``b``.
PAIRS: tuple[tuple[str, str], ...] = (
    ("pytorch:ddp2", "pytorch:1"),
    ("tensorflow:mirrored2", "tensorflow:1"),
    ("tensorflow:mirrored2", "pytorch:ddp2"),
    ("tensorflow:1", "pytorch:1"),
)


def _config(out: Path) -> Any:
    from ptycho.config.config import ModelConfig, TrainingConfig

    s = SETUP
    return TrainingConfig(
        model=ModelConfig(N=s["N"], gridsize=s["gridsize"]), n_groups=s["n_groups"], batch_size=s["batch_size"],
        nepochs=s["nepochs"], nphotons=s["nphotons"], subsample_seed=s["seed"], output_dir=out,
    )


def run_worker(side: str, run_dir: Path) -> Path:
    """Train one side on ``run_dir/train.npz``; write ``run_dir/<side>.npz`` (rank 0 only); return its path."""
    from ptycho.raw_data import RawData

    backend, world = SIDES[side]
    out = run_dir / side.replace(":", "_")
    out.mkdir(parents=True, exist_ok=True)
    config = _config(out)
    data = RawData.from_file(run_dir / "train.npz")
    if backend == "pytorch":
        from ptycho.config.config import PyTorchExecutionConfig
        from ptycho_torch.canonical import export_canonical
        from ptycho_torch.workflows.components import train_cdi_model_torch

        execution = PyTorchExecutionConfig(
            accelerator="cpu", devices=world, strategy="ddp" if world > 1 else "auto", deterministic=True,
            logger_backend=None, enable_checkpointing=False,
        )
        results = train_cdi_model_torch(data, None, config, execution, quiet=True)
        if results.get("global_rank", 0) != 0:
            return out
        weights = export_canonical(results["models"]["autoencoder"])
    else:
        from ptycho.network_spec import network_spec_from_config
        from ptycho_tf.canonical import get_canonical_weights
        from ptycho_tf.workflows.components import train_cdi_model

        results = train_cdi_model(data, None, config, quiet=True, devices=world)
        weights = get_canonical_weights(results["models"]["autoencoder"], network_spec_from_config(config.model))
    arrays = {"loss": np.asarray(results["history"]["train_loss"], dtype=np.float64)}
    arrays.update({f"weights/{k}": np.asarray(v) for k, v in weights.items()})
    path = run_dir / f"{side.replace(':', '_')}.npz"
    np.savez(path, **arrays)
    return path


@dataclass
class Check:
    """One pair's verdict and spreads."""

    pair: str
    passed: bool
    loss_spread: float
    weight_spread: float
    weight_fraction: float
    messages: list[str]

_SELF_BASIS = ("a distributed run against the single-process run of the same backend, 6 Adam steps of `SETUP`, "
               "3 clean runs on the 2-core AMD EPYC (identical) and 1 on the earlier machine: torch ddp2 loss "
               "8.0e-6, weights 2.03e-3 on 3.3e-4 of a tensor's elements; TensorFlow mirrored2 loss 2.8e-8, "
               "weights 1.22e-3 on 6.8e-6.  Planted bugs (specs/conformance.md, Distributed parity): the b_r/b "
               "loss weighting dropped moves 8.9% of a tensor's elements by > lr (loss 2.8e-4 torch, 1.1e-2 "
               "TensorFlow); every rank fed the same shard 61%")
#: Same-backend pairs (a distributed run against its own single-process run) are judged tighter than the
#: cross-backend ``train_k_steps`` rows, whose 20% mismatch budget covers the Adam sign flips of two
#: frameworks' float32 noise and let a dropped loss weighting through (8.9% of elements beyond lr).
SELF_TOLERANCES: tuple[StageTolerance, ...] = (
    StageTolerance("distributed", "distributed/loss", 0.0, 1e-4, True, 8.0e-6, _SELF_BASIS),
    StageTolerance("distributed", "distributed/weights/*", 0.0, 1e-3, False, 2.03e-3,
                   "atol is the learning rate (one Adam step), as in train_k_steps; " + _SELF_BASIS,
                   max_mismatch_fraction=1e-2, measured_fraction=3.26e-4),
)


def _tolerance(same_backend: bool, key: str, dtypes: tuple[np.dtype, np.dtype]) -> tuple[str, Any]:
    """``(tensor name, Tolerance)`` of record ``key``: the self rows for a same-backend pair, else train_k_steps."""
    stage = "distributed" if same_backend else "train_k_steps"
    tensor = f"{stage}/{key}"
    table = SELF_TOLERANCES if same_backend else STAGE_TOLERANCES
    return tensor, resolve_tolerance(stage, tensor, dtypes, table=table)


def _load(run_dir: Path, side: str) -> dict[str, np.ndarray] | None:
    path = run_dir / f"{side.replace(':', '_')}.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def judge(run_dir: Path) -> list[Check]:
    """Compare the recorded sides pair by pair (:data:`PAIRS`): same-backend pairs with
    :data:`SELF_TOLERANCES`, the cross-backend ones with the gate's train_k_steps rows."""
    checks = []
    for a_side, b_side in PAIRS:
        pair = f"{a_side}~{b_side}"
        same_backend = SIDES[a_side][0] == SIDES[b_side][0]
        a, b = _load(run_dir, a_side), _load(run_dir, b_side)
        if a is None or b is None:
            missing = [s for s, r in ((a_side, a), (b_side, b)) if r is None]
            checks.append(Check(pair, False, float("nan"), float("nan"), float("nan"), [f"no record from {missing}"]))
            continue
        messages, ok = [], True
        loss_spread = weight_spread = weight_fraction = 0.0
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                ok = False
                messages.append(f"{key}: present on one side only")
                continue
            tensor, tol = _tolerance(same_backend, key, (a[key].dtype, b[key].dtype))
            cmp = compare_arrays(tensor, a[key], b[key], tol.rtol, tol.atol, pair=pair, scale_atol=tol.scale_atol,
                                 context="distributed / ", source=tol.source,
                                 max_mismatch_fraction=tol.max_mismatch_fraction)
            ok &= cmp.passed
            if not cmp.passed:
                messages.append(cmp.message)
            diff = np.abs(a[key].astype(np.float64) - b[key].astype(np.float64))
            if key == "loss":
                loss_spread = max(loss_spread, float(diff.max() / max(1.0, np.abs(b[key]).max())))
            else:
                weight_spread = max(weight_spread, float(diff.max()))
                weight_fraction = max(weight_fraction, float(np.mean(diff > tol.atol)))
        checks.append(Check(pair, ok, loss_spread, weight_spread, weight_fraction, messages))
    return checks


def _write_data(run_dir: Path) -> None:
    from ptycho.simulate import simulate_dataset

    s = SETUP
    simulate_dataset(N=s["N"], n_positions=s["n_positions"], nphotons=s["nphotons"],
                     seed=s["seed"]).to_file(run_dir / "train.npz")


def _worker_env(side: str) -> dict[str, str]:
    env = dict(os.environ)
    threads = "1"
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
               TF_NUM_INTRAOP_THREADS=threads, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               # two MirroredStrategy replicas run concurrently and meet in an all-reduce: give them 2 threads
               TF_NUM_INTEROP_THREADS="2")
    return env


def _run_all(run_dir: Path, timeout: float, jobs: int) -> dict[str, str]:
    """Run every side's worker (``jobs`` at a time); return ``{side: failure text}`` for those that failed."""
    pending = list(SIDES)
    running: list[tuple[str, subprocess.Popen, float, Path]] = []
    failures: dict[str, str] = {}
    while pending or running:
        while pending and len(running) < jobs:
            side = pending.pop(0)
            log = run_dir / f"{side.replace(':', '_')}.log"
            cmd = [sys.executable, "-m", "conformance.distributed", "--worker", side, "--run-dir", str(run_dir)]
            with open(log, "wb") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_worker_env(side),
                                        start_new_session=True)
            running.append((side, proc, time.monotonic(), log))
        time.sleep(0.5)
        for item in list(running):
            side, proc, start, log = item
            rc = proc.poll()
            if rc is None and time.monotonic() - start < timeout:
                continue
            if rc is None:
                os.killpg(proc.pid, 9)
                proc.wait()
                failures[side] = f"timed out after {timeout:.0f} s"
            elif rc != 0:
                failures[side] = f"exit status {rc}"
            if side in failures:
                tail = log.read_text(errors="replace").splitlines()[-25:]
                failures[side] += "\n" + "\n".join(tail)
            running.remove(item)
    return failures


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{x:.3g}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the four sides, judge, print the spreads; exit status 0 / 1."""
    p = argparse.ArgumentParser(prog="python -m conformance.distributed", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=None, help="where data, records and logs go (default: a temp dir)")
    p.add_argument("--report", type=Path, default=None, help="write the checks and spreads as JSON here")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    p.add_argument("--jobs", type=int, default=2, help="workers at a time")
    p.add_argument("--worker", choices=sorted(SIDES), default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        run_worker(args.worker, args.run_dir)
        return 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dist-parity-") as tmp:
        run_dir = args.run_dir or Path(tmp)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_data(run_dir)
        failures = _run_all(run_dir, args.timeout, args.jobs)
        checks = judge(run_dir)
    ok = not failures and all(c.passed for c in checks)
    print(f"distributed parity ({SETUP['nepochs']} epochs x {-(-SETUP['n_groups'] // SETUP['batch_size'])} steps, "
          f"global batch {SETUP['batch_size']}, 2 replicas; {time.monotonic() - start:.0f} s)")
    print(f"{'pair':45s} {'verdict':7s} {'loss':>9s} {'weights':>9s} {'>lr frac':>9s}")
    for c in checks:
        print(f"{c.pair:45s} {'pass' if c.passed else 'FAIL':7s} {_fmt(c.loss_spread):>9s} "
              f"{_fmt(c.weight_spread):>9s} {_fmt(c.weight_fraction):>9s}")
        for m in c.messages[:5]:
            print(f"    {m}")
    for side, text in failures.items():
        print(f"worker {side} failed: {text}")
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({
            "ok": ok, "setup": SETUP, "failures": failures,
            "checks": [c.__dict__ for c in checks],
        }, indent=1, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Time one training step and one inference batch of each backend, side by side, in separate processes.

Usage::

    python benchmarks/bench_step_time.py                  # N=64: gridsize 1 batch 16, gridsize 2 batch 8
    python benchmarks/bench_step_time.py --repeats 20 --backends torch tensorflow
    python benchmarks/bench_step_time.py --device cuda --precision bf16-mixed --batch 512 --backends torch

Each (backend, configuration) runs in its own subprocess (``--worker``), so the frameworks never
share a process, thread pool or allocator.  Both build the same network from the same canonical
initial weights (``init_canonical_weights(seed=0)``) and time the same work:

* train step: forward, Poisson NLL, backward and one Keras-formula Adam update on one batch
  (TensorFlow: ``ptycho_tf.parity_api.train_steps``; PyTorch: the step ``PtychoPINN_Lightning``'s
  ``training_step`` performs: ``forward_intermediates`` + ``compute_losses`` + ``KerasAdam``);
* inference batch: ``diffraction_to_obj`` on one batch (TensorFlow: the Keras
  ``diffraction_to_obj`` model when the handle exposes it, else ``ptycho_tf.parity_api.forward``).

Timings are the median of ``--repeats`` runs after ``--warmup`` runs (on CUDA the clock waits for
the device); with ``--rounds R`` the workers of all backends run alternately R times and the
fastest round's median is kept, which suppresses the noise of a shared machine.  The table
reports milliseconds, samples per second and the PyTorch / TensorFlow time
ratios (< 1 means PyTorch is faster).  The torch worker runs with channels-last memory format unless
``--no-channels-last``; ``--compile`` adds ``torch.compile`` of the CNN.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

DEFAULT_CONFIGS = ((1, 16), (2, 8))


def _data(N: int, C: int, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """A batch of plausible network inputs: normalised random amplitudes times the intensity scale."""
    from ptycho import conventions
    from ptycho.reference.physics import normalize_x_full

    rng = np.random.default_rng(seed)
    amp = rng.gamma(2.0, 1.0, size=(batch, N, N, C)).astype(np.float32)
    x_full, _ = normalize_x_full(amp)
    scale = conventions.intensity_scale(1e9, N)
    positions = rng.uniform(-3.0, 3.0, size=(batch, 1, 2, C)).astype(np.float32)
    if C == 1:
        positions[:] = 0.0
    return (x_full * np.float32(scale)).astype(np.float32), positions, scale


def _median_time(fn: Callable[[], None], warmup: int, repeats: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _weights(N: int, gridsize: int, scale: float):
    from ptycho.canonical_weights import init_canonical_weights
    from ptycho.config.config import ModelConfig
    from ptycho.network_spec import network_spec_from_config
    from ptycho.reference.physics import default_probe, normalize_probe

    mc = ModelConfig(N=N, gridsize=gridsize)
    spec = network_spec_from_config(mc)
    probe = normalize_probe(default_probe(N), mc.probe_scale)
    return mc, init_canonical_weights(spec, seed=0, log_scale=math.log(scale), probe=probe)


def worker_tensorflow(args: argparse.Namespace) -> dict:
    """Time the TensorFlow backend through ``ptycho_tf.parity_api``."""
    import tensorflow as tf

    from ptycho_tf import parity_api

    x, pos, scale = _data(args.N, args.gridsize**2, args.batch)
    mc, weights = _weights(args.N, args.gridsize, scale)
    handle = parity_api.build(mc, weights=weights, probe_mask=False, gaussian_smoothing_sigma=0.0)
    train = _median_time(lambda: parity_api.train_steps(handle, [(x, pos)], lr=1e-3), args.warmup, args.repeats,
                         lambda: None)
    d2o = getattr(getattr(handle, "models", None), "diffraction_to_obj", None)
    if d2o is not None:
        xt, pt = tf.constant(x), tf.constant(pos)
        infer_fn = lambda: d2o(  # noqa: E731
            [xt, pt], training=False).numpy()
    else:
        infer_fn = lambda: parity_api.forward(handle, x, pos)  # noqa: E731
    infer = _median_time(infer_fn, args.warmup, args.repeats, lambda: None)
    return {"train_s": train, "infer_s": infer, "device": "cpu", "framework": f"tensorflow {tf.__version__}"}


def worker_torch(args: argparse.Namespace) -> dict:
    """Time the PyTorch backend's training step and ``diffraction_to_obj``."""
    import ptycho_torch  # noqa: F401, I001  (first: sets the OpenMP wait policy before torch loads)
    import torch  # noqa: I001

    from ptycho.conventions import tf_to_torch_images, tf_to_torch_positions
    from ptycho_torch.losses import LossWeights, compute_losses
    from ptycho_torch.model import build_model
    from ptycho_torch.optim import KerasAdam
    from ptycho_torch.runtime import autocast_for

    device = torch.device(args.device)
    x, pos, scale = _data(args.N, args.gridsize**2, args.batch)
    mc, weights = _weights(args.N, args.gridsize, scale)
    model = build_model(mc, weights=weights).to(device)
    model.use_channels_last(args.channels_last)
    if args.compile:
        model.compile_cnn(True)
    xt = torch.from_numpy(tf_to_torch_images(x)).to(device)
    pt = torch.from_numpy(tf_to_torch_positions(pos)).to(device)
    opt = KerasAdam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_weights = LossWeights()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast_for(device.type, args.precision):
            losses = compute_losses(model.forward_intermediates(xt, pt), xt, loss_weights)
        losses["total"].backward()
        opt.step()

    train = _median_time(step, args.warmup, args.repeats, sync)
    model.eval()

    @torch.no_grad()
    def infer() -> None:
        with autocast_for(device.type, args.precision):
            model.diffraction_to_obj(xt, pt)

    infer_s = _median_time(infer, args.warmup, args.repeats, sync)
    return {"train_s": train, "infer_s": infer_s, "device": str(device), "framework": f"torch {torch.__version__}",
            "threads": torch.get_num_threads()}


def _run_worker(backend: str, gridsize: int, batch: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", backend, "--gridsize", str(gridsize), "--batch",
           str(batch), "--N", str(args.N), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
           "--device", args.device, "--precision", args.precision]
    cmd += ["--channels-last" if args.channels_last else "--no-channels-last"]
    cmd += ["--compile"] if args.compile else []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit status {proc.returncode}"}
    return json.loads(lines[-1])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--gridsize", type=int, default=None, help="one configuration (with --batch)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1, help="alternate the backends this many times; keep the best")
    p.add_argument("--backends", nargs="+", default=["torch", "tensorflow"], choices=["torch", "tensorflow"])
    p.add_argument("--device", default="cpu", help="torch device (TensorFlow always runs on CPU here)")
    p.add_argument("--precision", default="32-true", choices=["32-true", "16-mixed", "bf16-mixed"])
    p.add_argument("--channels-last", dest="channels_last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="torch.compile the CNN (torch worker)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--worker", choices=["torch", "tensorflow"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        fn = worker_torch if args.worker == "torch" else worker_tensorflow
        print(json.dumps(fn(args)))
        return 0
    configs = [(args.gridsize, args.batch)] if args.gridsize else list(DEFAULT_CONFIGS)
    rows = []
    for gridsize, batch in configs:
        batch = batch or 16
        row = {"N": args.N, "gridsize": gridsize, "batch": batch}
        for _round in range(args.rounds):
            for backend in args.backends:
                result = _run_worker(backend, gridsize, batch, args)
                best = row.get(backend)
                if best is None or "error" in best or ("error" not in result and result["train_s"] < best["train_s"]):
                    if best is not None and "infer_s" in best and "infer_s" in result:
                        result["infer_s"] = min(result["infer_s"], best["infer_s"])
                    row[backend] = result
                elif "infer_s" in result:
                    best["infer_s"] = min(best["infer_s"], result["infer_s"])
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"N={args.N}, median of {args.repeats} after {args.warmup} warm-up; torch device {args.device}, "
          f"precision {args.precision}, channels_last={args.channels_last}, compile={args.compile}")
    print(f"{'gs':>3} {'batch':>5} | {'backend':<10} {'train ms':>9} {'train/s':>9} {'infer ms':>9} {'infer/s':>9}")
    for row in rows:
        for backend in args.backends:
            r = row[backend]
            if "error" in r:
                print(f"{row['gridsize']:>3} {row['batch']:>5} | {backend:<10} error: {r['error']}")
                continue
            print(f"{row['gridsize']:>3} {row['batch']:>5} | {backend:<10} {1e3 * r['train_s']:9.1f} "
                  f"{row['batch'] / r['train_s']:9.1f} {1e3 * r['infer_s']:9.1f} {row['batch'] / r['infer_s']:9.1f}")
        t, f = row.get("torch", {}), row.get("tensorflow", {})
        if "train_s" in t and "train_s" in f:
            print(f"{'':>9} | torch/TF ratio: train {t['train_s'] / f['train_s']:.2f}, "
                  f"inference {t['infer_s'] / f['infer_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data-parallel training throughput of the PyTorch CLI: 1 device vs ``--devices D`` (Lightning DDP).

    python benchmarks/bench_ddp.py [--accelerator cuda] [--devices 2] [--n_positions 4096] [--batch_size 64]
                                   [--report FILE]

Simulates an N=64 scan once, then runs ``python -m ptycho_torch.train`` for ``E`` epochs for each
device count (1, and ``--devices`` when it is > 1); the steady epoch time is the median of the
``epoch_time_s`` column of ``history.csv`` after the first epoch (rank 0's wall time per epoch,
validation included; the first epoch pays for warm-up and ``torch.compile``), and samples/s is the
training groups per steady epoch second.  ``--batch_size`` is the global batch (per device:
``batch_size / devices``).  Prints one line per device count and writes the numbers as JSON
with ``--report``.  Runs on CPU too (``--accelerator cpu``: gloo, one process per device).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _train(data: Path, out: Path, *, accelerator: str, devices: int, epochs: int, n_groups: int,
           batch_size: int) -> tuple[float, list[float]]:
    """Wall seconds of the CLI run and the per-epoch ``epoch_time_s`` of its history."""
    cmd = [sys.executable, "-m", "ptycho_torch.train", "--train_data_file", str(data), "--output_dir", str(out),
           "--n_groups", str(n_groups), "--batch_size", str(batch_size), "--nepochs", str(epochs),
           "--accelerator", accelerator, "--devices", str(devices), "--logger", "none", "--disable_checkpointing",
           "--quiet"]
    if devices > 1:
        cmd += ["--strategy", "ddp"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    rows = (out / "history.csv").read_text().splitlines()
    column = rows[0].split(",").index("epoch_time_s")
    return wall, [float(r.split(",")[column]) for r in rows[1:]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accelerator", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--n_positions", type=int, default=4096)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--report", type=Path, default=None)
    args = p.parse_args(argv)
    from ptycho.simulate import simulate_dataset
    from ptycho.training_plan import split_train_val

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        data = Path(tmp) / "sim.npz"
        simulate_dataset(N=64, n_positions=args.n_positions, seed=0).to_file(data)
        n_train = len(split_train_val(args.n_positions)[0])
        for devices in sorted({1, args.devices}):
            wall, epochs = _train(data, Path(tmp) / f"d{devices}", accelerator=args.accelerator, devices=devices,
                                  epochs=args.epochs, n_groups=args.n_positions, batch_size=args.batch_size)
            epoch = statistics.median(epochs[1:] or epochs)
            rows.append({"devices": devices, "accelerator": args.accelerator, "global_batch": args.batch_size,
                         "steady_epoch_s": epoch, "samples_per_s": n_train / epoch, "wall_s": wall,
                         "epoch_time_s": epochs})
            print(f"{args.accelerator} x{devices}: steady epoch {epoch:.2f} s, {n_train / epoch:.1f} samples/s "
                  f"(global batch {args.batch_size}, {n_train} training groups)", flush=True)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

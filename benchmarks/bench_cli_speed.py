"""The unified CLI against the backend's own CLI on the same PyTorch run (issue: ``ptycho_train --backend
pytorch`` was 2.3x slower than ``python -m ptycho_torch.train`` because torch was imported before the
OpenMP wait policy was set).

    python benchmarks/bench_cli_speed.py [--repeats 3] [--nepochs 3]

Each repeat runs both commands, in alternating order, each in a fresh process, on the same simulated
file (N 32, 96 positions, gridsize 1, batch 8, the same seed), and the script prints every wall time, the
median of each command and the ratio unified / own of the medians: measured side by side in one run, so
a shared, noisy machine moves both alike.  Exit status 1 when a run fails.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def commands(data: Path, out: Path, nepochs: int) -> dict[str, list[str]]:
    """The two command lines (same flags in the one vocabulary both share)."""
    common = ["--train_data_file", str(data), "--n_groups", "64", "--batch_size", "8", "--nepochs", str(nepochs),
              "--seed", "1", "--logger", "none", "--quiet"]
    return {
        "ptycho_train --backend pytorch": ["-m", "ptycho.cli.train", "--backend", "pytorch", "--accelerator", "cpu",
                                           "--output_dir", str(out / "unified"), *common],
        "python -m ptycho_torch.train": ["-m", "ptycho_torch.train", "--accelerator", "cpu", "--output_dir",
                                         str(out / "own"), *common],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nepochs", type=int, default=3)
    args = parser.parse_args(argv)
    from ptycho.simulate import simulate_dataset

    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sim.npz"
        simulate_dataset(N=32, n_positions=96, nphotons=1e6, seed=5).to_file(data)
        for i in range(args.repeats):
            cmds = list(commands(data, Path(tmp) / str(i), args.nepochs).items())
            for name, cmd in cmds if i % 2 == 0 else reversed(cmds):
                times.setdefault(name, []).append(_timed(cmd))
                print(f"repeat {i}: {name}: {times[name][-1]:.1f} s", flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    (unified, u), (own, o) = medians.items()
    print(f"median {unified}: {u:.1f} s; {own}: {o:.1f} s; ratio unified/own {u / o:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

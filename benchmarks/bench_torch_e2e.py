"""End-to-end time of the PyTorch CLIs on the committed fixture (issue: a fraction of upstream's 36 s).

    python benchmarks/bench_torch_e2e.py [--repeats 3]

Runs exactly the workload upstream timed — ``python -m ptycho_torch.train`` for 2 epochs on 64
groups (gridsize 1, batch 4, CPU) then ``python -m ptycho_torch.inference`` on 32 groups — each in a
fresh process, and prints the wall time of each command and of the pair (median over repeats) next
to the time of a bare ``import torch`` / ``import lightning`` process, which bounds what the CLIs can
reach.  Exit status 1 when a run fails.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pytorch_integration" / "minimal_dataset_v1.npz"
UPSTREAM_SECONDS = 36.0


def _timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_once(tmp: Path) -> dict[str, float]:
    """Wall seconds of the training command, the inference command and the bare imports."""
    train = _timed(["-m", "ptycho_torch.train", "--train_data_file", str(FIXTURE), "--test_data_file", str(FIXTURE),
                    "--output_dir", str(tmp / "t"), "--n_groups", "64", "--gridsize", "1", "--batch_size", "4",
                    "--nepochs", "2", "--accelerator", "cpu", "--logger", "none", "--quiet"])
    infer = _timed(["-m", "ptycho_torch.inference", "--model_path", str(tmp / "t"), "--test_data", str(FIXTURE),
                    "--output_dir", str(tmp / "i"), "--n_groups", "32", "--accelerator", "cpu", "--quiet"])
    imports = _timed(["-c", "import torch, lightning"])
    return {"train": train, "inference": infer, "total": train + infer, "import torch+lightning": imports}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_once(Path(tmp)))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items()), flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"median over {args.repeats}: " + ", ".join(f"{k} {v:.1f} s" for k, v in med.items()))
    print(f"train + inference = {med['total']:.1f} s = {med['total'] / UPSTREAM_SECONDS:.2f} x upstream's "
          f"{UPSTREAM_SECONDS:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

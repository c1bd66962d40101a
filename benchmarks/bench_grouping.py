"""Benchmark neighbour grouping and grouped-data assembly (issue 2, "Done when").

Target: grouping 100,000 random scan positions with gridsize 2 and K 7 takes at
most 2 s.  Also times ``RawData.generate_grouped_data`` on a realistic dataset
(default 2,000 positions, N = 64, with an object so ``Y`` is cut too).

Reports the median (and min/max) wall time of several repeats.  A plain script,
not a test: ``python benchmarks/bench_grouping.py [--repeats 5] [--points 100000]``.
Exit status is 0 whether or not the target is met; the verdict is printed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from ptycho.grouping import group_neighbors
from ptycho.raw_data import RawData

TARGET_S = 2.0


def _time(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _report(label: str, times: list[float]) -> float:
    med = statistics.median(times)
    print(f"{label}: median {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}, n={len(times)})")
    return med


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000, help="positions to group (default 100000)")
    ap.add_argument("--gridsize", type=int, default=2)
    ap.add_argument("--K", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="KD-tree query threads (default 1)")
    ap.add_argument("--dataset-points", type=int, default=2_000, help="positions of the realistic dataset")
    ap.add_argument("--N", type=int, default=64, help="pattern size of the realistic dataset")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    rng = np.random.default_rng(args.seed)

    # ---- 1. pure grouping
    span = np.sqrt(args.points) * 4.0  # ~4 px mean spacing, like a real scan
    xy = rng.uniform(0.0, span, size=(args.points, 2))
    nn = group_neighbors(xy, args.gridsize, args.K, args.points, seed=args.seed, workers=args.workers)  # warm-up
    med = _report(
        f"group_neighbors: {args.points} positions, gridsize {args.gridsize}, K {args.K} -> {nn.shape}",
        _time(
            lambda: group_neighbors(xy, args.gridsize, args.K, args.points, seed=args.seed, workers=args.workers),
            args.repeats,
        ),
    )
    verdict = "MEETS" if med <= TARGET_S else "MISSES"
    print(f"  target {TARGET_S:.1f} s: {verdict} ({med:.3f} s)")

    # ---- 2. realistic dataset: grouping + assembly (diffraction, X_full, coords, Y)
    M, N = args.dataset_points, args.N
    side = np.sqrt(M) * 4.0
    x = rng.uniform(N / 2, N / 2 + side, M)
    y = rng.uniform(N / 2, N / 2 + side, M)
    diff = np.sqrt(rng.poisson(3.0, size=(M, N, N))).astype(np.float32)
    probe = np.ones((N, N), np.complex64)
    H = int(side + N) + 1
    obj = np.exp(1j * rng.uniform(-1, 1, (H, H))).astype(np.complex64)
    raw = RawData.from_coords_without_pc(x, y, diff, probe, None, obj)
    for gs in (1, 2):
        reps = max(1, args.repeats // 2)
        _report(
            f"generate_grouped_data: {M} positions, N {N}, gridsize {gs}, K {args.K}, with Y",
            _time(lambda gs=gs: raw.generate_grouped_data(N, K=args.K, nsamples=M, seed=1, gridsize=gs), reps),
        )
    raw_noobj = RawData.from_coords_without_pc(x, y, diff, probe, None)
    _report(
        f"generate_grouped_data: {M} positions, N {N}, gridsize 2, K {args.K}, no objectGuess (no Y)",
        _time(lambda: raw_noobj.generate_grouped_data(N, K=args.K, nsamples=M, seed=1, gridsize=2), args.repeats),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

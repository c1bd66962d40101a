"""Training on data larger than memory: peak resident memory and patterns/s, streamed vs in memory.

    python benchmarks/bench_streaming.py [--n_patterns 200000] [--N 64] [--train_groups 200000]
                                         [--batch_size 16] [--workdir DIR] [--keep]
                                         [--phases stream,memory,read,infer] [--infer_groups 8192]

1. Writes a synthetic scan of ``n_patterns`` N x N float32 diffraction amplitudes (200,000 x 64 x 64
   = 3.3 GB) chunk by chunk into an *uncompressed* data-contract NPZ, never holding more than one
   chunk.  Generator (cheap on purpose; the physics simulator would take hours for 200k patterns):
   far-field amplitudes ``|fftshift(fft2(probe * patch))| / N`` of the default probe on a random
   smooth phase object at raster positions with integer shifts, no noise.
2. ``stream`` (its own process): ``ptycho.streaming.open_streaming`` -> group ``train_groups``
   groups over all positions (positions only) -> one epoch of ``train_cdi_model_torch`` (gridsize
   1, CPU, no logger/checkpoints) whose batches are read from disk.  Reports the epoch's wall time,
   patterns/s (training groups x C / fit seconds, validation included in the time) and the
   process's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, imports included).  The
   epoch time starts after the imports and includes the Trainer set-up.
3. ``memory`` (its own process): the same groups, gathered into an in-memory
   ``PtychoDataContainer`` first, trained the same way (the existing in-memory path), same numbers.
4. ``read`` (its own process): groups *every* position (``n_patterns`` groups, positions only) and
   gathers random global batches of ``batch_size`` groups from disk for ``--read_seconds``: the
   rate at which streaming can deliver patterns, independent of the model, and the peak RSS of
   grouping the whole scan.
5. ``infer`` (its own process, only when asked): streamed inference of the first ``--infer_groups``
   positions in scan order with an untrained model (``common.predict_crops`` + ``common.stitch``):
   groups/s and peak RSS (the ``patterns/s`` column counts groups; gridsize 1).

Prints one table; exit status 1 when the streamed run's peak RSS exceeds ``--max_rss_gb`` (2).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import scipy.fft

CHUNK = 2048


def write_dataset(path: Path, n: int, N: int, seed: int = 0) -> dict[str, float]:
    """Write the synthetic scan to ``path`` chunk-wise; return seconds and this process's peak RSS (GB)."""
    from ptycho.probe import get_default_probe

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    step = 2
    size = side * step + N + 2
    k = np.fft.fftfreq(size)
    smooth = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 0.02**2))
    phase = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) * smooth))
    obj = np.exp(1j * np.pi * phase / np.abs(phase).max()).astype(np.complex64)
    probe = np.asarray(get_default_probe(N), dtype=np.complex64)
    ix, iy = np.arange(n) % side, np.arange(n) // side
    x0, y0 = ix * step, iy * step  # top-left corners of each patch
    xc = (x0 + N / 2).astype(np.float64)
    yc = (y0 + N / 2).astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(obj, (N, N))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in (("xcoords", xc), ("ycoords", yc), ("xcoords_start", xc), ("ycoords_start", yc),
                         ("probeGuess", probe), ("scan_index", np.zeros(n, np.int64))):
            with zf.open(f"{key}.npy", "w") as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
        with zf.open("diff3d.npy", "w", force_zip64=True) as fh:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
                      "shape": (n, N, N)}
            np.lib.format.write_array_header_2_0(fh, header)
            for s in range(0, n, CHUNK):
                sl = slice(s, min(n, s + CHUNK))
                psi = probe * windows[y0[sl], x0[sl]]
                amp = np.abs(scipy.fft.fftshift(scipy.fft.fft2(psi), axes=(-2, -1))) / N  # complex64 FFT
                fh.write(np.ascontiguousarray(amp, dtype=np.float32).tobytes())
    return {"seconds": time.perf_counter() - start, "peak_rss_gb": _peak_rss_gb()}


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def run_phase(phase: str, path: Path, out: Path, groups: int, N: int, batch_size: int, workers: int) -> dict:
    """Train one epoch on ``groups`` streamed groups (``stream``) or the same groups in memory (``memory``)."""
    from ptycho import params
    from ptycho.config.config import ModelConfig, PyTorchExecutionConfig, TrainingConfig
    from ptycho.loader import PtychoDataContainer
    from ptycho.streaming import open_streaming
    from ptycho_torch.workflows.components import train_cdi_model_torch

    t0 = time.perf_counter()
    data = open_streaming(path)
    config = TrainingConfig(model=ModelConfig(N=N, gridsize=1), n_groups=groups, batch_size=batch_size, nepochs=1,
                            subsample_seed=0, output_dir=out)
    container = data.group(N=N, gridsize=1, K=config.neighbor_count, nsamples=groups, seed=0)
    if phase == "memory":
        n = len(container)
        X = container.gather_X(np.arange(n))
        ones = np.ones_like(X)
        container = PtychoDataContainer(
            X, ones, np.zeros_like(X), 1.0, None, container.coords_nominal, container.coords_nominal,
            container.nn_indices, container.global_offsets, container.local_offsets, container.probe,
            X_full_norm=container.X_full_norm)
        del ones
    prep = time.perf_counter() - t0
    execution = PyTorchExecutionConfig(accelerator="cpu", logger_backend=None, enable_checkpointing=False,
                                       num_workers=workers)
    import lightning  # noqa: F401  (imports are not part of the epoch time)

    import ptycho_torch.training  # noqa: F401
    with params.isolated():
        t1 = time.perf_counter()
        results = train_cdi_model_torch(container, None, config, execution, quiet=True)
        fit = time.perf_counter() - t1
    n_groups = len(container)
    return {"phase": phase, "groups": n_groups, "prep_s": prep, "fit_s": fit,
            "patterns_per_s": n_groups * container.nn_indices.shape[1] / fit,
            "train_loss": results["history"]["train_loss"][-1], "peak_rss_gb": _peak_rss_gb()}


def run_read(path: Path, N: int, batch_size: int, seconds: float) -> dict:
    """Group every position of the file and time random batch gathers (no model)."""
    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho.streaming import open_streaming

    data = open_streaming(path)
    t0 = time.perf_counter()
    K = TrainingConfig(model=ModelConfig(N=N)).neighbor_count
    container = data.group(N=N, gridsize=1, K=K, nsamples=len(data), seed=0)
    group_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += len(container.gather_X(rng.integers(0, len(container), batch_size), 2.0))
    return {"phase": "read", "groups": len(container), "prep_s": group_s, "fit_s": time.perf_counter() - start,
            "patterns_per_s": n / (time.perf_counter() - start), "train_loss": float("nan"),
            "peak_rss_gb": _peak_rss_gb()}


def run_infer(path: Path, N: int, groups: int, batch_size: int) -> dict:
    """Streamed inference: the first ``groups`` scan positions (scan order) predicted chunk by chunk and stitched.

    The model is an untrained PtychoPINN (its weights do not change the time or the memory); the
    predictions go through ``common.predict_crops`` (``STREAM_PREDICT_GROUPS`` groups per call, only
    each object's central M x M kept) and ``common.stitch`` (phase synchronisation and reassembly).
    """
    import functools

    from ptycho import params
    from ptycho.cli._common import stitch_crop
    from ptycho.config.config import InferenceConfig, ModelConfig, TrainingConfig
    from ptycho.streaming import open_streaming
    from ptycho.workflows import common
    from ptycho_torch.training import PtychoPINN_Lightning
    from ptycho_torch.workflows.components import predict_objects

    t0 = time.perf_counter()
    data = open_streaming(path)
    config = InferenceConfig(model=ModelConfig(N=N, gridsize=1), model_path=path, test_data_file=path)
    container = data.group(N=N, gridsize=1, K=config.neighbor_count, nsamples=groups, seed=0,
                           sequential_sampling=True)
    prep = time.perf_counter() - t0
    with params.isolated():
        model = PtychoPINN_Lightning(config.model, TrainingConfig(model=config.model)).model
        predict = functools.partial(predict_objects, model, batch_size=batch_size, intensity_scale=1.0, device="cpu")
        t1 = time.perf_counter()
        M = stitch_crop(N)
        crops = common.predict_crops(predict, container, M)
        _amp, _phase, stitched = common.stitch(crops, container.global_offsets, M)
        seconds = time.perf_counter() - t1
    return {"phase": "infer", "groups": len(container), "prep_s": prep, "fit_s": seconds,
            "patterns_per_s": len(container) / seconds, "train_loss": float("nan"), "peak_rss_gb": _peak_rss_gb(),
            "canvas": list(stitched.shape[:2])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n_patterns", type=int, default=200_000)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--train_groups", type=int, default=None, help="groups trained in the epoch (default: all)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_workers", type=int, default=0, help="DataLoader workers of both runs")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the generated dataset")
    p.add_argument("--max_rss_gb", type=float, default=2.0)
    p.add_argument("--phases", default="stream,memory,read", help="which of stream, memory, read, infer to run")
    p.add_argument("--infer_groups", type=int, default=8192, help="groups the infer phase reconstructs")
    p.add_argument("--read_seconds", type=float, default=20.0)
    p.add_argument("--phase", choices=("stream", "memory", "read", "infer"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    groups = args.train_groups or args.n_patterns
    if args.phase == "read":
        print(json.dumps(run_read(args.data, args.N, args.batch_size, args.read_seconds)))
        return 0
    if args.phase == "infer":
        print(json.dumps(run_infer(args.data, args.N, args.infer_groups, 64)))
        return 0
    if args.phase is not None:
        print(json.dumps(run_phase(args.phase, args.data, args.workdir, groups, args.N, args.batch_size,
                                   args.num_workers)))
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"synthetic_{args.n_patterns}_N{args.N}.npz"
    gen = write_dataset(data, args.n_patterns, args.N) if not data.exists() else {"seconds": 0.0, "peak_rss_gb": 0.0}
    print(f"dataset {data} ({data.stat().st_size / 1e9:.2f} GB, {args.n_patterns} x {args.N}x{args.N} float32): "
          f"written in {gen['seconds']:.0f} s, generator peak RSS {gen['peak_rss_gb']:.2f} GB", flush=True)
    rows = {}
    for phase in args.phases.split(","):
        cmd = [sys.executable, __file__, "--phase", phase, "--data", str(data), "--workdir", str(work / phase),
               "--N", str(args.N), "--train_groups", str(groups), "--batch_size", str(args.batch_size),
               "--num_workers", str(args.num_workers), "--n_patterns", str(args.n_patterns),
               "--read_seconds", str(args.read_seconds), "--infer_groups", str(args.infer_groups)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = rows[phase] = json.loads(out.strip().splitlines()[-1])
        print(f"{r['phase']:7s} {r['groups']:7d} groups: prep {r['prep_s']:7.1f} s, timed {r['fit_s']:8.1f} s, "
              f"{r['patterns_per_s']:8.1f} patterns/s, peak RSS {r['peak_rss_gb']:.2f} GB, "
              f"loss {r['train_loss']:.6g}", flush=True)
    if not args.keep and args.workdir is None:
        data.unlink()
    if "stream" in rows and "memory" in rows:
        ratio = rows["stream"]["patterns_per_s"] / rows["memory"]["patterns_per_s"]
        print(f"streamed / in-memory training throughput: {ratio:.2f}")
    worst = max(rows[p]["peak_rss_gb"] for p in rows if p != "memory")
    return 0 if worst < args.max_rss_gb else 1


if __name__ == "__main__":
    sys.exit(main())

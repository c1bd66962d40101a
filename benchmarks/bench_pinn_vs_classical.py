"""PtychoPINN beside a classical iterative engine (pty-chi LSQML) on the same held-out scan.

For each (overlap, dose) case: simulate scan A and scan B with ``ptycho.simulate`` (same
kind of object and probe, different seeds, so different objects and positions); train the
PINN (TensorFlow backend, ``ptycho_tf.workflows.components.train_cdi_model``) on A; infer on B
(group, predict, stitch: ``reassemble_cdi_image``; timed twice, the second "warm" call is what every
further scan costs, the first also builds TensorFlow's graph); reconstruct B directly with pty-chi's
LSQML (known probe and positions, flat start; ``conformance/classical.py``).  Both results
are scored against B's true object on the same region (the PINN's stitched canvas) with
``ptycho.evaluation.score_pair``: amplitude / phase SSIM and PSNR, the 1/2-bit FRC
cutoff (cycles/pixel); Pearson correlations with ``ptycho.evaluation.pearson``.  Wall times:
PINN training, PINN inference, classical reconstruction (each on the CPU, single-threaded
when ``--threads 1``).  Defaults: the README demo's training (N=32, gridsize 2, 512 positions at 3.5 px
spacing, 32 epochs of batch 4) on A, and a B of 1,024 positions, large enough that per-scan costs, not
start-up, dominate; the demo's overlap, a sparser scan (5 px) and a 1e4-fold lower dose.

    python benchmarks/bench_pinn_vs_classical.py                       # the README table
    python benchmarks/bench_pinn_vs_classical.py --quick --json out.json

Overlap is set by the scan density (``scan_spacing`` pixels per position: smaller = more
overlap), dose by ``nphotons`` (mean photons per pattern).  pty-chi must be installed
(``pip install --no-deps ptychi==2.2.0`` plus the ``oracle`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _scores(recon, truth, mask):
    from ptycho.evaluation import pearson, score_pair

    s = score_pair(recon, truth, mask)
    import numpy as np

    aligned = recon * np.exp(-1j * s["global_phase"])
    return {
        "amp_pearson": pearson(np.abs(recon), np.abs(truth), mask),
        "phase_pearson": pearson(np.angle(aligned), np.angle(truth), mask),
        "amp_ssim": s["amp_ssim"],
        "phase_ssim": s["phase_ssim"],
        "amp_psnr": s["amp_psnr"],
        "phase_psnr": s["phase_psnr"],
        "frc_cutoff": s["frc_cutoff"],
    }


def run_case(*, N: int, n_positions: int, n_positions_b: int, spacing: float, nphotons: float, nepochs: int,
             batch_size: int, gridsize: int, classical_epochs: int, seed: int) -> dict:
    """One overlap/dose case; returns the measurements of both methods."""
    import numpy as np

    from conformance.classical import ptychi_reconstruct
    from ptycho import params
    from ptycho.config.config import ModelConfig, TrainingConfig, update_legacy_dict
    from ptycho.evaluation import coverage_mask, ground_truth_canvas
    from ptycho.reference.physics import object_patches
    from ptycho.simulate import simulate_dataset
    from ptycho_tf.workflows.components import reassemble_cdi_image, train_cdi_model

    sim = dict(N=N, nphotons=nphotons, scan_spacing=spacing)
    scan_a = simulate_dataset(n_positions=n_positions, **sim, seed=seed)
    scan_b = simulate_dataset(n_positions=n_positions_b, **sim, seed=seed + 1)
    config = TrainingConfig(
        model=ModelConfig(N=N, gridsize=gridsize, n_filters_scale=1), nepochs=nepochs, batch_size=batch_size,
        nphotons=nphotons, n_groups=n_positions, subsample_seed=seed,
    )
    update_legacy_dict(params.cfg, config)
    t0 = time.perf_counter()
    train_cdi_model(scan_a, None, config, quiet=True)
    t_train = time.perf_counter() - t0
    M = min(20, N // 2)
    # B is grouped with the training config: n_groups = A's position count (512 groups of 4 by default)
    t_infer = []
    for _ in range(2):  # cold (first predict call builds the graph), then warm (what each further scan costs)
        t0 = time.perf_counter()
        _amp, _phase, res = reassemble_cdi_image(scan_b, config, M=M)
        t_infer.append(time.perf_counter() - t0)

    stitched = res["stitched"][..., 0]
    offsets = res["global_offsets"]
    mask = coverage_mask(offsets, N, M)
    truth = ground_truth_canvas(scan_b.objectGuess, offsets, stitched.shape[0])
    pinn = _scores(stitched, truth, mask)

    xy = np.stack([scan_b.xcoords, scan_b.ycoords], axis=1)
    classical = ptychi_reconstruct(scan_b.diff3d, scan_b.probeGuess, xy, scan_b.objectGuess.shape,
                                   epochs=classical_epochs)
    centre = np.asarray(offsets, dtype=np.float64).reshape(-1, 2).mean(axis=0)
    on_canvas = object_patches(classical.obj, centre[None, :], stitched.shape[0])[0]  # same grid as the PINN's
    cls = _scores(on_canvas, truth, mask)
    return {
        "N": N, "n_positions": n_positions, "n_positions_b": n_positions_b, "scan_spacing_px": spacing,
        "nphotons": nphotons,
        "gridsize": gridsize, "nepochs": nepochs, "classical_epochs": classical_epochs,
        "pinn": {**pinn, "train_s": t_train, "infer_cold_s": t_infer[0], "infer_s": t_infer[1]},
        "classical": {**cls, "recon_s": classical.seconds},
    }


def _table(rows: list[dict]) -> str:
    head = ("| spacing px | photons | method | amp SSIM | phase SSIM | amp PSNR | phase PSNR | FRC cutoff | "
            "amp r | phase r | train s | recon/infer s |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        for name in ("pinn", "classical"):
            m = r[name]
            train = f"{m['train_s']:.0f}" if name == "pinn" else "-"
            run = m["infer_s"] if name == "pinn" else m["recon_s"]
            lines.append(
                f"| {r['scan_spacing_px']:g} | {r['nphotons']:.0e} | {'PINN' if name == 'pinn' else 'LSQML'} | "
                f"{m['amp_ssim']:.3f} | {m['phase_ssim']:.3f} | {m['amp_psnr']:.1f} | {m['phase_psnr']:.1f} | "
                f"{m['frc_cutoff']:.3f} | {m['amp_pearson']:.3f} | {m['phase_pearson']:.3f} | {train} | {run:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--N", type=int, default=32)
    p.add_argument("--n_positions", type=int, default=512, help="scan A (training) positions")
    p.add_argument("--n_positions_b", type=int, default=1024, help="scan B (held out, reconstructed) positions")
    p.add_argument(
        "--cases", nargs="+", default=["3.5:1e9", "5:1e9", "3.5:1e5"],
        help="SPACING:PHOTONS pairs: scan spacing in px (smaller = more overlap) and photons per pattern",
    )
    p.add_argument("--nepochs", type=int, default=32)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--gridsize", type=int, default=2)
    p.add_argument("--classical_epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for TF and torch (default: all)")
    p.add_argument("--quick", action="store_true", help="one case, 3 epochs, 128 positions (smoke run)")
    p.add_argument("--json", type=Path, default=None, help="also write the measurements as JSON")
    args = p.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import tensorflow as tf
        import torch

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        torch.set_num_threads(args.threads)
    cases = [tuple(float(v) for v in c.split(":")) for c in args.cases]
    nepochs, classical_epochs = args.nepochs, args.classical_epochs
    n_a, n_b = args.n_positions, args.n_positions_b
    if args.quick:
        cases, nepochs, classical_epochs, n_a, n_b = cases[:1], 3, 5, 128, 128
    rows = []
    for spacing, dose in cases:
        row = run_case(N=args.N, n_positions=n_a, n_positions_b=n_b, spacing=spacing, nphotons=dose,
                       nepochs=nepochs, batch_size=args.batch_size, gridsize=args.gridsize,
                       classical_epochs=classical_epochs, seed=args.seed)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

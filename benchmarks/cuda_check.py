"""CUDA checks and GPU throughput of the PyTorch backend (run on a machine with a GPU).

    PYTHONPATH=. python benchmarks/cuda_check.py [--quick]

1. correctness on CUDA: every intermediate of the forward pass and the gradients of one batch on
   CUDA (fp32) against the same model on CPU;
2. determinism on CUDA: two one-epoch Lightning runs (``deterministic=True``) give identical weights;
3. the backend's own training and inference throughput (Lightning ``fit`` / ``predict_objects``) on
   simulated N=64 gridsize-1 data, fp32 and ``bf16-mixed`` (channels-last, ``torch.compile`` on);
4. the bare step time of ``benchmarks/bench_step_time.py`` for comparison.

Prints one line per result; exits 1 if a correctness check fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ptycho_torch  # noqa: E402,F401,I001  (sets the OpenMP wait policy before torch loads)
import torch  # noqa: E402,I001

from ptycho import params  # noqa: E402
from ptycho.config.config import ModelConfig, PyTorchExecutionConfig, TrainingConfig  # noqa: E402


def _model_pair(gridsize: int):
    from ptycho.canonical_weights import init_canonical_weights
    from ptycho.network_spec import network_spec_from_config
    from ptycho.reference.physics import default_probe, normalize_probe
    from ptycho_torch.model import build_model

    mc = ModelConfig(N=64, gridsize=gridsize)
    w = init_canonical_weights(network_spec_from_config(mc), seed=0, log_scale=math.log(988.2),
                               probe=normalize_probe(default_probe(64), 4.0))
    return build_model(mc, weights=w), build_model(mc, weights=w).cuda()


def check_parity() -> bool:
    """fp32 CUDA vs CPU, with TF32 off (the fp32 parity mode; TF32 convolutions differ by ~1e-3)."""
    from ptycho_torch.losses import LossWeights, compute_losses

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    ok = True
    for gridsize in (1, 2):
        cpu, gpu = _model_pair(gridsize)
        C = gridsize**2
        rng = np.random.default_rng(0)
        x = torch.tensor(rng.gamma(2.0, 1.0, (8, C, 64, 64)).astype(np.float32) * 15)
        pos = torch.tensor(rng.uniform(-3, 3, (8, C, 1, 2)).astype(np.float32))
        outs = []
        for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
            xd, pd = x.to(dev), pos.to(dev)
            out = model.forward_intermediates(xd, pd)
            # MAE: the Poisson gradient 1 - y/pred of these random targets is ill-conditioned at dark pixels
            loss = compute_losses(out, xd, LossWeights(0.0, 1.0))["total"]
            loss.backward()
            grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
            outs.append(({k: v.detach().cpu() for k, v in out.items()}, grads, float(loss.detach())))
        worst = max(float((outs[0][0][k] - outs[1][0][k]).abs().max() / outs[0][0][k].abs().max().clamp_min(1e-12))
                    for k in outs[0][0])
        # relative L2 error of the whole gradient vector, and the tensor contributing most to it
        diff = {k: float((outs[0][1][k] - outs[1][1][k]).norm()) for k in outs[0][1]}
        total = math.sqrt(sum(float(g.norm()) ** 2 for g in outs[0][1].values()))
        gworst = math.sqrt(sum(d**2 for d in diff.values())) / total
        top = max(diff, key=diff.get)
        good = worst < 1e-3 and gworst < 1e-2
        ok &= good
        print(f"parity gs{gridsize}: CUDA vs CPU max rel diff of intermediates {worst:.2e}, gradient "
              f"relative L2 error {gworst:.2e} (largest part: {top}), "
              f"loss {outs[0][2]:.6g} vs {outs[1][2]:.6g} -> {'OK' if good else 'FAIL'}")
    torch.backends.cudnn.allow_tf32 = True
    return ok


def profile_step(batch: int, precision: str, compile_: bool) -> None:
    """Top CUDA kernels of one training step (after warm-up) of the bare step of bench_step_time."""
    from torch.profiler import ProfilerActivity, profile

    from ptycho_torch.losses import LossWeights, compute_losses
    from ptycho_torch.optim import KerasAdam
    from ptycho_torch.runtime import autocast_for

    _cpu, model = _model_pair(1)
    model.use_channels_last(True)
    if compile_:
        model.compile_cnn(True)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.gamma(2.0, 1.0, (batch, 1, 64, 64)).astype(np.float32) * 15, device="cuda")
    pos = torch.zeros(batch, 1, 1, 2, device="cuda")
    opt = KerasAdam([p for p in model.parameters() if p.requires_grad])

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast_for("cuda", precision):
            loss = compute_losses(model.forward_intermediates(x, pos), x, LossWeights())["total"]
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))


def _train(raw, tmp: Path, *, gridsize: int, nepochs: int, batch: int, n_groups: int, precision: str,
           deterministic: bool, compile_: bool | None = None):
    from ptycho_torch.runtime import RuntimeOptions
    from ptycho_torch.workflows.components import run_cdi_example_torch

    with params.isolated():
        config = TrainingConfig(model=ModelConfig(N=raw.N, gridsize=gridsize), nepochs=nepochs, batch_size=batch,
                                n_groups=n_groups, output_dir=tmp)
        execution = PyTorchExecutionConfig(accelerator="cuda", precision=precision, deterministic=deterministic,
                                           logger_backend=None, enable_checkpointing=False,
                                           inference_batch_size=batch)
        start = time.perf_counter()
        _a, _p, results = run_cdi_example_torch(raw, None, config, execution_config=execution, quiet=True,
                                                save_bundle=False, runtime=RuntimeOptions(compile=compile_))
        results["wall_s"] = time.perf_counter() - start
        results["execution"] = execution
    return results


def check_determinism(tmp: Path) -> bool:
    from ptycho.simulate import simulate_dataset
    from ptycho_torch.canonical import export_canonical

    raw = simulate_dataset(N=64, n_positions=96, seed=2)
    weights = []
    for i in range(2):
        res = _train(raw, tmp / f"det{i}", gridsize=2, nepochs=1, batch=16, n_groups=96, precision="32-true",
                     deterministic=True, compile_=False)
        weights.append(export_canonical(res["models"]["autoencoder"]))
    same = all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    print(f"determinism on CUDA (gs2, 1 epoch, deterministic=True): weights identical = {same}")
    return same


class _EpochTimer:
    """Lightning callback recording the wall time of every training epoch (the device synchronised)."""

    def __init__(self) -> None:
        import lightning as L

        class Cb(L.Callback):
            def __init__(self, sink):
                self.sink = sink

            def on_train_epoch_start(self, trainer, module):
                torch.cuda.synchronize()
                self.t = time.perf_counter()

            def on_train_epoch_end(self, trainer, module):
                torch.cuda.synchronize()
                self.sink.append(time.perf_counter() - self.t)

        self.times: list[float] = []
        self.callback = Cb(self.times)


def throughput(tmp: Path, n_positions: int, batch: int, epochs: int) -> None:
    """The backend's own Lightning training and predict_objects throughput, fp32 vs bf16-mixed."""
    from ptycho.simulate import simulate_dataset
    from ptycho.workflows import common
    from ptycho_torch.workflows import trainer as trainer_mod
    from ptycho_torch.workflows.components import predict_objects

    raw = simulate_dataset(N=64, n_positions=n_positions, seed=0)
    original = trainer_mod.build_callbacks
    for precision in ("32-true", "bf16-mixed"):
        timer = _EpochTimer()
        trainer_mod.build_callbacks = lambda *a, _t=timer, **k: [*original(*a, **k), _t.callback]  # noqa: E731
        res = _train(raw, tmp / precision, gridsize=1, nepochs=epochs, batch=batch, n_groups=n_positions,
                     precision=precision, deterministic=False)
        trainer_mod.build_callbacks = original
        n_train = len(res["train_container"]) - math.floor(len(res["train_container"]) * 0.05)
        steady = timer.times[1:] or timer.times
        train_rate = n_train / (sum(steady) / len(steady))
        with params.isolated():
            params.cfg["intensity_scale"] = 988.2
            container = common.create_ptycho_data_container(raw, TrainingConfig(
                model=ModelConfig(N=64, gridsize=1), n_groups=n_positions))
            model = res["models"]["diffraction_to_obj"]
            predict_objects(model, container, batch_size=batch, execution_config=res["execution"])  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            reps = 3
            for _ in range(reps):
                predict_objects(model, container, batch_size=batch, execution_config=res["execution"])
            torch.cuda.synchronize()
            infer_rate = reps * len(container) / (time.perf_counter() - t0)
        print(f"Lightning fit {precision}: {train_rate:,.0f} samples/s (epoch times "
              f"{', '.join(f'{t:.2f}' for t in timer.times)} s, batch {batch}, {n_train} groups); "
              f"predict_objects: {infer_rate:,.0f} patterns/s (incl. host copies)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller throughput run")
    p.add_argument("--skip", nargs="*", default=[], choices=["parity", "determinism", "throughput"])
    p.add_argument("--profile", action="store_true", help="print the top CUDA kernels of a bf16 training step")
    p.add_argument("--tmp", default="/tmp/cuda_check")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    ok = True
    if "parity" not in args.skip:
        ok &= check_parity()
    if "determinism" not in args.skip:
        ok &= check_determinism(tmp)
    if args.profile:
        profile_step(512, "bf16-mixed", compile_=True)
    if "throughput" not in args.skip:
        throughput(tmp, 4096 if args.quick else 16384, 512, 3)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

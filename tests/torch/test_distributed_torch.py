"""Data-parallel PyTorch training: rank-sharded batch plan, DDP strategy wiring, ddp_spawn == one process."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import params
from ptycho.config.config import PyTorchExecutionConfig
from ptycho.training_plan import batches, epoch_order
from ptycho_torch.data import PlanBatchSampler
from ptycho_torch.workflows.trainer import trainer_kwargs, world_size

pytestmark = pytest.mark.torch


def test_each_rank_takes_its_shard_of_the_same_global_batches():
    idx = np.arange(100, 113)  # 13 training groups, global batch 4: 4, 4, 4, 1
    samplers = [PlanBatchSampler(idx, 4, seed=7, world_size=2, rank=r) for r in range(2)]
    for epoch in (0, 1):
        for s in samplers:
            s.set_epoch(epoch)
        got = [list(s) for s in samplers]
        assert len(got[0]) == len(got[1]) == len(samplers[0]) == len(samplers[1]) == 3
        expected = [b for b in batches(idx[epoch_order(13, seed=7, epoch=epoch)], 4) if len(b) >= 2]
        for step, global_batch in enumerate(expected):
            assert got[0][step] + got[1][step] == global_batch.tolist()
            assert not set(got[0][step]) & set(got[1][step])


def test_one_process_sampler_is_unchanged():
    s = PlanBatchSampler(np.arange(13), 4, seed=7)
    assert len(s) == 4 and [len(b) for b in s] == [4, 4, 4, 1]


def test_ddp_strategies_become_ddp_strategy_objects_and_num_nodes_reaches_the_trainer(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    for name, start in (("ddp", "popen"), ("ddp_spawn", "spawn")):
        ex = PyTorchExecutionConfig(accelerator="cpu", devices=2, num_nodes=3, strategy=name, logger_backend=None)
        kw = trainer_kwargs(ex, max_epochs=1, output_dir=tmp_path, has_validation=False)
        assert isinstance(kw["strategy"], DDPStrategy) and kw["strategy"]._start_method == start
        assert kw["strategy"]._ddp_kwargs == {"forward_sync_buffers": False}
        assert kw["strategy"]._process_group_backend == "gloo"
        assert kw["num_nodes"] == 3 and kw["use_distributed_sampler"] is False
        assert world_size(ex) == 6
    kw = trainer_kwargs(PyTorchExecutionConfig(accelerator="cpu", logger_backend=None), max_epochs=1,
                        output_dir=tmp_path, has_validation=False)
    assert kw["strategy"] == "auto" and kw["num_nodes"] == 1


def test_a_global_batch_smaller_than_the_world_is_refused(sim_raw, tmp_path, make_config, quiet_exec):
    from ptycho_torch.workflows import components

    with params.isolated(), pytest.raises(ValueError, match="GLOBAL batch"):
        components.train_cdi_model_torch(sim_raw, None, make_config(tmp_path, batch_size=1),
                                         quiet_exec(devices=2, strategy="ddp_spawn"), quiet=True)


@pytest.mark.slow
def test_ddp_spawn_on_two_cpu_processes_matches_one_process(sim_raw, tmp_path, make_config, quiet_exec):
    """2 gloo ranks, global batch 8 over 13 groups (steps of 4 + 4 and 3 + 2 groups), 2 epochs: same losses, weights."""
    from ptycho_torch.canonical import export_canonical
    from ptycho_torch.workflows import components

    runs = {}
    for name, ex in (("single", quiet_exec()), ("ddp_spawn", quiet_exec(devices=2, strategy="ddp_spawn"))):
        with params.isolated():
            config = make_config(tmp_path / name, n_groups=13, batch_size=8, nepochs=2, subsample_seed=2)
            results = components.train_cdi_model_torch(sim_raw, None, config, ex, quiet=True)
        assert results["global_rank"] == 0
        runs[name] = (results["history"]["train_loss"], export_canonical(results["models"]["autoencoder"]))
    (loss_1, w_1), (loss_2, w_2) = runs["single"], runs["ddp_spawn"]
    assert len(loss_2) == 2  # the history came back from rank 0 with the weights
    np.testing.assert_allclose(loss_2, loss_1, rtol=1e-5)
    for name in w_1:  # the gate's train_k_steps bound: within one learning rate (1e-3)
        assert np.max(np.abs(w_2[name] - w_1[name])) < 1e-3, name


def test_cli_flags_reach_the_execution_config():
    from ptycho.cli import train as unified
    from ptycho_torch import train as torch_cli
    from ptycho_torch.cli.shared import build_execution_config_from_args

    args = torch_cli.build_parser().parse_args(
        ["--train_data_file", "t.npz", "--output_dir", "o", "--devices", "2", "--num_nodes", "3", "--strategy", "ddp"])
    ex = build_execution_config_from_args(torch_cli.apply_deprecated_flags(args), "training")
    assert (ex.devices, ex.num_nodes, ex.strategy) == (2, 3, "ddp")
    args = unified.build_parser().parse_args(["--backend", "pytorch", "--devices", "2"])
    ex = unified._execution_config(args)
    assert (ex.devices, ex.num_nodes, ex.strategy) == (2, 1, "ddp")  # ddp is the default beyond one device
    args = unified.build_parser().parse_args(["--backend", "pytorch"])
    assert unified._execution_config(args).strategy == "auto"


def test_history_travels_in_the_state_dict_and_old_checkpoints_still_load(tmp_path):
    import lightning as L
    import torch

    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho_torch.training import PtychoPINN_Lightning

    mc = ModelConfig(N=32, gridsize=1, n_filters_scale=1)
    with params.isolated():
        module = PtychoPINN_Lightning(mc, TrainingConfig(model=mc))
        module.history = {"train_loss": [3.0, 2.0]}
        state = module.state_dict()
        fresh = PtychoPINN_Lightning(mc, TrainingConfig(model=mc))
        fresh.load_state_dict(state, strict=True)
        assert fresh.history == {"train_loss": [3.0, 2.0]}
        old = {k: v for k, v in state.items() if k != "_extra_state"}  # a checkpoint from before
        path = tmp_path / "old.ckpt"
        torch.save({"state_dict": old, "hyper_parameters": dict(module.hparams),
                    "pytorch-lightning_version": L.__version__}, path)
        loaded = PtychoPINN_Lightning.load_from_checkpoint(path, weights_only=True)
        assert loaded.history == {}

"""Records and the worker: typed params snapshots, deterministic npz, one process per side, errors per stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from conformance import worker
from conformance.backends import ReferenceAdapter
from conformance.inputs import OP_SIGNATURES, write_inputs
from conformance.record import (
    SCHEMA,
    decode_params_cfg,
    encode_params_cfg,
    load_record,
    record_paths,
    write_npz,
)
from conformance.scenarios import FULL, make_scenario
from ptycho.reference.model import OUTPUT_KEYS

TINY = make_scenario("tiny", batch=1, stages=("configure", "physics_ops", "forward", "losses", "gradients",
                                              "train_k_steps", "save_load", "params_cfg", "bundle_layout"),
                     training={"k_steps": 2})
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- records
def test_params_snapshot_round_trips_with_types():
    cfg = {"N": 64, "nphotons": 1e9, "label": "", "h5_path": None, "object.big": True, "lst": [1, 2.5],
           "tup": (1, "a"), "nan": float("nan"), "npf": np.float32(0.5), "probe": np.ones((2, 2, 1), np.complex64),
           "cpx": 1 + 2j}  # fmt: skip
    entries, arrays = encode_params_cfg(cfg, "after_configure")
    json.dumps(entries, allow_nan=False)  # plain JSON
    assert entries["N"] == {"type": "int", "value": 64, "shape": None, "dtype": None}
    assert entries["npf"]["type"] == "numpy.float32"
    assert entries["probe"] == {"type": "ndarray", "value": None, "shape": [2, 2, 1], "dtype": "complex64"}
    assert set(arrays) == {"params_cfg/after_configure/probe"}
    back = decode_params_cfg(entries, arrays, "after_configure")
    assert back["tup"] == (1, "a") and back["cpx"] == 1 + 2j and np.isnan(back["nan"])
    assert back["probe"] is arrays["params_cfg/after_configure/probe"]
    assert {k: back[k] for k in ("N", "label", "h5_path", "object.big", "lst")} == {
        k: cfg[k] for k in ("N", "label", "h5_path", "object.big", "lst")}


def test_npz_is_deterministic_and_keeps_zero_d_arrays(tmp_path):
    arrays = {"b/x": np.arange(6.0).reshape(2, 3), "a": np.float64(2.5), "c": np.zeros((0, 2), np.complex64)}
    p1, p2 = write_npz(tmp_path / "1.npz", arrays), write_npz(tmp_path / "2.npz", dict(reversed(arrays.items())))
    assert p1.read_bytes() == p2.read_bytes()
    with np.load(p1) as npz:
        assert sorted(npz.files) == ["a", "b/x", "c"] and npz["a"].shape == () and npz["c"].dtype == np.complex64
    with pytest.raises(TypeError, match="object"):
        write_npz(tmp_path / "3.npz", {"o": np.array([None])})


# --------------------------------------------------------------------------- worker, in process
def _run(adapter, tmp_path, scenario=TINY, phase="produce"):
    path = worker.run_scenario(adapter, scenario, tmp_path, phase)
    assert path == record_paths(tmp_path, scenario.id, adapter.name, phase)[0]
    return load_record(tmp_path, scenario.id, adapter.name, phase)


def test_reference_produce_record(tmp_path):
    rec = _run(ReferenceAdapter(), tmp_path)
    assert rec.raw["schema"] == SCHEMA and rec.backend == "reference" and rec.phase == "produce"
    assert set(rec.stages) == {"configure", "physics_ops", "forward", "losses", "params_cfg"}
    assert all(e["status"] == "ok" for e in rec.stages.values()), rec.stages
    assert {f"physics_ops/{op}" for op in OP_SIGNATURES} - {"physics_ops/normalize_x_full"} <= set(rec.arrays)
    assert rec.arrays["forward/pred_intensity"].shape == (1, 32, 32, 1)
    assert rec.arrays["losses/total"].shape == () and rec.arrays["losses/total"].dtype == np.float64
    assert rec.params("after_configure")["N"] == 32 and rec.params("after_configure")["gridsize"] == 1
    assert rec.stages["forward"]["arrays"] == [f"forward/{k}" for k in OUTPUT_KEYS]


class _Broken(ReferenceAdapter):
    """The reference with a crashing forward and one crashing physics op."""

    def forward(self, handle, x_scaled, positions):
        raise ZeroDivisionError("forward exploded")

    def physics_op(self, name, *args, **kwargs):
        if name == "translate":
            raise KeyError("translate is broken")
        return super().physics_op(name, *args, **kwargs)


def test_a_crashing_stage_is_recorded_and_the_others_still_run(tmp_path):
    rec = _run(_Broken(), tmp_path)
    fwd = rec.stages["forward"]
    assert fwd["status"] == "error" and fwd["error"]["type"] == "ZeroDivisionError"
    assert "forward exploded" in fwd["error"]["message"] and "Traceback" in fwd["error"]["traceback"]
    ops = rec.stages["physics_ops"]
    assert ops["status"] == "error" and "translate" in ops["error"]["message"]
    assert "physics_ops/trim" in rec.arrays and "physics_ops/translate" not in rec.arrays
    assert rec.stages["configure"]["status"] == "ok" and rec.stages["params_cfg"]["status"] == "ok"


def test_params_cfg_and_working_directory_are_restored(tmp_path):
    from ptycho import params

    before, cwd = params.snapshot(), os.getcwd()
    _run(ReferenceAdapter(), tmp_path)
    assert os.getcwd() == cwd
    assert params.snapshot().keys() == before.keys()


def test_missing_inputs_are_written_and_missing_peers_fail_transplant(tmp_path):
    full = make_scenario("full", batch=1, stages=FULL)
    rec = _run(ReferenceAdapter(), tmp_path, full, phase="consume")
    assert (tmp_path / full.id / "inputs.npz").exists()
    assert list(rec.stages) == ["transplant"] and rec.stages["transplant"]["status"] == "error"
    assert "trained_weights.npz" in rec.stages["transplant"]["error"]["message"]


def test_inputs_of_another_scenario_with_the_same_id_are_rewritten(tmp_path):
    _run(ReferenceAdapter(), tmp_path)
    bigger = make_scenario(TINY.id, batch=2, stages=("configure", "forward"))
    rec = _run(ReferenceAdapter(), tmp_path, bigger)
    assert rec.arrays["forward/pred_intensity"].shape[0] == 2


def test_a_setup_failure_marks_every_stage_of_the_phase(tmp_path):
    write_inputs(TINY, tmp_path / TINY.id)
    (tmp_path / TINY.id / "inputs.npz").write_bytes(b"not an npz")
    rec = _run(ReferenceAdapter(), tmp_path)
    assert set(rec.stages) == {"configure", "physics_ops", "forward", "losses", "params_cfg"}
    assert all(e["status"] == "error" for e in rec.stages.values())


def test_mutant_hook_is_applied_first_and_recorded(monkeypatch):
    calls = []
    fake = types.ModuleType("planted_bugs")
    fake.activate = lambda name, backend: calls.append((name, backend))
    monkeypatch.setitem(sys.modules, "planted_bugs", fake)
    monkeypatch.setenv("PTYCHO_MUTANT", "xy_swap")
    assert worker.activate_mutant("reference") == "xy_swap" and calls == [("xy_swap", "reference")]
    monkeypatch.delenv("PTYCHO_MUTANT")
    assert worker.activate_mutant("reference") is None and len(calls) == 1


# --------------------------------------------------------------------------- worker processes
def _python(code: str, tmp_path: Path, timeout: float = 240) -> str:
    env = {**os.environ, "PTYCHO_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PTYCHO_MUTANT", None)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _both_phases(side: str, run: Path) -> str:
    """Both phases in one process (one framework import), then what it imported and which ops its API lacks."""
    api = "ptycho_tf.parity_api" if side == "tensorflow" else "ptycho_torch.parity_api"
    return (
        "import importlib, json, sys\nfrom conformance.worker import main\n"
        "from conformance.inputs import OP_SIGNATURES\n"
        f"main(['--backend', '{side}', '--phase', 'produce', '--run', r'{run}', '--scenarios', 'tiny'])\n"
        f"main(['--backend', '{side}', '--phase', 'consume', '--run', r'{run}', '--scenarios', 'tiny',"
        " '--stages', 'save_load,params_cfg'])\n"
        f"ops = importlib.import_module('{api}').PHYSICS_OPS\n"
        "print(json.dumps({'frameworks': sorted(m for m in ('tensorflow', 'torch') if m in sys.modules),"
        " 'missing_ops': sorted(set(OP_SIGNATURES) - set(ops))}))\n"
    )


def _check_backend_records(run: Path, side: str) -> None:
    prod, cons = load_record(run, "tiny", side, "produce"), load_record(run, "tiny", side, "consume")
    assert all(e["status"] == "ok" for e in prod.stages.values()), {k: e["error"] for k, e in prod.stages.items()}
    assert all(e["status"] == "ok" for e in cons.stages.values()), {k: e["error"] for k, e in cons.stages.items()}
    assert set(prod.stages) == set(TINY.stages)
    assert prod.arrays["train_k_steps/loss"].shape == (2,)
    assert {k for k in prod.arrays if k.startswith("gradients/")}
    assert set(prod.params_cfg) == {"after_configure", "after_training"} and set(cons.params_cfg) == {"after_load"}
    layout = prod.bundle_layout
    assert layout["backend"] == side and layout["read_error"] is None and "canonical_weights.h5" in layout["members"]
    assert layout["weights"]["probe.real"] == {"shape": [32, 32], "dtype": "float32"}
    for key in (k for k in cons.arrays if k.startswith("save_load/saver/")):
        np.testing.assert_array_equal(cons.arrays[key], cons.arrays[key.replace("saver/", "")], err_msg=key)
    assert (run / "tiny" / side / worker.TRAINED_WEIGHTS).exists()


@pytest.mark.tf
def test_tensorflow_worker_process(tmp_path):
    write_inputs(TINY, tmp_path / "tiny")
    out = json.loads(_python(_both_phases("tensorflow", tmp_path), tmp_path).strip().splitlines()[-1])
    assert out == {"frameworks": ["tensorflow"], "missing_ops": []}
    _check_backend_records(tmp_path, "tensorflow")


@pytest.mark.torch
def test_pytorch_worker_process(tmp_path):
    write_inputs(TINY, tmp_path / "tiny")
    out = json.loads(_python(_both_phases("pytorch", tmp_path), tmp_path).strip().splitlines()[-1])
    assert out == {"frameworks": ["torch"], "missing_ops": []}
    _check_backend_records(tmp_path, "pytorch")


def test_reference_worker_serves_json_lines_without_frameworks(tmp_path):
    request = json.dumps({"scenario": TINY.to_dict(), "run": str(tmp_path), "phase": "produce"})
    proc = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom conformance.worker import main\n"
         "rc = main(['--backend', 'reference', '--serve'])\n"
         "sys.stderr.write(str(sorted(m for m in ('tensorflow', 'torch') if m in sys.modules)))\nsys.exit(rc)"],
        input=request + "\n" + "{not json}\n", cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.endswith("[]")
    ok, bad = (json.loads(line) for line in proc.stdout.strip().splitlines())
    assert ok["ok"] and ok["scenario"] == "tiny" and ok["stages"]["forward"] == "ok"
    assert Path(ok["record"]) == record_paths(tmp_path, "tiny", "reference", "produce")[0]
    assert not bad["ok"] and bad["error"]["type"] == "JSONDecodeError"

"""One side's worker process: run scenarios through one backend (or the reference) and write records.

Usage::

    python -m conformance.worker --backend {tensorflow,pytorch,reference} --phase {produce,consume} \\
        --run RUN --scenarios a,b,c [--stages s1,s2]
    python -m conformance.worker --backend B --serve        # JSON lines on stdin, one reply line each

The worker imports only its own side's framework (the reference neither).  First thing it
applies the mutant named by ``$PTYCHO_MUTANT`` (``planted_bugs.activate``; a mutant of the
other backend is a no-op here).  Each scenario runs in the scenario directory ``RUN/<sid>/``
(inputs from :func:`conformance.inputs.write_inputs`, written here if absent) with
``ptycho.params.cfg`` restored to the process's initial state before and after, the RNGs seeded
with ``DataSpec.seed``, and every stage in its own ``try``: a failing stage is recorded as
``error`` (type, message, traceback) and the other stages still run.  Records go to
``RUN/<sid>/<side>/<phase>.json`` + ``.npz`` (:mod:`conformance.record`).

Phase ``produce`` (stages in this order; ``params.cfg`` snapshots in brackets):

* ``configure``: the side's real config path [``after_configure``]; then the runtime keys the
  workflows write (``intensity_scale``, ``probe`` from the inputs);
* ``physics_ops``: ``physics_ops/<op>`` for every op of ``conformance.inputs.OP_SIGNATURES``;
* ``forward``: ``forward/<key>``, every named intermediate, from the canonical initial weights;
* ``losses`` / ``gradients``: ``losses/{poisson_nll,mae,total}`` (0-d float64),
  ``gradients/<canonical name>``;
* ``train_k_steps``: ``train_k_steps/loss`` ``[k]`` and ``train_k_steps/weights/<name>`` [``after_training``];
* ``optimizer``: ``optimizer/<case>/<name>`` ``[steps, *shape]``: the side's optimizer alone stepped on the
  fixed gradients of ``conformance.optimizer_check`` (the reference: the Adam formula);
* ``save_load``: ``save_load/saver/<key>`` (forward after training), the bundle
  ``RUN/<sid>/<side>/bundle/wts.h5.zip`` and ``trained_weights.npz`` (canonical, in memory);
* ``bundle_layout``: the bundle's member tree, manifest, backend tag and canonical weight
  names/shapes/dtypes (:func:`bundle_layout`);
* ``e2e``: ``e2e/amplitude``, ``e2e/phase`` (stitched ``[S, S]``), ``e2e/loss_history``;
* ``data``: ``data/{train/e0,train/e1,val,infer}/{x_scaled,positions,sizes}``, the batches the side's own
  data pipeline yields (the reference: the core's grouping and batch plan);
* ``workflow``: one run of the backend's own training workflow (shared with ``e2e``) [``workflow/saved``]:
  ``workflow/{train_loss,val_loss,lr}`` per epoch, ``workflow/weights/<name>``, values ``trainable``; the
  bundle in ``RUN/<sid>/<side>/workflow_bundle/``;
* ``config``: every config door of the side [``config/<door>``];
* ``params_cfg``: the snapshots above (stage values list the points).

Phase ``consume`` (a fresh process): ``save_load`` loads the side's own bundle [``after_load``]
and runs the forward (``save_load/<key>``, with ``save_load/saver/<key>`` copied from produce);
``transplant`` loads the peer's trained weights in memory (``transplant/memory/<key>``) and
through the ``canonical_weights.h5`` member of the peer's bundle (``transplant/file/<key>``);
the reference computes ``transplant/<backend>/<key>`` for each backend's trained weights.
``inference`` reloads the workflow's bundle through the backend's inference entry points
(``inference/{api,cli,torch_cli}/...`` [``inference/loaded``, ``inference/payload``]); the reference
computes ``inference/<backend>/...`` from each bundle's canonical weights.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from conformance import contracts
from conformance.backends import (
    WORKFLOW_BUNDLE_DIR,
    Adapter,
    RoutesFailed,
    WorkflowResult,
    make_adapter,
    prepare_process,
)
from conformance.inputs import INPUTS_NAME, OP_SIGNATURES, SCENARIO_NAME, Inputs, read_inputs, write_inputs
from conformance.record import encode_params_cfg, load_record, write_npz, write_record
from conformance.scenarios import BACKENDS, PHASE_STAGES, PHASES, REFERENCE, SIDES, Scenario, stage_closure
from conformance.user_paths import finite_or_none, put_batches

__all__ = [
    "BUNDLE_DIR",
    "TRAINED_WEIGHTS",
    "activate_mutant",
    "bundle_layout",
    "main",
    "run_scenario",
    "serve",
]

#: Where a backend's produce phase saves its bundle, under ``RUN/<sid>/<side>/``.
BUNDLE_DIR = "bundle"
#: The canonical weights after ``train_k_steps`` (in-memory export), under ``RUN/<sid>/<side>/``.
TRAINED_WEIGHTS = "trained_weights.npz"


# --------------------------------------------------------------------------- mutants
def activate_mutant(side: str) -> str | None:
    """Apply ``$PTYCHO_MUTANT`` for this side (``planted_bugs.activate``); returns its name or None."""
    name = os.environ.get("PTYCHO_MUTANT") or None
    if name is None:
        return None
    try:
        from planted_bugs import activate
    except ImportError as exc:
        raise ImportError(f"PTYCHO_MUTANT={name} is set but planted_bugs cannot be imported ({exc})") from exc
    activate(name, side)
    return name


# --------------------------------------------------------------------------- bundle layout
def bundle_layout(path: str | PathLike) -> dict[str, Any]:
    """The layout of a ``wts.h5.zip`` read leniently (so a broken bundle still shows what it holds).

    Returns ``{"members": sorted member names, "manifest": manifest.json (or None),
    "manifest_keys": sorted keys, "backend": the manifest's backend tag (or None),
    "weights": {canonical name: {"shape", "dtype"}} from canonical_weights.h5,
    "read_error": None, or why ``ptycho.bundle.read_bundle`` rejects the bundle}``.
    """
    import h5py

    from ptycho.bundle import read_bundle

    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        members = sorted(zf.namelist())
        manifest = json.loads(zf.read("manifest.json")) if "manifest.json" in members else None
        weights: dict[str, dict[str, Any]] = {}
        if "canonical_weights.h5" in members:
            with h5py.File(io.BytesIO(zf.read("canonical_weights.h5")), "r") as h5:
                for name, item in sorted(h5.items()):
                    if isinstance(item, h5py.Dataset):
                        weights[name] = {"shape": list(item.shape), "dtype": item.dtype.name}
    try:
        read_bundle(path)
        read_error = None
    except Exception as exc:  # every way the core reader refuses the bundle is recorded, not raised
        read_error = f"{type(exc).__name__}: {exc}"
    manifest_dict = manifest if isinstance(manifest, dict) else None
    return {
        "members": members,
        "manifest": manifest_dict,
        "manifest_keys": sorted(manifest_dict) if manifest_dict else [],
        "backend": manifest_dict.get("backend") if manifest_dict else None,
        "weights": weights,
        "read_error": read_error,
    }


#: What ``params.cfg`` holds while the save_load stage saves a bundle with an explicit snapshot: values no
#: scenario uses, so a bundle that records the global instead of its snapshot fails ``params_cfg/after_load``.
SAVE_DECOY: dict[str, Any] = {"nepochs": 9876, "batch_size": 3, "nphotons": 12345.0, "n_groups": 4321}


# --------------------------------------------------------------------------- recording
class _Recorder:
    """Collects the stages, arrays and snapshots of one record."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.params_cfg: dict[str, dict[str, Any]] = {}
        self.bundle_layout: dict[str, Any] | None = None

    def entry(self, stage: str) -> dict[str, Any]:
        return self.stages.setdefault(
            stage, {"status": "ok", "seconds": 0.0, "cpu_seconds": 0.0, "error": None, "arrays": [], "values": {}}
        )

    def fail(self, stage: str, exc: BaseException) -> None:
        """Mark ``stage`` as failed by ``exc`` (the first error of a stage is kept)."""
        entry = self.entry(stage)
        if entry["status"] != "error":
            entry["status"] = "error"
            entry["error"] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": "".join(traceback.format_exception(exc)),
            }

    @contextlib.contextmanager
    def stage(self, stage: str) -> Iterator[dict[str, Any]]:
        """Run a block as (part of) ``stage``: an exception marks the stage as error and is swallowed."""
        entry = self.entry(stage)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield entry
        except Exception as exc:  # one broken stage must not hide the others
            self.fail(stage, exc)
        finally:
            entry["seconds"] += time.perf_counter() - t0
            entry["cpu_seconds"] += time.process_time() - c0

    def put(self, stage: str, key: str, value: Any) -> None:
        name = f"{stage}/{key}"
        self.arrays[name] = np.asarray(value)
        self.entry(stage)["arrays"].append(name)

    def put_result(self, stage: str, key: str, value: Any) -> None:
        """Store an op result: arrays as they are, Python floats as 0-d float64, tuples as ``<key>/<i>``."""
        if isinstance(value, tuple):
            for i, v in enumerate(value):
                self.put_result(stage, f"{key}/{i}", v)
        elif isinstance(value, float):
            self.put(stage, key, np.float64(value))
        else:
            self.put(stage, key, value)

    def snapshot(self, point: str) -> None:
        from ptycho import params

        entries, arrays = encode_params_cfg(params.cfg, point)
        self.params_cfg[point] = entries
        self.arrays.update(arrays)


class _Once:
    """Call ``fn`` once; later calls return its result or re-raise its exception (so every stage records it)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def __call__(self) -> Any:
        if not self.done:
            self.done = True
            try:
                self.value = self.fn()
            except Exception as exc:
                self.error = exc
        if self.error is not None:
            raise self.error
        return self.value


# --------------------------------------------------------------------------- phases
def _runtime_keys(inputs: Inputs) -> None:
    """What the workflows write to ``params.cfg`` after configuring and before building a model."""
    from ptycho import params

    params.cfg["intensity_scale"] = inputs.intensity_scale
    params.cfg["probe"] = inputs.probe[..., None].copy()


def _produce(adapter: Adapter, inputs: Inputs, stages: Sequence[str], rec: _Recorder, side_dir: Path) -> None:
    from ptycho import params

    sc = inputs.scenario
    x, pos = inputs.x_scaled, inputs.positions
    with rec.stage("configure"):
        adapter.configure(sc)
        rec.snapshot("after_configure")
    _runtime_keys(inputs)

    if "physics_ops" in stages:
        with rec.stage("physics_ops") as entry:
            failed: dict[str, Exception] = {}
            refusals: dict[str, str] = {}
            for op in OP_SIGNATURES:
                args, kwargs = inputs.op_call(op)
                try:
                    rec.put_result("physics_ops", op, adapter.physics_op(op, *args, **kwargs))
                except Exception as exc:  # the other ops still run
                    failed[op] = exc
                # input contracts: the malformed variants of the same call (conformance.contracts)
                call = lambda *a, _op=op, **kw: adapter.physics_op(_op, *a, **kw)  # noqa: E731
                refusals.update({f"{op}/{case}": what for case, what in
                                 contracts.probe(call, OP_SIGNATURES[op][0], args, kwargs).items()})
            if refusals:
                entry["values"] = {"refusals": refusals}
            _raise_collected("physics op", failed, entry)

    handle = _Once(lambda: adapter.build(sc, inputs.weights))
    if "forward" in stages:
        with rec.stage("forward") as entry:
            for key, value in adapter.forward(handle(), x, pos).items():
                rec.put("forward", key, value)
            # input contracts of the model: malformed patterns and positions (conformance.contracts)
            entry["values"] = {"refusals": contracts.probe(lambda a, b: adapter.forward(handle(), a, b),
                                                               ("x", "positions"), (x, pos), {})}

    grads_call = _Once(lambda: adapter.loss_and_grads(handle(), x, pos, **sc.loss_weights, **inputs.loss_kwargs))
    if "losses" in stages:
        with rec.stage("losses") as entry:
            losses, _ = grads_call()
            for key in ("poisson_nll", "mae", "total"):
                rec.put("losses", key, np.float64(losses[key]))
            entry["values"] = {k: float(losses[k]) for k in ("poisson_nll", "mae", "total")}
    if "gradients" in stages:
        with rec.stage("gradients"):
            _, grads = grads_call()
            if grads is None:
                raise NotImplementedError(f"the {adapter.name} side computes no gradients")
            for name, g in grads.items():
                rec.put("gradients", name, g)

    if "train_k_steps" in stages:
        with rec.stage("train_k_steps") as entry:
            losses = adapter.train_steps(handle(), inputs.batches, lr=sc.lr, **sc.loss_weights,
                                         **inputs.loss_kwargs)
            rec.put("train_k_steps", "loss", np.asarray(losses, np.float64))
            for name, w in adapter.get_weights(handle()).items():
                rec.put("train_k_steps", f"weights/{name}", w)
            entry["values"] = {"loss": [float(v) for v in losses]}
        rec.snapshot("after_training")

    if "optimizer" in stages:
        with rec.stage("optimizer") as entry:
            from conformance.optimizer_check import CASES, optimizer_case

            for case in CASES:
                weights, grads, lrs = optimizer_case(sc, case)
                for name, value in adapter.optimizer_steps(weights, grads, lrs).items():
                    rec.put("optimizer", f"{case}/{name}", value)
                entry["values"][f"{case}_lrs"] = lrs

    if "save_load" in stages:
        with rec.stage("save_load") as entry:
            if "after_training" not in rec.params_cfg:
                rec.snapshot("after_training")
            for key, value in adapter.forward(handle(), x, pos).items():
                rec.put("save_load", f"saver/{key}", value)
            snapshot = params.snapshot()
            # The caller's global params.cfg is not the run's (a second model configured since, as in
            # Ptychodus): the bundle must record the snapshot it is handed, never read the global.
            params.cfg.update(SAVE_DECOY)
            try:
                path = adapter.save_bundle(handle(), side_dir / BUNDLE_DIR, snapshot)
            finally:
                params.restore(snapshot)
            write_npz(side_dir / TRAINED_WEIGHTS, adapter.get_weights(handle()))
            entry["values"] = {"bundle": str(Path(path).relative_to(side_dir.parent))}

    if "bundle_layout" in stages:
        with rec.stage("bundle_layout"):
            rec.bundle_layout = bundle_layout(side_dir / BUNDLE_DIR / "wts.h5.zip")
            if rec.bundle_layout["read_error"]:
                raise ValueError(f"ptycho.bundle.read_bundle rejects the bundle: {rec.bundle_layout['read_error']}")

    if "data" in stages:
        with rec.stage("data") as entry:
            params.reset()
            found = adapter.data_batches(sc, inputs.train_file, inputs.test_file)
            for key, batches in found.items():
                put_batches(lambda k, v: rec.put("data", k, v), key, batches)
            entry["values"] = {"batch_sizes": {k: [len(x) for x, _ in b] for k, b in found.items()}}

    def run_workflow() -> WorkflowResult:
        params.reset()
        result = adapter.workflow(sc, inputs.train_file, inputs.test_file, f"{adapter.name}/{WORKFLOW_BUNDLE_DIR}")
        rec.snapshot("workflow/saved")
        return result

    workflow = _Once(run_workflow)  # one training run serves the e2e, workflow and inference stages
    if "e2e" in stages:
        with rec.stage("e2e") as entry:
            result = workflow().e2e()
            rec.put("e2e", "amplitude", result.amplitude)
            rec.put("e2e", "phase", result.phase)
            rec.put("e2e", "loss_history", result.loss_history)
            entry["values"] = result.values
    if "workflow" in stages:
        with rec.stage("workflow") as entry:
            run = workflow()
            for key, series in run.history.items():
                if series:
                    rec.put("workflow", key, np.asarray(series, np.float64))
            for name, w in run.weights.items():
                rec.put("workflow", f"weights/{name}", w)
            entry["values"] = {"trainable": run.trainable, "history": {k: finite_or_none(v)
                                                                      for k, v in run.history.items()},
                               "bundle": str(run.bundle_dir)}

    if "config" in stages:
        with rec.stage("config") as entry:
            entry["values"] = adapter.config_doors(sc, rec.snapshot)

    if "params_cfg" in stages:
        with rec.stage("params_cfg") as entry:
            entry["values"] = {"points": sorted(rec.params_cfg)}
            if "after_configure" not in rec.params_cfg:
                raise RuntimeError("no params.cfg snapshot after configure: the configure stage failed")


def _raise_collected(what: str, failed: Mapping[str, Exception], entry: dict[str, Any]) -> None:
    """Raise one error naming every failed item (values ``errors``: item -> message), chained to the first."""
    if failed:
        messages = {k: f"{type(e).__name__}: {e}" for k, e in failed.items()}
        entry["values"]["errors"] = messages
        raise RuntimeError(f"{len(failed)} {what}(s) failed: {messages}") from next(iter(failed.values()))


def _peer_forward(adapter: Adapter, inputs: Inputs, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return adapter.forward(adapter.build(inputs.scenario, weights), inputs.x_scaled, inputs.positions)


def _bundle_weights(bundle: Path, scenario: Scenario) -> dict[str, np.ndarray]:
    """The canonical weights inside a bundle's ``canonical_weights.h5`` member (read strictly)."""
    from ptycho.canonical_weights import canonical_weights_from_bytes
    from ptycho.network_spec import network_spec_from_config

    with zipfile.ZipFile(bundle) as zf:
        data = zf.read("canonical_weights.h5")
    spec = network_spec_from_config(scenario.model_config())
    return canonical_weights_from_bytes(data, spec, source=f"{bundle}:canonical_weights.h5")[0]


def _trained_weights(run_dir: Path, sid: str, side: str) -> dict[str, np.ndarray]:
    path = run_dir / sid / side / TRAINED_WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the {side} produce phase did not save its trained weights")
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _consume(adapter: Adapter, inputs: Inputs, stages: Sequence[str], rec: _Recorder, side_dir: Path) -> None:
    from ptycho import params

    sc, run_dir = inputs.scenario, inputs.directory.parent
    if "save_load" in stages:
        with rec.stage("save_load"):
            saver = load_record(run_dir, sc.id, adapter.name, "produce").arrays
            keys = [k for k in saver if k.startswith("save_load/saver/")]
            if not keys:
                raise RuntimeError("the produce record holds no save_load/saver arrays: its save_load stage failed")
            handle = adapter.load_bundle(side_dir / BUNDLE_DIR)
            rec.snapshot("after_load")
            for key, value in adapter.forward(handle, inputs.x_scaled, inputs.positions).items():
                rec.put("save_load", key, value)
            for key in keys:
                rec.put("save_load", key.split("/", 1)[1], saver[key])

    if "transplant" in stages:
        with rec.stage("transplant") as entry:
            params.reset()
            adapter.configure(sc)
            _runtime_keys(inputs)
            routes: dict[str, Callable[[], dict[str, np.ndarray]]] = {}
            if adapter.name == REFERENCE:
                for peer in BACKENDS:
                    routes[peer] = lambda p=peer: _trained_weights(run_dir, sc.id, p)
            else:
                peer = BACKENDS[1 - BACKENDS.index(adapter.name)]
                routes["memory"] = lambda: _trained_weights(run_dir, sc.id, peer)
                routes["file"] = lambda: _bundle_weights(run_dir / sc.id / peer / BUNDLE_DIR / "wts.h5.zip", sc)
            failed: dict[str, Exception] = {}
            for route, weights in routes.items():
                try:
                    for key, value in _peer_forward(adapter, inputs, weights()).items():
                        rec.put("transplant", f"{route}/{key}", value)
                except Exception as exc:  # the other route still runs
                    failed[route] = exc
            _raise_collected("transplant route", failed, entry)

    if "inference" in stages:
        with rec.stage("inference"):
            try:
                arrays = adapter.inference(sc, run_dir, inputs.test_file, rec.snapshot)
            except RoutesFailed as failed:  # record what the other entry points produced, then fail the stage
                for key, value in failed.arrays.items():
                    rec.put("inference", key, value)
                raise
            for key, value in arrays.items():
                rec.put("inference", key, value)

    if "params_cfg" in stages:
        with rec.stage("params_cfg") as entry:
            entry["values"] = {"points": sorted(rec.params_cfg)}
            if "after_load" not in rec.params_cfg:
                raise RuntimeError("no params.cfg snapshot after loading: the bundle did not load")


# --------------------------------------------------------------------------- one scenario
def _phase_stages(adapter: Adapter, scenario: Scenario, phase: str, only: Sequence[str] | None) -> list[str]:
    """The stages this side records in ``phase`` (consume has a params.cfg snapshot only after a bundle load)."""
    wanted = stage_closure(scenario.stages if only is None else only, scenario.stages)
    out = [s for s in wanted if s in PHASE_STAGES[phase] and s in adapter.stages]
    if phase == "consume" and "save_load" not in out and "params_cfg" in out:
        out.remove("params_cfg")
    return out


def run_scenario(
    adapter: Adapter, scenario: Scenario, run_dir: str | PathLike, phase: str, *, only: Sequence[str] | None = None,
    mutant: str | None = None,
) -> Path:
    """Run ``phase`` of ``scenario`` for ``adapter``'s side and write its record; returns the record's JSON path.

    Inputs are written first unless ``RUN/<sid>/`` already holds this scenario's.  ``only`` restricts
    the stages (their prerequisites are added).  ``params.cfg`` is restored to its state at the call
    afterwards and the working directory is the scenario directory meanwhile.
    """
    from ptycho import params

    if phase not in PHASES:
        raise ValueError(f"phase {phase!r}: expected one of {PHASES}")
    run_dir = Path(run_dir).resolve()
    sdir = run_dir / scenario.id
    side_dir = sdir / adapter.name
    side_dir.mkdir(parents=True, exist_ok=True)
    stages = _phase_stages(adapter, scenario, phase, only)
    rec = _Recorder()
    initial = params.snapshot()
    cwd = os.getcwd()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        if not _inputs_match(sdir, scenario):
            write_inputs(scenario, sdir)
        if stages:  # a phase with nothing to do for this side still writes its (empty) record
            inputs = read_inputs(sdir)
            adapter.reset(scenario.data.seed)
            os.chdir(sdir)
            (_produce if phase == "produce" else _consume)(adapter, inputs, stages, rec, side_dir)
    except Exception as exc:  # outside any stage (inputs, setup): every stage of the phase carries it
        for stage in stages:
            rec.fail(stage, exc)
    finally:
        os.chdir(cwd)
        params.restore(initial)
    doc = {
        "scenario": scenario.id,
        "backend": adapter.name,
        "phase": phase,
        "mutant": mutant or os.environ.get("PTYCHO_MUTANT") or None,
        "versions": adapter.versions(),
        "device": adapter.device,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
        "stages": {s: rec.stages[s] for s in stages if s in rec.stages},
        "params_cfg": rec.params_cfg,
        "bundle_layout": rec.bundle_layout,
    }
    return write_record(run_dir, scenario.id, adapter.name, phase, doc, rec.arrays)


def _inputs_match(sdir: Path, scenario: Scenario) -> bool:
    """True when ``sdir`` holds the inputs of exactly this scenario (else they are (re)written)."""
    path = sdir / SCENARIO_NAME
    return (sdir / INPUTS_NAME).exists() and path.exists() and Scenario.from_json(path.read_text()) == scenario


def _load_scenario(run_dir: Path, sid: str) -> Scenario:
    """The scenario as the runner wrote it (``RUN/<sid>/scenario.json``), else from the registry."""
    path = run_dir / sid / SCENARIO_NAME
    if path.exists():
        return Scenario.from_json(path.read_text())
    from conformance.scenarios import REGISTRY

    if sid not in REGISTRY:
        raise KeyError(f"scenario {sid!r} is neither in {run_dir} nor in the registry")
    return REGISTRY[sid]


# --------------------------------------------------------------------------- serve mode
def serve(adapter: Adapter, stdin: TextIO, stdout: TextIO) -> int:
    """Answer JSON-lines requests until end of input: ``{"scenario": dict, "run": dir, "phase": ..,
    "stages": [..] (optional)}`` -> one line ``{"ok", "scenario", "backend", "phase", "record", "seconds",
    "stages": {stage: status}, "error"}``.  Anything the frameworks print goes to stderr."""
    for line in stdin:
        if not line.strip():
            continue
        t0 = time.perf_counter()
        reply: dict[str, Any] = {"ok": False, "scenario": None, "backend": adapter.name, "phase": None,
                                 "record": None, "seconds": 0.0, "stages": {}, "error": None}
        try:
            req = json.loads(line)
            scenario = Scenario.from_dict(req["scenario"])
            reply.update(scenario=scenario.id, phase=req["phase"])
            with contextlib.redirect_stdout(sys.stderr):
                path = run_scenario(adapter, scenario, req["run"], req["phase"], only=req.get("stages"))
            doc = json.loads(Path(path).read_text())
            reply.update(ok=True, record=str(path), stages={k: v["status"] for k, v in doc["stages"].items()})
        except Exception as exc:
            reply["error"] = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
        reply["seconds"] = time.perf_counter() - t0
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()
    return 0


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m conformance.worker", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", required=True, choices=SIDES, help="the side this process runs")
    p.add_argument("--phase", choices=PHASES, help="produce (stages, bundle) or consume (fresh-process load)")
    p.add_argument("--run", help="run directory holding RUN/<sid>/inputs.npz and scenario.json")
    p.add_argument("--scenarios", help="comma-separated scenario ids")
    p.add_argument("--stages", help="comma-separated stages to run (default: the scenario's)")
    p.add_argument("--serve", action="store_true", help="answer JSON-lines requests on stdin")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 even when stages fail: failures live in the records)."""
    args = _parser().parse_args(argv)
    if not args.serve and not (args.phase and args.run and args.scenarios):
        _parser().error("--phase, --run and --scenarios are required unless --serve")
    prepare_process(args.backend)
    mutant = activate_mutant(args.backend)
    adapter = make_adapter(args.backend)
    if args.serve:
        return serve(adapter, sys.stdin, sys.stdout)
    run_dir = Path(args.run).resolve()
    only = [s for s in args.stages.split(",") if s] if args.stages else None
    for sid in [s for s in args.scenarios.split(",") if s]:
        run_scenario(adapter, _load_scenario(run_dir, sid), run_dir, args.phase, only=only, mutant=mutant)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Adapters: the one interface :mod:`conformance.worker` drives, over each side's own code.

* :class:`TensorFlowAdapter` over ``ptycho_tf.parity_api`` (and ``ptycho_tf.workflows.components``);
* :class:`PyTorchAdapter` over ``ptycho_torch.parity_api`` (and ``ptycho_torch.config_factory``,
  ``ptycho_torch.workflows.components``);
* :class:`ReferenceAdapter` over the NumPy reference (``ptycho.reference.model`` / ``physics``).

All share the methods of :class:`Adapter`, so the worker has no per-backend branches: arrays in
and out are NumPy in the data-contract layout (images ``[B, N, N, C]``, positions ``[B, 1, 2, C]``),
weights are canonical dicts.  :attr:`Adapter.stages` says which stages a side can run (the
reference has no gradients, bundle or workflow; its optimiser is the formula).  :func:`make_adapter`
imports only the chosen side's framework (the reference imports neither).

Process settings (read from the environment by :func:`make_adapter`): ``PTYCHO_THREADS`` (threads
per framework, default 1: three workers share the CPU), ``PTYCHO_DEVICE`` (``cpu``, the default,
or ``cuda``; the torch parity API always computes on CPU, the torch e2e workflow follows the
device) and, for TensorFlow, ``PTYCHO_TF_EAGER`` (default ``1``: run ``tf.function``s eagerly in
the parity stages; tracing a model's loss and train step costs ~7 s per scenario on this CPU, while
eager execution runs the same ops; the e2e stage always runs the compiled workflow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import platform
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from conformance import user_paths
from conformance.inputs import TRAIN_NAME
from conformance.scenarios import REFERENCE_STAGES, STAGES, Scenario

__all__ = [
    "PACKAGES",
    "Adapter",
    "E2EResult",
    "PyTorchAdapter",
    "ReferenceAdapter",
    "RoutesFailed",
    "TensorFlowAdapter",
    "WorkflowResult",
    "make_adapter",
    "prepare_process",
    "threads_from_env",
]


#: The package of each backend; both are addressed through the same module names
#: (``<package>.parity_api``, whose ``run_workflow`` runs ``<package>.workflows.components``).
PACKAGES: dict[str, str] = {"tensorflow": "ptycho_tf", "pytorch": "ptycho_torch"}
#: Where a backend's workflow stage saves its bundle, under ``RUN/<sid>/<side>/`` (the inference stage reloads it).
WORKFLOW_BUNDLE_DIR = "workflow_bundle"


def threads_from_env() -> int:
    """``PTYCHO_THREADS`` (default 1)."""
    return max(1, int(os.environ.get("PTYCHO_THREADS") or 1))


def prepare_process(side: str) -> None:
    """Set the environment a side's framework reads when it initialises (call before importing it).

    Thread counts for OpenMP/MKL/TensorFlow from ``PTYCHO_THREADS``, quiet TensorFlow C++ logs,
    and for TensorFlow on ``PTYCHO_DEVICE=cpu`` no visible GPU (so records do not depend on the machine).
    """
    threads = str(threads_from_env())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if side == "tensorflow" and _device_from_env() == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"


def _device_from_env() -> str:
    dev = (os.environ.get("PTYCHO_DEVICE") or "cpu").lower()
    if dev not in ("cpu", "cuda", "gpu"):
        raise ValueError(f"PTYCHO_DEVICE={dev!r}: expected 'cpu' or 'cuda'")
    return "cpu" if dev == "cpu" else "cuda"


@dataclass
class E2EResult:
    """What the e2e stage records: the stitched reconstruction and the per-epoch training loss."""

    amplitude: np.ndarray  # float32 [S, S]
    phase: np.ndarray  # float32 [S, S], radians
    loss_history: np.ndarray  # float64 [nepochs]: total training loss per epoch
    values: dict[str, Any]  # JSON scalars (final losses, device)


class Adapter:
    """The interface of a side; the two backends implement it over their parity API module ``api``."""

    #: ``'tensorflow'``, ``'pytorch'`` or ``'reference'``.
    name: str = ""
    #: Stages this side can run.
    stages: frozenset[str] = frozenset(STAGES)

    def __init__(self) -> None:
        self.api: Any = None  # the parity API module (set by the backend adapters)
        self.threads = threads_from_env()
        self.device = "cpu"

    # ------------------------------------------------------------------ process and scenario
    def versions(self) -> dict[str, str]:
        """Library versions for the record."""
        from ptycho import __version__

        return {"python": platform.python_version(), "numpy": np.__version__, "ptychopinn": __version__}

    def reset(self, seed: int) -> None:
        """Start a scenario: free the previous one's state and seed every RNG the side uses."""

    def configure(self, scenario: Scenario) -> None:
        """Write the scenario's config to ``ptycho.params.cfg`` through this side's real config path.

        Here the TensorFlow workflow's (and the reference's) path, as ``run_cdi_example`` does it:
        ``update_legacy_dict(params.cfg, TrainingConfig(...))``.  Paths are relative to the scenario
        directory (the worker's working directory): ``train_data_file='inputs.npz'``, ``output_dir='out'``.
        """
        from ptycho import params
        from ptycho.config.config import update_legacy_dict

        update_legacy_dict(params.cfg, scenario.training_config("inputs.npz", "out"))

    # ------------------------------------------------------------------ the network
    def build(self, scenario: Scenario, weights: Mapping[str, np.ndarray]) -> Any:
        """A handle on the scenario's network loaded with canonical ``weights``."""
        m, t = scenario.model_config(), scenario.training_config()
        return self.api.build(
            m, weights=dict(weights), probe_mask=bool(m.probe_mask),
            gaussian_smoothing_sigma=float(m.gaussian_smoothing_sigma),
            intensity_scale_trainable=bool(t.intensity_scale_trainable), probe_trainable=bool(t.probe_trainable),
        )  # fmt: skip

    def forward(self, handle: Any, x_scaled: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Every named intermediate (``ptycho.reference.model.OUTPUT_KEYS``)."""
        return self.api.forward(handle, x_scaled, positions)

    def loss_and_grads(
        self, handle: Any, x_scaled: np.ndarray, positions: np.ndarray, *, nll_weight: float, mae_weight: float,
        bad_pixels: np.ndarray | None = None,
    ) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
        """``({'poisson_nll', 'mae', 'total'}, {canonical name: gradient} | None when the side has none)``."""
        return self.api.loss_and_grads(handle, x_scaled, positions, nll_weight=nll_weight, mae_weight=mae_weight,
                                       bad_pixels=bad_pixels)

    def train_steps(
        self, handle: Any, batches: Sequence[tuple[np.ndarray, np.ndarray]], *, lr: float, nll_weight: float,
        mae_weight: float, bad_pixels: np.ndarray | None = None,
    ) -> list[float]:
        """One Adam step per batch; the total loss of each step (before its update)."""
        return self.api.train_steps(handle, batches, lr=lr, nll_weight=nll_weight, mae_weight=mae_weight,
                                    bad_pixels=bad_pixels)

    def get_weights(self, handle: Any) -> dict[str, np.ndarray]:
        """The handle's parameters as a canonical dict."""
        return self.api.get_weights(handle)

    def optimizer_steps(self, weights: Mapping[str, np.ndarray], grads: Sequence[Mapping[str, np.ndarray]],
                        lrs: Sequence[float]) -> dict[str, np.ndarray]:
        """The side's training optimizer alone on fixed gradients: ``{name: float32 [steps, *shape]}``."""
        return self.api.optimizer_steps(weights, grads, lrs)

    def physics_op(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The side's implementation of reference physics op ``name`` (NumPy in and out)."""
        return self.api.physics_op(name, *args, **kwargs)

    # ------------------------------------------------------------------ bundles and workflow
    def save_bundle(self, handle: Any, output_dir: str | PathLike, params_snapshot: Mapping[str, Any]) -> Path:
        """Write ``output_dir/wts.h5.zip`` with the backend's model manager."""
        return self.api.save_bundle(handle, output_dir, params_snapshot)

    def load_bundle(self, path: str | PathLike) -> Any:
        """Load a bundle (restores ``params.cfg``) with the backend's model manager."""
        return self.api.load_bundle(path)

    def workflow(self, scenario: Scenario, train_file: Path, test_file: Path, output_dir: str) -> WorkflowResult:
        """Train with the backend's own workflow (``<package>.parity_api.run_workflow``), stitch the test
        reconstruction and save the bundle in ``output_dir`` the way the backend's users do."""
        from conformance.inputs import STITCH_M

        config = scenario.training_config(train_file.name, output_dir)
        amp, phase, results = self.api.run_workflow(_read_raw(train_file), _read_raw(test_file), config, M=STITCH_M,
                                                    device=self.device)
        history = results["history"]
        lr = history.get("lr") if history.get("lr") is not None else history.get("learning_rate")
        trainable, weights, bundle = self._after_workflow(results, config, Path(output_dir))
        return WorkflowResult(amp, phase, {"train_loss": list(history["train_loss"]),
                                           "val_loss": list(history.get("val_loss") or []), "lr": list(lr or [])},
                              trainable, weights, bundle, {"device": self.device})

    def _after_workflow(self, results: Mapping[str, Any], config: Any, output_dir: Path
                        ) -> tuple[list[str], dict[str, np.ndarray], Path]:
        """(canonical names of the trained parameters, final canonical weights, bundle directory)."""
        raise NotImplementedError(f"the {self.name} side has no training workflow")

    # ------------------------------------------------------------------ user paths (specs: "User paths")
    def data_batches(self, scenario: Scenario, train_file: Path, test_file: Path
                     ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """The batches this side's own data pipeline yields: ``{'train/e<i>', 'val', 'infer': [(x, pos), ...]}``.

        Channels-last float32 ``x_scaled [b, N, N, C]`` and ``positions [b, 1, 2, C]`` per batch.
        """
        raise NotImplementedError(f"the {self.name} side has no data pipeline")

    def config_doors(self, scenario: Scenario, snapshot: Callable[[str], None]) -> dict[str, Any]:
        """Describe :func:`conformance.user_paths.config_case` through each door of this side; ``snapshot(point)``
        after each (params.cfg reset before each).  Returns the stage values: ``doors`` (the doors run),
        ``refusals`` (door -> what the CLI did with a file that is not a data file) and, for PyTorch,
        ``execution`` (door -> the execution config it handed to the training workflow)."""
        raise NotImplementedError(f"the {self.name} side has no config doors")

    def inference(self, scenario: Scenario, run_dir: Path, test_file: Path, snapshot: Callable[[str], None]
                  ) -> dict[str, np.ndarray]:
        """Reload the bundle the workflow stage saved through this side's inference entry points."""
        raise NotImplementedError(f"the {self.name} side has no inference entry points")

    def _inference_api(self, load: Callable[[], Any], scenario: Scenario, test_file: Path,
                       snapshot: Callable[[str], None], out: dict[str, np.ndarray]) -> None:
        """The inference API path both backends share: ``load()`` the bundle's diffraction_to_obj (restores
        params.cfg), group the test file, the backend's ``predict_objects``, the core's ``with_fitted_tilt``
        and ``stitch``;
        records ``api/objects``, ``api/offsets``, ``api/stitched`` into ``out``."""
        from conformance.inputs import STITCH_M
        from ptycho import params
        from ptycho.workflows.common import create_ptycho_data_container, stitch, with_fitted_tilt

        components = importlib.import_module(f"{PACKAGES[self.name]}.workflows.components")
        config = scenario.training_config(test_file.name, "inference_out")
        params.reset()
        model = load()
        snapshot("inference/loaded")
        container = create_ptycho_data_container(_read_raw(test_file), config, seed=scenario.data.seed)
        obj = components.predict_objects(model, container, batch_size=int(config.batch_size))
        tilted = with_fitted_tilt(obj, container)[0]  # the loaded bundle's physics, as reassemble_cdi_image
        out.update({"api/objects": obj, "api/offsets": container.global_offsets,
                    "api/stitched": stitch(tilted, container.global_offsets, STITCH_M)[2][..., 0]})

    def _dataclass_door(self, case: Mapping[str, Any], snapshot: Callable[[str], None], backend: str) -> None:
        from ptycho import params
        from ptycho.config.config import update_legacy_dict

        params.reset()
        update_legacy_dict(params.cfg, user_paths.door_config("dataclass", case, backend))
        snapshot("config/dataclass")

    def _cli_door(self, door: str, run: Callable[[], Any], module: Any, name: str,
                  snapshot: Callable[[str], None], capture: Callable[[tuple, dict], None] | None = None) -> None:
        """Run a CLI door up to ``module.name`` (stubbed): snapshot params.cfg there and hand the stubbed
        call's arguments to ``capture``."""
        from ptycho import params

        def reached(args: tuple, kwargs: dict) -> None:
            snapshot(f"config/{door}")
            if capture is not None:
                capture(args, kwargs)

        params.reset()
        with _stub(module, name, reached):
            _through_door(run, door)

    def _refusal(self, door: str, run: Callable[[list[str]], int]) -> dict[str, Any]:
        """What ``run(argv)`` (a CLI's console entry point) does with a training file that is not a data file
        (:data:`conformance.user_paths.REFUSAL` is what it must do)."""
        import io
        import shutil

        base = Path("refused") / self.name / door
        base.mkdir(parents=True, exist_ok=True)
        bad, out = base / "not_a_data_file.npz", base / "out"
        bad.write_bytes(b"this is not an NPZ archive\n")
        shutil.rmtree(out, ignore_errors=True)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = run(user_paths.refusal_argv(door, self.name, bad, out))
        return {"exit": code, "output_dir_created": out.exists()}

    def _ptycho_train_door(self, case: Mapping[str, Any], snapshot: Callable[[str], None], module: Any,
                           name: str, capture: Callable[[tuple, dict], None] | None = None) -> None:
        from ptycho.cli import train as cli_train

        argv = user_paths.ptycho_train_argv(user_paths.door_case("ptycho_train", case), self.name)
        self._cli_door("ptycho_train", lambda: cli_train.main(argv), module, name, snapshot, capture)

    def _inference_cli(self, bundle_dir: Path, test_file: Path, out: Path, seed: int) -> np.ndarray:
        """``ptycho_inference`` on a bundle: the stitched complex object it writes, ``[S, S]``."""
        from ptycho.cli import inference as cli_inference

        code = cli_inference.main(["--backend", self.name, "--model_path", str(bundle_dir), "--test_data",
                                   str(test_file), "--output_dir", str(out), "--seed", str(seed), "--quiet"])
        if code != 0:
            raise RuntimeError(f"ptycho_inference --backend {self.name} exited with status {code}")
        with np.load(out / "reconstruction.npz", allow_pickle=False) as npz:
            return np.asarray(npz["object"])


@dataclass
class WorkflowResult:
    """One run of a backend's own training workflow (what the e2e and workflow stages record).

    ``amplitude`` / ``phase`` float32 ``[S, S]``: the stitched test reconstruction; ``history``:
    per-epoch ``train_loss``, ``val_loss`` (may be empty) and ``lr`` (float64 lists);
    ``trainable``: the canonical names of the parameters the optimiser updates; ``weights``: the
    final canonical weights; ``bundle_dir``: where the workflow saved ``wts.h5.zip``.
    """

    amplitude: np.ndarray
    phase: np.ndarray
    history: dict[str, list[float]]
    trainable: list[str]
    weights: dict[str, np.ndarray]
    bundle_dir: Path
    values: dict[str, Any]

    def e2e(self) -> E2EResult:
        """The e2e stage's view of this run."""
        return _e2e_result(self.amplitude, self.phase, self.history, self.values)


class _DoorReached(Exception):  # noqa: N818 -- a signal, not an error: not caught by the CLIs' error handlers
    """Raised by a stubbed training function once a config door has written params.cfg."""


@contextlib.contextmanager
def _stub(module: Any, name: str, snapshot: Callable[[tuple, dict], None]) -> Iterator[None]:
    """Replace ``module.name`` (a training function) by one that calls ``snapshot(args, kwargs)`` with its
    arguments and stops the run."""
    original = getattr(module, name)

    def stop(*args: Any, **kwargs: Any) -> Any:
        snapshot(args, kwargs)
        raise _DoorReached

    setattr(module, name, stop)
    try:
        yield
    finally:
        setattr(module, name, original)


def _through_door(run: Callable[[], Any], door: str) -> None:
    """Run a CLI door up to its stubbed training call; an error if it never gets there."""
    try:
        run()
    except _DoorReached:
        return
    raise RuntimeError(f"config door {door}: the command returned without reaching the training workflow")


def _e2e_result(amp: Any, phase: Any, history: Mapping[str, Any], values: dict[str, Any]) -> E2EResult:
    train = [float(v) for v in history.get("train_loss") or []]
    val = [float(v) for v in history.get("val_loss") or []]
    values = {**values, "final_train_loss": train[-1] if train else None, "final_val_loss": val[-1] if val else None,
              "epochs": len(train)}
    return E2EResult(np.asarray(amp, np.float32), np.asarray(phase, np.float32), np.asarray(train, np.float64),
                     values)


def _read_raw(path: Path) -> Any:
    from ptycho.raw_data import RawData

    return RawData.from_file(path, diffraction_is="amplitude")


# --------------------------------------------------------------------------- TensorFlow
class TensorFlowAdapter(Adapter):
    """``ptycho_tf.parity_api`` on CPU (or the GPU with ``PTYCHO_DEVICE=cuda``), op determinism on."""

    name = "tensorflow"

    def __init__(self) -> None:
        super().__init__()
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(self.threads)
            tf.config.threading.set_inter_op_parallelism_threads(self.threads)
        except RuntimeError:  # already initialised (a mutant ran ops); TF_NUM_*_THREADS still apply
            pass
        tf.config.experimental.enable_op_determinism()
        self.eager = os.environ.get("PTYCHO_TF_EAGER", "1") != "0"
        tf.config.run_functions_eagerly(self.eager)
        self.device = "cuda:0" if _device_from_env() != "cpu" and tf.config.list_physical_devices("GPU") else "cpu"
        self.api = importlib.import_module(f"{PACKAGES[self.name]}.parity_api")
        self._tf = tf

    def versions(self) -> dict[str, str]:
        import keras

        return {**super().versions(), "tensorflow": self._tf.__version__, "keras": keras.__version__}

    def reset(self, seed: int) -> None:
        import keras

        keras.backend.clear_session()
        keras.utils.set_random_seed(int(seed))

    def _after_workflow(self, results: Mapping[str, Any], config: Any, output_dir: Path
                        ) -> tuple[list[str], dict[str, np.ndarray], Path]:
        """``model_manager.save(output_dir)`` as Ptychodus calls it after ``run_cdi_example``."""
        from ptycho_tf import model_manager
        from ptycho_tf.canonical import canonical_name
        from ptycho_tf.model import current_models

        trainable = sorted(canonical_name(v.path) for v in results["model_instance"].trainable_variables)
        return trainable, current_models().canonical_weights(), model_manager.save(output_dir).parent

    def data_batches(self, scenario: Scenario, train_file: Path, test_file: Path
                     ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """The batches ``ptycho.train_pinn.train`` steps and evaluates on, and what ``predict_objects`` predicts.

        Training: the workflow's grouping and model inputs, then the real epoch loop with its
        ``Trainer`` replaced by a recorder (no model is trained; the loop's split, order and batching
        run unchanged).  Inference: ``predict_objects`` with a Keras model that records each batch
        Keras' ``predict`` hands it (eager, so the batches are concrete).
        """
        import keras

        from ptycho.workflows.common import create_ptycho_data_container, model_inputs, set_intensity_scale
        from ptycho_tf import losses as tf_losses
        from ptycho_tf import training as train_pinn
        from ptycho_tf.workflows import components

        config = scenario.training_config(train_file.name, "data_out")
        config = dataclasses.replace(config, nepochs=min(user_paths.DATA_EPOCHS, config.nepochs))
        seed = scenario.data.seed
        out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        current: list[str] = []

        class Recorder:
            def __init__(self, *_args: Any, **_kwargs: Any) -> None:
                pass

            def set_learning_rate(self, _lr: float) -> None:  # called once at the start of every epoch
                current.append(f"train/e{len(current)}")

            def _take(self, key: str, x: Any, pos: Any) -> dict[str, float]:
                out.setdefault(key, []).append((np.asarray(x), np.asarray(pos)))
                return dict.fromkeys(tf_losses.LOSS_KEYS, 0.0)

            def step(self, x: Any, pos: Any, _target: Any) -> dict[str, float]:
                return self._take(current[-1], x, pos)

            def evaluate(self, x: Any, pos: Any, _target: Any) -> dict[str, float]:
                if current[-1] != "train/e0":  # the same validation batches every epoch: record them once
                    return dict.fromkeys(tf_losses.LOSS_KEYS, 0.0)
                return self._take("val", x, pos)

        container = create_ptycho_data_container(_read_raw(train_file), config, seed=seed)
        x, pos = model_inputs(container, set_intensity_scale(config))
        original = train_pinn.Trainer
        train_pinn.Trainer = Recorder
        try:
            # The loop only needs the model for its callbacks' stop flag (no callbacks here): a stand-in.
            model = types.SimpleNamespace(stop_training=False)
            train_pinn.train(model, x, pos, config=config, seed=seed, Y_I=container.Y_I, quiet=True)
        finally:
            train_pinn.Trainer = original

        seen: list[tuple[np.ndarray, np.ndarray]] = []
        N = scenario.data.N

        tf = self._tf

        class Predictor(keras.Model):
            def call(self, inputs: Any) -> Any:
                xb, pb = inputs
                seen.append((np.asarray(xb), np.asarray(pb)))
                return tf.zeros((tf.shape(xb)[0], N, N, 1), tf.float32)

        test = create_ptycho_data_container(_read_raw(test_file), config, seed=seed)
        self._tf.config.run_functions_eagerly(True)
        try:
            components.predict_objects(Predictor(), test, batch_size=int(config.batch_size))
        finally:
            self._tf.config.run_functions_eagerly(self.eager)
        out["infer"] = seen
        return out

    def config_doors(self, scenario: Scenario, snapshot: Callable[[str], None]) -> dict[str, Any]:
        from ptycho.cli import inference as cli_inference
        from ptycho.cli import train as cli_train
        from ptycho_tf.workflows import components

        case = user_paths.config_case(scenario.data.N, scenario.data.gridsize, self.name)
        self._dataclass_door(case, snapshot, self.name)
        self._ptycho_train_door(case, snapshot, components, "train_cdi_model")
        return {"doors": ["dataclass", "ptycho_train"],
                "refusals": {"ptycho_train": self._refusal("ptycho_train", cli_train.main),
                             "ptycho_inference": self._refusal("ptycho_inference", cli_inference.main)}}

    def inference(self, scenario: Scenario, run_dir: Path, test_file: Path, snapshot: Callable[[str], None]
                  ) -> dict[str, np.ndarray]:
        """``load_inference_bundle`` + ``predict_objects`` + ``stitch``, and ``ptycho_inference``."""
        from ptycho_tf.workflows.components import load_inference_bundle

        bundle = run_dir / scenario.id / self.name / WORKFLOW_BUNDLE_DIR
        out: dict[str, np.ndarray] = {}
        errors: dict[str, Exception] = {}
        _route("load_inference_bundle", lambda: self._inference_api(
            lambda: load_inference_bundle(bundle)[0], scenario, test_file, snapshot, out), errors)
        _route("ptycho_inference", lambda: out.update({"cli/stitched": self._inference_cli(
            bundle, test_file, Path(f"{self.name}/inference_cli"), scenario.data.seed)}), errors)
        return _routes_done(out, errors)


# --------------------------------------------------------------------------- PyTorch
class PyTorchAdapter(Adapter):
    """``ptycho_torch.parity_api`` (CPU, float32).

    ``torch.use_deterministic_algorithms`` is not switched on: the parity API computes on CPU, whose
    kernels are deterministic (the gate's repeat run checks identical verdicts), and the call costs
    ~1-3 s of imports (``torch._inductor``); the e2e workflow's Lightning trainer sets
    ``deterministic=True`` itself.
    """

    name = "pytorch"

    def __init__(self) -> None:
        super().__init__()
        import torch

        torch.set_num_threads(self.threads)
        try:
            torch.set_num_interop_threads(self.threads)
        except RuntimeError:  # interop threads can only be set before any parallel work
            pass
        self.device = _device_from_env()
        if self.device != "cpu" and not torch.cuda.is_available():
            self.device = "cpu"
        self.api = importlib.import_module(f"{PACKAGES[self.name]}.parity_api")
        self._torch = torch

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "torch": self._torch.__version__}

    def reset(self, seed: int) -> None:
        self._torch.manual_seed(int(seed))

    def configure(self, scenario: Scenario) -> None:
        """``ptycho_torch.config_factory.create_training_payload`` with the scenario's fields as overrides."""
        from ptycho_torch.config_factory import create_training_payload

        overrides = {**scenario.model, **scenario.training_fields()}
        create_training_payload(Path("inputs.npz"), Path("out"), overrides=overrides)

    def _after_workflow(self, results: Mapping[str, Any], config: Any, output_dir: Path
                        ) -> tuple[list[str], dict[str, np.ndarray], Path]:
        """``save_torch_bundle`` with the trainer and Lightning module, as ``run_cdi_example_torch`` saves."""
        from ptycho_torch.canonical import export_canonical, native_name
        from ptycho_torch.model_manager import save_torch_bundle

        pinn = results["models"]["autoencoder"]
        canonical = {native_name(p.name): p.name for p in pinn.spec.params()}
        trainable = sorted(canonical.get(n, n) for n, p in pinn.named_parameters() if p.requires_grad)
        bundle = save_torch_bundle(results["models"], output_dir, config, trainer=results.get("trainer"),
                                   lightning_module=results.get("lightning_module"))
        return trainable, export_canonical(pinn), Path(bundle).parent

    def data_batches(self, scenario: Scenario, train_file: Path, test_file: Path
                     ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """What ``build_training_loaders`` / ``build_inference_loader`` yield (Dataset, sampler, DataLoader).

        The training loader is advanced epoch by epoch with Lightning's own ``_set_sampler_epoch``
        (what ``Trainer.fit`` calls before every epoch); batches are converted to channels-last.
        """
        from lightning.fabric.utilities.data import _set_sampler_epoch

        from ptycho.conventions import torch_to_tf_images, torch_to_tf_positions
        from ptycho.workflows.common import create_ptycho_data_container, set_intensity_scale
        from ptycho_torch.data import build_inference_loader, build_training_loaders

        config = scenario.training_config(train_file.name, "data_out")
        seed = scenario.data.seed
        g, bs = scenario.data.gridsize, int(config.batch_size)
        container = create_ptycho_data_container(_read_raw(train_file), config, seed=seed)
        scale = set_intensity_scale(config)
        train, val = build_training_loaders(container, gridsize=g, batch_size=bs, intensity_scale=scale, seed=seed,
                                            shuffle=not config.sequential_sampling)

        def drain(loader: Any) -> list[tuple[np.ndarray, np.ndarray]]:
            return [(torch_to_tf_images(b[0].numpy()), torch_to_tf_positions(b[1].numpy())) for b in loader]

        out = {}
        for e in range(min(user_paths.DATA_EPOCHS, int(config.nepochs))):
            _set_sampler_epoch(train, e)
            out[f"train/e{e}"] = drain(train)
        if val is not None:
            out["val"] = drain(val)
        test = create_ptycho_data_container(_read_raw(test_file), config, seed=seed)
        out["infer"] = drain(build_inference_loader(test, gridsize=g, batch_size=bs, intensity_scale=scale))
        return out

    def config_doors(self, scenario: Scenario, snapshot: Callable[[str], None]) -> dict[str, Any]:
        """dataclass, the config factory, the torch config dataclasses + bridge, ``ptycho_train --backend
        pytorch`` and ``python -m ptycho_torch.train`` (params.cfg); the execution config of the CLI doors
        and the factory (``user_paths.EXECUTION_DOORS``); the CLIs' refusal of a file that is not data."""
        from ptycho import params
        from ptycho.cli import inference as cli_inference
        from ptycho.cli import train as cli_train
        from ptycho.config.config import ModelConfig as CanonicalModel
        from ptycho.config.config import update_legacy_dict
        from ptycho_torch import config_params as cp
        from ptycho_torch import inference as torch_inference
        from ptycho_torch import train as torch_train
        from ptycho_torch.config_bridge import to_model_config, to_training_config
        from ptycho_torch.config_factory import create_training_payload
        from ptycho_torch.workflows import components

        case = user_paths.config_case(scenario.data.N, scenario.data.gridsize, self.name)
        self._dataclass_door(case, snapshot, self.name)

        execution: dict[str, Any] = {}

        def grab(door: str) -> Callable[[tuple, dict], None]:  # train_cdi_model_torch(train, test, config, execution)
            def capture(args: tuple, kwargs: dict) -> None:
                ex = kwargs.get("execution_config", args[3] if len(args) > 3 else None)
                execution[door] = None if ex is None else user_paths.execution_record(ex)
            return capture

        params.reset()
        paths = ("train_data_file", "output_dir")
        exec_case = {k: v for k, v in user_paths.execution_case().items() if k not in case}
        payload = create_training_payload(  # execution keys first: a router that stops early drops the rest
            case["train_data_file"], case["output_dir"],
            overrides={**exec_case, **{k: v for k, v in case.items() if k not in paths}})
        snapshot("config/torch_factory")
        execution["torch_factory"] = user_paths.execution_record(payload.execution_config)

        params.reset()
        classes = (cp.DataConfig, cp.ModelConfig, cp.TrainingConfig)
        data_kw, model_kw, training_kw = user_paths.torch_side_values(case, classes)
        carried = {user_paths.TORCH_RENAMED.get(k, k) for kw in (data_kw, model_kw, training_kw) for k in kw}
        model_names = {f.name for f in dataclasses.fields(CanonicalModel)}
        rest = {k: v for k, v in case.items() if k not in carried}
        data, model, training = cp.DataConfig(**data_kw), cp.ModelConfig(**model_kw), cp.TrainingConfig(**training_kw)
        model_tf = to_model_config(data, model, {k: v for k, v in rest.items() if k in model_names})
        update_legacy_dict(params.cfg, to_training_config(model_tf, data, model, training,
                                                          {k: v for k, v in rest.items() if k not in model_names}))
        snapshot("config/torch_configs")

        self._ptycho_train_door(case, snapshot, components, "train_cdi_model_torch", grab("ptycho_train"))
        argv = user_paths.torch_train_argv(user_paths.door_case("torch_train", case))
        self._cli_door("torch_train", lambda: torch_train.main(argv), components, "train_cdi_model_torch", snapshot,
                       grab("torch_train"))
        argv_ex = user_paths.torch_execution_argv(case)
        self._cli_door("torch_execution", lambda: torch_train.main(argv_ex), components, "train_cdi_model_torch",
                       lambda _point: None, grab("torch_execution"))
        return {"doors": ["dataclass", "torch_factory", "torch_configs", "ptycho_train", "torch_train"],
                "execution": execution,
                "refusals": {"ptycho_train": self._refusal("ptycho_train", cli_train.main),
                             "torch_train": self._refusal("torch_train", torch_train.cli_main),
                             "ptycho_inference": self._refusal("ptycho_inference", cli_inference.main),
                             "torch_inference": self._refusal("torch_inference", torch_inference.cli_main),
                             "train_api_world": self._world_refusal(scenario)}}

    def _world_refusal(self, scenario: Scenario) -> dict[str, Any]:
        """``train_cdi_model_torch`` asked for twice as many DDP replicas as the global batch has groups."""
        from conformance.contracts import outcome
        from ptycho.config.config import PyTorchExecutionConfig
        from ptycho_torch.workflows.components import train_cdi_model_torch

        config = scenario.training_config(TRAIN_NAME, "refused/pytorch/world")
        execution = PyTorchExecutionConfig(accelerator="cpu", devices=2 * int(config.batch_size), strategy="ddp",
                                           logger_backend=None, enable_checkpointing=False)
        return {"outcome": outcome(lambda: train_cdi_model_torch(_read_raw(Path(TRAIN_NAME)), None, config, execution,
                                                                 quiet=True))}

    def inference(self, scenario: Scenario, run_dir: Path, test_file: Path, snapshot: Callable[[str], None]
                  ) -> dict[str, np.ndarray]:
        """``load_inference_bundle_torch`` + ``predict_objects`` + ``stitch``, the inference payload,
        ``ptycho_inference --backend pytorch`` and ``python -m ptycho_torch.inference``."""
        from ptycho import params
        from ptycho_torch import inference as torch_inference
        from ptycho_torch.config_factory import create_inference_payload
        from ptycho_torch.workflows.components import load_inference_bundle_torch

        bundle = run_dir / scenario.id / self.name / WORKFLOW_BUNDLE_DIR
        out: dict[str, np.ndarray] = {}
        errors: dict[str, Exception] = {}

        def api() -> None:
            self._inference_api(lambda: load_inference_bundle_torch(bundle)[0]["diffraction_to_obj"], scenario,
                                test_file, snapshot, out)

        def payload() -> None:
            params.reset()
            create_inference_payload(bundle, test_file, Path("pytorch/inference_payload"),
                                     overrides=user_paths.inference_case())
            snapshot("inference/payload")

        def torch_cli() -> None:
            cli_out = Path("pytorch/inference_torch_cli")
            code = torch_inference.main(["--model_path", str(bundle), "--test_data", str(test_file), "--output_dir",
                                         str(cli_out), "--seed", str(scenario.data.seed), "--accelerator", "cpu",
                                         "--quiet"])
            if code != 0:
                raise RuntimeError(f"python -m ptycho_torch.inference exited with status {code}")
            with np.load(cli_out / "reconstruction.npz", allow_pickle=False) as npz:
                out["torch_cli/stitched"] = np.asarray(npz["object"])

        _route("load_inference_bundle_torch", api, errors)
        _route("create_inference_payload", payload, errors)
        _route("ptycho_inference", lambda: out.update({"cli/stitched": self._inference_cli(
            bundle, test_file, Path("pytorch/inference_cli"), scenario.data.seed)}), errors)
        _route("python -m ptycho_torch.inference", torch_cli, errors)
        return _routes_done(out, errors)


# --------------------------------------------------------------------------- NumPy reference
@dataclass
class _ReferenceHandle:
    spec: Any
    weights: dict[str, np.ndarray]
    probe_mask: bool
    gaussian_smoothing_sigma: float


class ReferenceAdapter(Adapter):
    """The NumPy reference (``ptycho.reference``): forward, losses and physics ops only."""

    name = "reference"
    stages = REFERENCE_STAGES

    def build(self, scenario: Scenario, weights: Mapping[str, np.ndarray]) -> _ReferenceHandle:
        from ptycho.canonical_weights import validate_canonical_weights
        from ptycho.network_spec import network_spec_from_config

        m = scenario.model_config()
        spec = network_spec_from_config(m)
        return _ReferenceHandle(spec, validate_canonical_weights(weights, spec), bool(m.probe_mask),
                                float(m.gaussian_smoothing_sigma))

    def forward(self, handle: _ReferenceHandle, x_scaled: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
        from ptycho.reference import model

        return model.forward(x_scaled, positions, handle.weights, handle.spec, probe_mask=handle.probe_mask,
                             gaussian_smoothing_sigma=handle.gaussian_smoothing_sigma)

    def loss_and_grads(
        self, handle: _ReferenceHandle, x_scaled: np.ndarray, positions: np.ndarray, *, nll_weight: float,
        mae_weight: float, bad_pixels: np.ndarray | None = None,
    ) -> tuple[dict[str, float], None]:
        from ptycho.reference import model

        out = self.forward(handle, x_scaled, positions)
        return model.losses(out, x_scaled, nll_weight=nll_weight, mae_weight=mae_weight, bad_pixels=bad_pixels), None

    def get_weights(self, handle: _ReferenceHandle) -> dict[str, np.ndarray]:
        return dict(handle.weights)

    def physics_op(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from ptycho.reference import physics

        if name not in physics.__all__:
            raise ValueError(f"unknown physics op {name!r}")
        return getattr(physics, name)(*args, **kwargs)

    def data_batches(self, scenario: Scenario, train_file: Path, test_file: Path
                     ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """The batches the core's grouping and batch plan define (:func:`conformance.user_paths.reference_batches`)."""
        return user_paths.reference_batches(scenario.training_config(train_file.name, "data_out"), train_file,
                                            test_file)

    def config_doors(self, scenario: Scenario, snapshot: Callable[[str], None]) -> dict[str, Any]:
        """The expected params.cfg of every door (the dataclass path with the part of the case the door
        carries), the expected execution config of every execution door and the expected refusal."""
        from ptycho import params
        from ptycho.config.config import update_legacy_dict

        case = user_paths.config_case(scenario.data.N, scenario.data.gridsize, "pytorch")
        for door in user_paths.DOORS:
            params.reset()
            update_legacy_dict(params.cfg, user_paths.door_config(door, case, "pytorch"))
            snapshot(f"config/{door}")
        return {"doors": list(user_paths.DOORS),
                "execution": {d: user_paths.expected_execution(d, case) for d in user_paths.EXECUTION_DOORS},
                "refusals": {d: dict(want) for d, want in user_paths.REFUSAL_EXPECTED.items()}}

    def inference(self, scenario: Scenario, run_dir: Path, test_file: Path, snapshot: Callable[[str], None]
                  ) -> dict[str, np.ndarray]:
        """For each backend's bundle: the NumPy forward of its canonical weights on the test groups
        (``<backend>/objects``, ``offsets``, ``stitched``), the stitched images its CLIs should write, and
        the params.cfg of the inference payload built from its manifest with the dataclasses."""
        from conformance.inputs import STITCH_M
        from ptycho import params
        from ptycho.bundle import read_bundle
        from ptycho.cli._common import stitch_crop
        from ptycho.config.config import InferenceConfig, ModelConfig, update_legacy_dict
        from ptycho.reference import model as ref_model
        from ptycho.workflows.common import create_ptycho_data_container, model_inputs, stitch, with_fitted_tilt

        out: dict[str, np.ndarray] = {}
        raw = _read_raw(test_file)
        for backend in ("tensorflow", "pytorch"):
            bundle = run_dir / scenario.id / backend / WORKFLOW_BUNDLE_DIR
            snap = read_bundle(bundle).params
            weights = _bundle_canonical(bundle, scenario)
            handle = self.build(scenario, weights)
            scale = float(snap["intensity_scale"])

            def objects(container: Any, handle: Any = handle, scale: float = scale) -> np.ndarray:
                x, pos = model_inputs(container, scale)
                return np.asarray(ref_model.forward(x, pos, handle.weights, handle.spec, probe_mask=handle.probe_mask,
                                                    gaussian_smoothing_sigma=handle.gaussian_smoothing_sigma
                                                    )["trimmed_object"], np.complex64)

            config = scenario.training_config(test_file.name, "inference_out")
            container = create_ptycho_data_container(raw, config, seed=scenario.data.seed)
            obj = objects(container)
            out[f"{backend}/objects"] = obj
            out[f"{backend}/offsets"] = container.global_offsets
            def stitched(o: np.ndarray, grouped: Any, crop: int, snap: Mapping[str, Any] = snap) -> np.ndarray:
                return stitch(with_fitted_tilt(o, grouped, physics=snap)[0], grouped.global_offsets, crop)[2][..., 0]

            out[f"{backend}/stitched"] = stitched(obj, container, STITCH_M)
            # ptycho_inference: every scan position, --seed, the bundle's neighbour count, stitch_crop(N)
            cli_config = InferenceConfig(model=scenario.model_config(), model_path=bundle, test_data_file=test_file,
                                         subsample_seed=scenario.data.seed, neighbor_count=int(snap["neighbor_count"]),
                                         backend=backend)
            cli = create_ptycho_data_container(raw, cli_config)
            # the API route's groups again when the CLI groups the same way (one forward, not two)
            same = len(cli) == len(container) and np.array_equal(cli.nn_indices, container.nn_indices)
            cli_obj = obj if same else objects(cli)
            crop = stitch_crop(scenario.data.N)
            out[f"{backend}/cli_stitched"] = stitched(cli_obj, cli, crop)
            if backend == "pytorch":  # python -m ptycho_torch.inference: the same grouping, --M default 20
                out[f"{backend}/torch_cli_stitched"] = stitched(cli_obj, cli, 20)
                network = read_bundle(bundle).manifest["network"]
                model = ModelConfig(**{k: network[k] for k in ("N", "gridsize", "n_filters_scale", "object_big",
                                                               "probe_big", "pad_object", "amp_activation")})
                params.reset()
                update_legacy_dict(params.cfg, InferenceConfig(
                    model=model, model_path=bundle, test_data_file=test_file,
                    output_dir=Path("pytorch/inference_payload"), backend="pytorch", **user_paths.inference_case()))
                snapshot("inference/payload")
        return out

    def optimizer_steps(self, weights: Mapping[str, np.ndarray], grads: Sequence[Mapping[str, np.ndarray]],
                        lrs: Sequence[float]) -> dict[str, np.ndarray]:
        """The formula ``ptycho.reference.optim.adam_step`` (weights rounded to float32 after each step)."""
        from conformance.optimizer_check import reference_steps

        return reference_steps(weights, grads, lrs)

    def _unsupported(self, *_args: Any, **_kwargs: Any) -> Any:
        raise NotImplementedError("the NumPy reference has no training loop, bundle or workflow")

    train_steps = save_bundle = load_bundle = e2e = _unsupported


class RoutesFailed(RuntimeError):
    """Some inference entry points failed; ``arrays`` holds what the others recorded."""

    def __init__(self, arrays: dict[str, np.ndarray], errors: Mapping[str, Exception]) -> None:
        super().__init__("; ".join(f"{route}: {type(e).__name__}: {e}" for route, e in errors.items()))
        self.arrays = arrays


def _route(name: str, fn: Callable[[], None], errors: dict[str, Exception]) -> None:
    """Run one inference entry point; a failure is collected (the other entry points still run)."""
    try:
        fn()
    except Exception as exc:  # every entry point is judged, whichever fails
        errors[name] = exc


def _routes_done(out: dict[str, np.ndarray], errors: Mapping[str, Exception]) -> dict[str, np.ndarray]:
    if errors:
        raise RoutesFailed(out, errors) from next(iter(errors.values()))
    return out


def _bundle_canonical(bundle_dir: Path, scenario: Scenario) -> dict[str, np.ndarray]:
    """The canonical weights in a bundle's ``canonical_weights.h5`` member, read strictly."""
    import zipfile

    from ptycho.canonical_weights import canonical_weights_from_bytes
    from ptycho.network_spec import network_spec_from_config

    path = Path(bundle_dir) / "wts.h5.zip"
    with zipfile.ZipFile(path) as zf:
        data = zf.read("canonical_weights.h5")
    return canonical_weights_from_bytes(data, network_spec_from_config(scenario.model_config()),
                                        source=f"{path}:canonical_weights.h5")[0]


def make_adapter(side: str) -> Adapter:
    """The adapter of ``side`` (``'tensorflow'``, ``'pytorch'`` or ``'reference'``), importing only its framework."""
    if side == "tensorflow":
        return TensorFlowAdapter()
    if side == "pytorch":
        return PyTorchAdapter()
    if side == "reference":
        return ReferenceAdapter()
    raise ValueError(f"unknown side {side!r}; expected 'tensorflow', 'pytorch' or 'reference'")


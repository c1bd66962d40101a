"""Backend dispatch: run training or load a bundle with the backend a config names.

``config.backend`` is ``'tensorflow'`` (this package) or ``'pytorch'``
(``ptycho_torch``).  Each function first writes the config into ``params.cfg``
(``update_legacy_dict``), then imports the selected backend lazily, so a process that
only uses one backend never imports the other framework.  A missing framework raises
:class:`~ptycho.errors.BackendUnavailableError` (a ``RuntimeError``) naming the framework
and the install command; an unknown backend raises ``ValueError``.
"""

from __future__ import annotations

import importlib
from os import PathLike
from types import ModuleType
from typing import Any

from ptycho import params
from ptycho.config.config import InferenceConfig, PyTorchExecutionConfig, TrainingConfig, update_legacy_dict
from ptycho.errors import BackendUnavailableError

__all__ = [
    "BACKENDS",
    "backend_module",
    "load_inference_bundle_with_backend",
    "run_cdi_example_with_backend",
    "train_cdi_model_with_backend",
]

#: backend name -> (workflow module, framework import name, install command)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "tensorflow": ("ptycho_tf.workflows.components", "tensorflow", "pip install 'ptychopinn[tf]'"),
    "pytorch": ("ptycho_torch.workflows.components", "torch", "pip install 'ptychopinn[torch]'"),
}


def _check_backend(backend: Any) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is invalid: expected one of {sorted(BACKENDS)}")
    return backend


def backend_module(backend: str) -> ModuleType:
    """Import the workflow module of ``backend``.

    Raises:
        ValueError: unknown backend.
        BackendUnavailableError: the backend's framework (or its ptychopinn package) cannot be
            imported; the message names the framework and the install command.
    """
    module_name, framework, install = BACKENDS[_check_backend(backend)]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] in (framework, "keras", "lightning"):
            raise BackendUnavailableError(
                f"the {backend} backend needs {missing.split('.')[0]}, which is not installed. "
                f"Fix: {install}"
            ) from exc
        raise BackendUnavailableError(
            f"the {backend} backend ({module_name}) cannot be imported: {exc}. Fix: install ptychopinn with "
            f"the {backend} extra ({install}) from a complete checkout"
        ) from exc


def run_cdi_example_with_backend(
    train_data: Any,
    test_data: Any,
    config: TrainingConfig,
    flip_x: bool = False,
    flip_y: bool = False,
    transpose: bool = False,
    M: int = 20,
    do_stitching: bool = False,
    torch_execution_config: PyTorchExecutionConfig | None = None,
    *,
    quiet: bool = False,
    devices: int = 1,
    num_nodes: int = 1,
    resume: bool = False,
    checkpoint: bool | None = None,
    logger: str | None | bool = False,
) -> tuple[Any, Any, dict[str, Any]]:
    """``update_legacy_dict(params.cfg, config)``, then the backend's ``run_cdi_example``.

    TensorFlow: ``ptycho_tf.workflows.components.run_cdi_example``; PyTorch:
    ``ptycho_torch.workflows.components.run_cdi_example_torch`` with
    ``torch_execution_config`` (default ``PyTorchExecutionConfig()``).  One vocabulary for both:
    ``resume`` continues from the run's last checkpoint in ``config.output_dir``; ``checkpoint``
    (None = the backend's default) writes one every epoch; ``logger`` is ``'csv'``,
    ``'tensorboard'``, ``'mlflow'`` or None (False = the backend's default: none for TensorFlow,
    the execution config's ``logger_backend`` for PyTorch).  ``devices`` / ``num_nodes`` train
    TensorFlow data-parallel (``MirroredStrategy``; PyTorch takes them, and the strategy, from its
    execution config).  Returns
    ``(recon_amp, recon_phase, results)`` with ``results['backend']`` set.
    """
    import dataclasses

    update_legacy_dict(params.cfg, config)
    backend = _check_backend(config.backend)
    module = backend_module(backend)
    if backend == "tensorflow":
        options: dict[str, Any] = {"resume": resume, "checkpoint": bool(checkpoint)}
        if logger is not False:
            options["logger"] = logger
        amp, phase, results = module.run_cdi_example(
            train_data, test_data, config, flip_x, flip_y, transpose, M, do_stitching, quiet=quiet,
            devices=devices, num_nodes=num_nodes, **options
        )
    else:
        execution = torch_execution_config if torch_execution_config is not None else PyTorchExecutionConfig()
        if checkpoint is not None:
            execution = dataclasses.replace(execution, enable_checkpointing=bool(checkpoint))
        if logger is not False:
            execution = dataclasses.replace(execution, logger_backend=logger)
        amp, phase, results = module.run_cdi_example_torch(
            train_data, test_data, config, flip_x, flip_y, transpose, M, do_stitching,
            execution_config=execution, quiet=quiet, resume=resume,
        )
    results["backend"] = backend
    return amp, phase, results


def train_cdi_model_with_backend(train_data: Any, test_data: Any, config: TrainingConfig, **kwargs: Any) -> dict:
    """``update_legacy_dict(params.cfg, config)``, then the backend's ``train_cdi_model``; tags ``'backend'``."""
    update_legacy_dict(params.cfg, config)
    backend = _check_backend(config.backend)
    module = backend_module(backend)
    train = module.train_cdi_model if backend == "tensorflow" else module.train_cdi_model_torch
    results = train(train_data, test_data, config, **kwargs)
    results["backend"] = backend
    return results


def load_inference_bundle_with_backend(
    bundle_dir: str | PathLike, config: InferenceConfig, model_name: str = "diffraction_to_obj"
) -> tuple[Any, dict[str, Any]]:
    """``update_legacy_dict(params.cfg, config)``, then load ``{bundle_dir}/wts.h5.zip`` with ``config.backend``.

    The bundle's params snapshot is then restored into ``params.cfg`` (it wins over the
    config).  When loading fails, ``params.cfg`` is restored to what it was before the call.
    Returns ``(model, params_dict)``: TensorFlow's ``diffraction_to_obj`` Keras model, or the
    PyTorch module named ``model_name``.
    """
    before = params.snapshot()
    try:
        update_legacy_dict(params.cfg, config)
        backend = _check_backend(config.backend)
        module = backend_module(backend)
        if backend == "tensorflow":
            if model_name != "diffraction_to_obj":
                raise ValueError(f"model_name={model_name!r} is invalid for tensorflow: expected 'diffraction_to_obj'")
            return module.load_inference_bundle(bundle_dir)
        models, loaded = module.load_inference_bundle_torch(bundle_dir, model_name=model_name)
        if model_name not in models:
            raise ValueError(f"model_name={model_name!r} is not in the bundle's models {sorted(models)}")
        return models[model_name], loaded
    except BaseException:
        params.restore(before)  # a refused bundle leaves params.cfg as it was
        raise

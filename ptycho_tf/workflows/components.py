"""The TensorFlow workflow: train, predict, stitch, load (upstream ``ptycho_tf.workflows.components``).

Ptychodus calls, for training::

    update_legacy_dict(params.cfg, TrainingConfig(...))
    amp, phase, results = run_cdi_example(train_raw, test_raw, config)
    ptycho_tf.model_manager.save(out_dir)
    save_outputs(amp, phase, results, str(out_dir))

and for inference ``model, cfg = load_inference_bundle(model_dir)`` followed by
``model.predict([container.X * params.get('intensity_scale'), container.local_offsets])``
and ``ptycho_tf.physics.reassemble_position(obj, container.global_offsets, M=20)``.

Everything shared with the PyTorch backend (grouping, the intensity scale, stitching,
output files) comes from :mod:`ptycho.workflows.common`.  The workflow seed is
``TrainingConfig.subsample_seed`` if set, else ``common.DEFAULT_SEED`` (0); grouping,
initial weights and batch order all derive from it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ptycho import params, probe
from ptycho.config.config import TrainingConfig, update_legacy_dict, validate_training_config
from ptycho.loader import PtychoDataContainer
from ptycho.raw_data import RawData
from ptycho.streaming import ScaledPatterns
from ptycho.workflows.common import (
    create_ptycho_data_container,
    model_inputs,
    save_outputs,
    set_intensity_scale,
    stitch,
    with_fitted_tilt,
    workflow_seed,
)
from ptycho_tf.model import create_models, current_models, set_current_models
from ptycho_tf.model_manager import ModelManager
from ptycho_tf.training import CHECKPOINT_FILE, build_callbacks, make_strategy, seed_everything, train

__all__ = [
    "create_ptycho_data_container",
    "load_inference_bundle",
    "predict_objects",
    "reassemble_cdi_image",
    "run_cdi_example",
    "save_outputs",
    "train_cdi_model",
]

#: Default prediction batch size (Keras' ``predict`` default).
PREDICT_BATCH_SIZE = 32

DataLike = RawData | PtychoDataContainer


def _intensity_scale() -> float:
    scale = params.cfg.get("intensity_scale")
    if scale is None:
        raise KeyError(
            "params.cfg['intensity_scale'] is not set; load a model bundle (load_inference_bundle) or train first"
        )
    return float(scale)


def predict_objects(model: keras.Model, container: PtychoDataContainer, batch_size: int | None = None) -> np.ndarray:
    """Run ``diffraction_to_obj`` on a container: complex64 ``[n, N, N, 1]``, one object per group.

    Inputs are ``[container.X * params.cfg['intensity_scale'], container.coords_nominal]``;
    any batch size gives one object per sample.  A ``ptycho.streaming.StreamingContainer``'s patterns
    are read from disk here, all at once: stream a large scan through ``common.predict_crops``,
    which calls this a bounded chunk of groups at a time.
    """
    x, pos = model_inputs(container, _intensity_scale())
    if isinstance(x, ScaledPatterns):
        x = x[np.arange(len(x))]
    out = model.predict([x, pos], batch_size=batch_size or PREDICT_BATCH_SIZE, verbose=0)
    return np.asarray(out, dtype=np.complex64)


def train_cdi_model(
    train_data: DataLike,
    test_data: DataLike | None,
    config: TrainingConfig,
    *,
    quiet: bool = False,
    devices: int = 1,
    num_nodes: int = 1,
    resume: bool = False,
    checkpoint: bool = False,
    logger: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Train the TensorFlow PtychoPINN model.

    Steps: validate the config; seed (``workflow_seed``) and enable op determinism; group
    the data (``common.create_ptycho_data_container``); ``probe.set_probe_guess(None,
    train_container.probe)``; write ``params.cfg['intensity_scale'] = sqrt(nphotons)/(N/2)``;
    build the models (initial weights from the seed, the probe and the intensity scale);
    train (:func:`ptycho_tf.training.train`); record the models as the process's current
    models (for :func:`ptycho_tf.model_manager.save`).

    ``devices`` / ``num_nodes`` > 1 train data-parallel (:func:`ptycho_tf.training.make_strategy`,
    rule in :mod:`ptycho.distributed`: ``batch_size`` is the global batch, the learning rate is
    unchanged); the models are then built in the strategy's scope.

    ``checkpoint`` writes ``<output_dir>/checkpoints/last_tf.npz`` after every epoch; ``resume``
    continues from it (weights, Adam state, schedule, epoch counter, history; ``config.nepochs``
    is the total); ``logger`` is ``'csv'``, ``'tensorboard'``, ``'mlflow'`` or None
    (:func:`ptycho_tf.training.build_callbacks`); ``callbacks`` are extra Keras callbacks.
    All default off, so library callers (Ptychodus, the gate) get no extra files.

    Returns:
        ``history`` (per-epoch lists: ``train_loss``, ``val_loss``, ``loss``, loss terms, ``lr``),
        ``history_epochs``, ``models`` (``{'autoencoder', 'diffraction_to_obj'}``),
        ``model_instance`` (the autoencoder), ``train_container``, ``test_container``,
        ``intensity_scale``, ``seed``; with test data also ``reconstructed_obj`` (complex64
        ``[n, N, N, 1]``), ``pred_amp`` and ``reconstructed_obj_cdi`` (predicted intensity).
    """
    validate_training_config(config)
    strategy = make_strategy(devices, num_nodes)  # before any TensorFlow op: it may add logical CPUs
    seed = workflow_seed(config)
    seed_everything(seed)
    train_container = create_ptycho_data_container(train_data, config, seed=seed)
    test_container = None if test_data is None else create_ptycho_data_container(test_data, config, seed=seed)
    probe.set_probe_guess(None, train_container.probe)
    scale = set_intensity_scale(config)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        models = create_models(
            config.model,
            intensity_scale_trainable=config.intensity_scale_trainable,
            probe_trainable=config.probe_trainable,
            seed=seed,
        )
    x, pos = model_inputs(train_container, scale)
    out = Path(config.output_dir)
    all_callbacks = [*build_callbacks(out, logger=logger, checkpoint=checkpoint or resume, resume=resume),
                     *callbacks]
    history = train(
        models.autoencoder, x, pos, config=config, seed=seed, Y_I=getattr(train_container, "Y_I", None), quiet=quiet,
        bad_pixels=getattr(train_container, "bad_pixels", None), strategy=strategy,
        callbacks=all_callbacks, resume_from=out / CHECKPOINT_FILE if resume else None,
    )
    set_current_models(models)
    results: dict[str, Any] = {
        "history": history,
        "history_epochs": list(range(1, len(history["train_loss"]) + 1)),
        "models": models.as_dict(),
        "model_instance": models.autoencoder,
        "train_container": train_container,
        "test_container": test_container,
        "intensity_scale": scale,
        "seed": seed,
    }
    if test_container is not None:
        xt, post = model_inputs(test_container, scale)
        obj, pred_amp, pred_int = models.autoencoder.predict(
            [xt, post], batch_size=int(config.batch_size), verbose=0
        )
        results["reconstructed_obj"] = np.asarray(obj, dtype=np.complex64)
        results["pred_amp"] = np.asarray(pred_amp)
        results["reconstructed_obj_cdi"] = np.asarray(pred_int)
    return results


def reassemble_cdi_image(
    test_data: DataLike,
    config: Any,
    flip_x: bool = False,
    flip_y: bool = False,
    transpose: bool = False,
    M: int = 20,
    *,
    model: keras.Model | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Predict every group of ``test_data``, multiply in the common tilt the patterns call for
    (``common.with_fitted_tilt``) and stitch them (``common.stitch``, central ``M x M``).

    ``model`` defaults to the current ``diffraction_to_obj``.  Returns ``(amplitude [S, S],
    phase [S, S], results)`` with ``obj_tensor_full`` (the predictions as the network gave them),
    ``common_tilt`` (rad/px, ``(x, y)``), ``global_offsets``, ``recon_amp``,
    ``recon_phase`` and ``stitched`` (complex64 ``[S, S, 1]``).
    """
    container = create_ptycho_data_container(test_data, config)
    d2o = current_models().diffraction_to_obj if model is None else model
    obj = predict_objects(d2o, container)
    tilted, tau = with_fitted_tilt(obj, container)
    amp, phase, stitched = stitch(
        tilted, container.global_offsets, M, flip_x=flip_x, flip_y=flip_y, transpose=transpose
    )
    return amp, phase, {
        "obj_tensor_full": obj,
        "common_tilt": tau,
        "global_offsets": container.global_offsets,
        "recon_amp": amp,
        "recon_phase": phase,
        "stitched": stitched,
    }


def run_cdi_example(
    train_data: DataLike,
    test_data: DataLike | None,
    config: TrainingConfig,
    flip_x: bool = False,
    flip_y: bool = False,
    transpose: bool = False,
    M: int = 20,
    do_stitching: bool = False,
    *,
    quiet: bool = False,
    devices: int = 1,
    num_nodes: int = 1,
    **train_options: Any,
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """``update_legacy_dict(params.cfg, config)``, :func:`train_cdi_model`, optionally stitch the test data.

    Returns ``(recon_amp, recon_phase, results)``; the first two are None unless
    ``do_stitching`` and test data are given (then ``results`` also holds the keys of
    :func:`reassemble_cdi_image`).  ``train_options`` (``resume``, ``checkpoint``, ``logger``,
    ``callbacks``) go to :func:`train_cdi_model`.
    """
    update_legacy_dict(params.cfg, config)
    results = train_cdi_model(train_data, test_data, config, quiet=quiet, devices=devices, num_nodes=num_nodes,
                              **train_options)
    if not (do_stitching and test_data is not None):
        return None, None, results
    container = results["test_container"]
    amp, phase, stitched = reassemble_cdi_image(
        container, config, flip_x, flip_y, transpose, M, model=results["models"]["diffraction_to_obj"]
    )
    results.update(stitched)
    return amp, phase, results


def load_inference_bundle(model_dir: str | PathLike) -> tuple[keras.Model, dict[str, Any]]:
    """Load ``{model_dir}/wts.h5.zip``: returns ``(diffraction_to_obj, copy of params.cfg)``.

    ``params.cfg`` is restored from the bundle exactly (``intensity_scale``, ``probe``,
    ``N``, ``gridsize``, ...).  The model is a plain Keras model: ``model.predict([X * s,
    offsets])`` returns complex64 ``[n, N, N, 1]`` for any batch size.  ``model_dir`` may also
    be the zip or upstream's ``.../wts.h5`` base path.
    """
    path = Path(model_dir)
    models = ModelManager.load_multiple_models(path, ["diffraction_to_obj"])
    return models["diffraction_to_obj"], dict(params.cfg)


"""Save and load PyTorch models as ``wts.h5.zip`` bundles (``ptycho.bundle``; ``specs/bundle.md``).

Payload (manifest ``backend: 'pytorch'``)::

    autoencoder/model.pt            PtychoPINN.state_dict()            (keys 'cnn.encoder.block0.conv0.weight', ...,
                                                                        'log_scale', 'probe_real', 'probe_imag')
    autoencoder/lightning.ckpt      when trained with Lightning: the PtychoPINN_Lightning checkpoint (state_dict,
                                    hyper_parameters as plain dicts, epoch, global_step, pytorch-lightning_version;
                                    no optimizer state, which would triple the bundle: the Trainer's own
                                    <output_dir>/checkpoints/last.ckpt has it); load_from_checkpoint reads it
    diffraction_to_obj/model.pt     DiffractionToObj.state_dict()      (keys 'autoencoder.cnn...')
    canonical_weights.h5            every parameter in the canonical format (backend-neutral)
    params.json                     the params.cfg snapshot (intensity_scale and probe included)

Loading (:func:`load_torch_bundle`) reads the bundle with ``ptycho.bundle.read_bundle(...,
expected_backend='pytorch')`` (a TensorFlow bundle raises ``BundleBackendMismatchError`` naming both
backends), bounds every ``torch.save`` archive (record names and sizes), rebuilds the models from the
manifest's ``network`` and the snapshot's configuration (without importing Lightning, so inference
starts fast), loads every state dict with
``torch.load(weights_only=True)`` and ``load_state_dict(strict=True)``, checks the result
against ``canonical_weights.h5``, and only then restores ``params.cfg`` from the snapshot
(CONFIG-001), so a refused bundle leaves ``params.cfg`` untouched.  Any mismatch raises
``BundleFormatError``: a reloaded model is never silently random (upstream caught and ignored the shape errors).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import fields
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ptycho import bundle_schema, conventions, params
from ptycho.bundle import bundle_path, read_bundle, restore_params, write_bundle
from ptycho.canonical_weights import canonical_weights_from_bytes, canonical_weights_to_bytes
from ptycho.config.config import KEY_MAPPINGS, ModelConfig, TrainingConfig, update_legacy_dict
from ptycho.container_safety import check_inner_zip
from ptycho.errors import BundleError, BundleFormatError, CanonicalWeightsError
from ptycho_torch.canonical import export_canonical, init_weights, initial_intensity_scale, initial_probe
from ptycho_torch.model import DiffractionToObj, PtychoPINN, build_model

__all__ = [
    "configs_from_params",
    "create_torch_model_with_gridsize",
    "lightning_checkpoint",
    "load_torch_bundle",
    "save_torch_bundle",
]

#: Models every bundle holds.
MODEL_KEYS: tuple[str, str] = ("autoencoder", "diffraction_to_obj")


# --------------------------------------------------------------------------- configs from params
def configs_from_params(params_dict: Mapping[str, Any]) -> tuple[ModelConfig, TrainingConfig]:
    """Canonical ``ModelConfig`` / ``TrainingConfig`` from a legacy params dict (the inverse of KEY_MAPPINGS).

    Keys absent from the dict keep the dataclass defaults; values are validated by the dataclasses.
    """
    def pick(cls: type) -> dict[str, Any]:
        out = {}
        for f in fields(cls):
            if f.name in ("model", "n_images"):
                continue
            key = KEY_MAPPINGS.get(f.name, f.name)
            if key in params_dict and params_dict[key] is not None:
                out[f.name] = params_dict[key]
        return out

    model = ModelConfig(**pick(ModelConfig))
    training = TrainingConfig(model=model, **pick(TrainingConfig))
    return model, training


def create_torch_model_with_gridsize(
    gridsize: int, N: int, params_dict: Mapping[str, Any] | None = None, *, initialize: bool = True, seed: int = 0
) -> PtychoPINN:
    """A ``PtychoPINN`` for ``gridsize`` and ``N``, every other setting from ``params_dict`` (default params.cfg).

    ``C = gridsize**2`` input channels follow from ``gridsize`` (upstream left ``C_model=1`` here,
    so gridsize-2 bundles reloaded as 1-channel models).  With ``initialize`` the weights are
    ``init_canonical_weights(seed=seed)`` with the params' ``intensity_scale`` and ``probe`` (or their
    defaults); otherwise they stay zero, to be loaded.
    """
    source = dict(params.cfg if params_dict is None else params_dict)
    source.update({"N": int(N), "gridsize": int(gridsize)})
    model_config, training_config = configs_from_params(source)
    model = build_model(
        model_config,
        intensity_scale_trainable=training_config.intensity_scale_trainable,
        probe_trainable=training_config.probe_trainable,
    )
    if initialize:
        scale = initial_intensity_scale(training_config, source.get("intensity_scale"))
        probe = initial_probe(model_config, source.get("probe"))
        init_weights(model, seed=seed, log_scale=math.log(scale), probe=probe)
    return model


# --------------------------------------------------------------------------- save
def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _cpu_state(module: torch.nn.Module) -> dict[str, Any]:
    """Tensors on the CPU; a module's extra state (``PtychoPINN_Lightning``: its history, plain lists) unchanged."""
    return {k: v.detach().to("cpu").contiguous() if isinstance(v, torch.Tensor) else v
            for k, v in module.state_dict().items()}


def lightning_checkpoint(module: Any, trainer: Any = None) -> dict[str, Any]:
    """A Lightning-format checkpoint of a ``PtychoPINN_Lightning`` holding only tensors and plain data.

    Weights, hyperparameters, epoch and global step; no optimizer state (the bundle is for inference
    and transfer; resume from the Trainer's ``checkpoints/last.ckpt``).  Loadable with
    ``torch.load(weights_only=True)`` and ``PtychoPINN_Lightning.load_from_checkpoint`` (no
    constructor arguments needed: the hyperparameters are stored).
    """
    import lightning as L

    return {
        "epoch": int(trainer.current_epoch) if trainer is not None else 0,
        "global_step": int(trainer.global_step) if trainer is not None else 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": _cpu_state(module),
        "hyper_parameters": dict(module.hparams),
    }


def _split_models(models: Mapping[str, Any], lightning_module: Any) -> tuple[PtychoPINN, Any]:
    """The ``PtychoPINN`` to save and the Lightning module (or None) whose checkpoint goes with it."""
    candidates = [models.get("autoencoder"), models.get("diffraction_to_obj"), models.get("lightning_module"),
                  lightning_module]
    lit = next((m for m in candidates if m is not None and hasattr(m, "hparams") and hasattr(m, "model")), None)
    auto = models.get("autoencoder")
    if isinstance(auto, PtychoPINN):
        model = auto
    elif isinstance(auto, DiffractionToObj):
        model = auto.autoencoder
    elif lit is not None:
        model = lit.model
    elif isinstance(models.get("diffraction_to_obj"), DiffractionToObj):
        model = models["diffraction_to_obj"].autoencoder
    else:
        raise TypeError(
            "models must hold the trained PtychoPINN under 'autoencoder' (got "
            f"{type(auto).__name__}); pass results['models'] from run_cdi_example_torch"
        )
    if lit is not None and lit.model is not model:
        lit = None
    return model, lit


def _bundle_target(output_dir: str | PathLike) -> Path:
    """``<dir>/wts.h5.zip`` for a directory (created), else the given ``.zip`` / ``wts.h5`` path."""
    target = Path(output_dir)
    if target.suffix == ".zip" or target.name == "wts.h5":
        return bundle_path(target)
    target.mkdir(parents=True, exist_ok=True)
    return bundle_path(target)


def save_torch_bundle(
    models: Mapping[str, Any],
    output_dir: str | PathLike,
    config: Any = None,
    *,
    trainer: Any = None,
    lightning_module: Any = None,
    params_snapshot: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{output_dir}/wts.h5.zip`` for the trained models, atomically; returns its path.

    Args:
        models: ``{'autoencoder': PtychoPINN, 'diffraction_to_obj': DiffractionToObj}``
            (``results['models']``; a ``'lightning_module'`` entry or a PtychoPINN_Lightning as
            ``'autoencoder'`` is accepted too).
        output_dir: target directory (created if needed); ``wts.h5`` / ``wts.h5.zip`` paths accepted.
        config: the canonical Training/InferenceConfig of the run; written into the params snapshot
            with ``update_legacy_dict`` (so the bundle reflects it even if params.cfg was not updated).
        trainer: the Lightning trainer, for optimizer state, epoch and step in ``lightning.ckpt``.
        lightning_module: the ``PtychoPINN_Lightning`` that trained the model (its checkpoint is
            stored as ``autoencoder/lightning.ckpt``); found in ``models`` when omitted.
        params_snapshot: the params to store (default: a snapshot of ``params.cfg``).

    The snapshot always holds ``intensity_scale`` (default ``sqrt(nphotons)/(N/2)``) and ``probe``
    (default: the model's probe, ``[N, N, 1]``).
    """
    model, lit = _split_models(models, lightning_module if lightning_module is not None else
                               getattr(trainer, "lightning_module", None))
    d2o = DiffractionToObj(model)
    snapshot = dict(params.snapshot() if params_snapshot is None else params_snapshot)
    if config is not None:
        update_legacy_dict(snapshot, config)
    spec = model.spec
    if snapshot.get("intensity_scale") is None:
        nphotons = float(snapshot.get("nphotons", TrainingConfig(model=ModelConfig()).nphotons))
        snapshot["intensity_scale"] = conventions.intensity_scale(nphotons, spec.N)
    if snapshot.get("probe") is None:
        snapshot["probe"] = model.complex_probe().detach().cpu().numpy().astype(np.complex64)[..., None]
    auto_payload = {"model.pt": _torch_bytes(_cpu_state(model))}
    if lit is not None:
        auto_payload["lightning.ckpt"] = _torch_bytes(lightning_checkpoint(lit, trainer))
    versions = {"torch": torch.__version__}
    if lit is not None:
        import lightning as L

        versions["lightning"] = L.__version__
    return write_bundle(
        _bundle_target(output_dir),
        backend="pytorch",
        model_payloads={"autoencoder": auto_payload, "diffraction_to_obj": {"model.pt": _torch_bytes(_cpu_state(d2o))}},
        params_snapshot=snapshot,
        canonical_weights=canonical_weights_to_bytes(export_canonical(model), spec, backend="pytorch"),
        network=spec.config(),
        physics={"canvas_size": model.P, "probe_mask": model.probe_mask,
                 "gaussian_smoothing_sigma": model.gaussian_smoothing_sigma},
        intensity_scale=math.exp(float(model.log_scale.detach())),
        framework=versions,
    )


# --------------------------------------------------------------------------- load
#: Small records of a ``torch.save`` zip archive and their largest sizes; tensor storages
#: (``data/<n>``) are bounded by the declared network (:func:`_check_torch_payload`).
_TORCH_SMALL_RECORDS = {"data.pkl": 1 << 20, ".format_version": 64, ".storage_alignment": 64, "byteorder": 64,
                        "version": 64, ".data/serialization_id": 256}


def _check_torch_payload(data: bytes, member: str, path: Path, weights_limit: int) -> None:
    """Bound a ``torch.save`` archive (record names and inflated sizes) before torch reads it."""
    limits = {**_TORCH_SMALL_RECORDS, "data/": weights_limit}
    check_inner_zip(data, member=member, limits=limits, total=weights_limit + sum(_TORCH_SMALL_RECORDS.values()),
                    file=path, prefix_ok=True)


def _load_state(module: torch.nn.Module, data: bytes, member: str, path: Path) -> None:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad bundle
        raise BundleFormatError(f"member '{member}' is not a loadable state dict ({exc})", file=path,
                                fix="re-save the bundle with ptychopinn") from None
    if not isinstance(state, Mapping):
        raise BundleFormatError(f"member '{member}' holds {type(state).__name__}, not a state dict", file=path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleFormatError(
            f"member '{member}' does not match the model rebuilt from the manifest: {exc}",
            file=path,
            fix="the bundle is inconsistent; re-save it with ptychopinn",
        ) from None


def load_torch_bundle(
    path: str | PathLike, model_name: str | None = None
) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """Load a PyTorch ``wts.h5.zip`` bundle and restore ``params.cfg`` from it.

    Args:
        path: the output directory, ``.../wts.h5`` or ``.../wts.h5.zip``.
        model_name: accepted for upstream compatibility; both models are always returned.

    Returns:
        ``({'autoencoder': PtychoPINN, 'diffraction_to_obj': DiffractionToObj}, params)``: the
        modules (eval mode, CPU, sharing weights) and the restored params dict (the hydrated
        configuration, also written into ``ptycho.params.cfg``).  To resume training, load
        ``autoencoder/lightning.ckpt`` with ``PtychoPINN_Lightning.load_from_checkpoint``.

    Raises:
        FileNotFoundError, BundleFormatError, UnsafeBundleError, BundleVersionError,
        BundleBackendMismatchError (a TensorFlow bundle): see ``ptycho.bundle.read_bundle``.
    """
    if model_name is not None and model_name not in MODEL_KEYS:
        raise ValueError(f"model_name={model_name!r} is invalid: expected one of {MODEL_KEYS} or None")
    bundle = read_bundle(path, expected_backend="pytorch")
    snapshot = bundle.params
    network = bundle.manifest["network"]
    weights_limit = bundle_schema.member_size_limits(network, bundle.path)["weights"]
    for name, files in bundle.payloads.items():
        for fname, data in files.items():
            _check_torch_payload(data, f"{name}/{fname}", bundle.path, weights_limit)
    source = dict(snapshot)
    for key, value in network.items():
        source[KEY_MAPPINGS.get(key, key)] = value
    for key in ("probe_mask", "gaussian_smoothing_sigma"):  # the manifest, not params, defines the physics
        source[KEY_MAPPINGS.get(key, key)] = bundle.manifest[key]
    try:
        model = create_torch_model_with_gridsize(network["gridsize"], network["N"], source, initialize=False)
    except (ValueError, TypeError) as exc:
        raise BundleFormatError(f"cannot rebuild the model from the manifest and params ({exc})",
                                file=bundle.path) from None
    if model.P != bundle.manifest["canvas_size"]:
        raise BundleFormatError(f"manifest canvas_size {bundle.manifest['canvas_size']} differs from the "
                                f"rebuilt model's {model.P}", file=bundle.path, fix="re-save the bundle")
    _load_state(model, bundle.payloads["autoencoder"]["model.pt"], "autoencoder/model.pt", bundle.path)
    d2o = DiffractionToObj(model)
    _load_state(d2o, bundle.payloads["diffraction_to_obj"]["model.pt"], "diffraction_to_obj/model.pt", bundle.path)
    try:
        reference, _attrs = canonical_weights_from_bytes(
            bundle.canonical_weights, model.spec, source=f"{bundle.path}:canonical_weights.h5"
        )
    except BundleError:
        raise
    except CanonicalWeightsError as exc:
        raise BundleFormatError(str(exc), file=bundle.path) from None
    loaded = export_canonical(model)
    differing = [k for k, v in reference.items() if not np.array_equal(v, loaded[k])]
    if differing:
        raise BundleFormatError(
            f"the state dicts disagree with canonical_weights.h5 on {len(differing)} parameter(s), "
            f"e.g. {differing[:3]}",
            file=bundle.path,
            fix="the bundle is inconsistent; re-save it with ptychopinn",
        )
    restore_params(params.cfg, snapshot)  # only now: the whole bundle is accepted (CONFIG-001)
    model.eval()
    return {"autoencoder": model, "diffraction_to_obj": d2o.eval()}, dict(snapshot)

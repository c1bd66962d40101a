"""Workflow steps both backends share: data containers, model inputs, stitching and outputs.

Nothing here imports TensorFlow or torch.  Each backend's ``workflows.components``
trains and predicts with its own framework and calls these functions for
everything before and after: grouping the raw data into a container, computing
the intensity scale, stitching predicted objects, and writing results (PNG, NPZ,
CSV).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ptycho import conventions, params
from ptycho.atomic import atomic_path
from ptycho.loader import PtychoDataContainer, load
from ptycho.raw_data import RawData
from ptycho.reference.physics import reassemble_position

_log = logging.getLogger("ptycho")

#: Seed used when the config sets none (``subsample_seed``): workflows are reproducible by default.
DEFAULT_SEED = 0


def workflow_seed(config: Any) -> int:
    """The seed a workflow derives grouping, initial weights and batch order from."""
    seed = getattr(config, "subsample_seed", None)
    return DEFAULT_SEED if seed is None else int(seed)


def group_streamed(stream: Any, config: Any) -> Any:
    """A ``ptycho.streaming.StreamingRawData`` grouped for ``config`` on positions only (patterns stay on disk):
    the ``StreamingContainer`` both backends train and infer on (``--stream`` of ``ptycho_train``,
    ``ptycho_inference`` and the torch CLIs).  Streaming groups every scan position, so ``n_subsample``
    is refused; ``n_groups`` None means one group per position."""
    if getattr(config, "n_subsample", None):
        raise ValueError("--stream groups every scan position: it cannot be combined with --n_subsample")
    return stream.group(N=config.model.N, gridsize=config.model.gridsize, K=config.neighbor_count,
                        nsamples=int(config.n_groups or len(stream)), seed=workflow_seed(config),
                        sequential_sampling=bool(getattr(config, "sequential_sampling", False)))


#: Groups predicted per call when inference streams (bounds the full ``[k, N, N, 1]`` objects held at once).
STREAM_PREDICT_GROUPS = 4096


def predict_crops(
    predict: Callable[[Any], np.ndarray], container: Any, M: int, *, chunk_groups: int = STREAM_PREDICT_GROUPS
) -> np.ndarray:
    """The central ``M x M`` of every group's predicted object: complex64 ``[n, M, M, 1]``.

    ``predict(container) -> [k, N, N, 1]`` is a backend's ``predict_objects``.  Stitching reads only
    each object's central ``M x M`` (``reassemble_position``), so ``stitch(crops, offsets, M)`` equals
    ``stitch(objects, offsets, M)``.  A ``ptycho.streaming.StreamingContainer`` is predicted
    ``chunk_groups`` groups at a time (each chunk's patterns read from disk then), so inference holds
    ``8 * M**2`` bytes per group plus one chunk's objects instead of ``8 * N**2`` per group; an
    in-memory container is predicted in one call.
    """
    from ptycho.common_tilt import apply_tilt, fit_groups
    from ptycho.streaming import StreamingContainer

    if not isinstance(container, StreamingContainer):
        objects = np.asarray(predict(container))
        return apply_tilt(_central_crop(objects, M), fit_tilt(objects, container))  # the ramp is centred: crop first
    if chunk_groups < 1:
        raise ValueError(f"chunk_groups must be >= 1, got {chunk_groups}")
    n = len(container)
    if n == 0:
        raise ValueError("the container has no groups to predict")
    keep = fit_groups(n)  # the groups an in-memory prediction would fit the tilt to, predicted once more
    tau = fit_tilt(np.asarray(predict(container.subset(keep))), container, keep)
    out = np.empty((n, M, M, 1), dtype=np.complex64)
    for start in range(0, n, chunk_groups):
        crops = _central_crop(np.asarray(predict(container.subset(slice(start, start + chunk_groups)))), M)
        out[start : start + len(crops)] = apply_tilt(crops, tau)
    return out


def with_fitted_tilt(
    objects: np.ndarray, container: Any, *, physics: Mapping[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(apply_tilt(objects, tau), tau)``: all of ``container``'s predicted objects ``[n, N, N, 1]`` with
    the common tilt :func:`fit_tilt` finds multiplied in, ready for :func:`stitch`."""
    from ptycho.common_tilt import apply_tilt

    tau = fit_tilt(objects, container, physics=physics)
    return apply_tilt(objects, tau), tau


def fit_tilt(
    objects: np.ndarray, container: Any, groups: np.ndarray | None = None, *, physics: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The phase tilt common to predicted ``objects`` (rad/px, ``(x, y)``), fitted to ``container``'s patterns.

    ``objects`` ``[n, N, N, 1]`` are the predictions of all ``n`` groups of ``container`` or, with
    ``groups``, of those groups only (``ptycho.common_tilt.fit_groups(len(container))``).  The model's
    physics comes from ``physics`` (a bundle's params), default ``params.cfg`` as a loaded bundle leaves
    it: ``probe`` when set, else the container's; ``probe.mask``; ``gaussian_smoothing_sigma``.
    ``apply_tilt(objects, tau)`` before :func:`stitch` removes the network's common tilt, which phase
    synchronisation would spread into a ramp over the field (``specs/physics.md`` §21).  Logged (logger
    ``ptycho``) with the pattern shift it amounts to.
    """
    from ptycho.common_tilt import fit_common_tilt, fit_groups
    from ptycho.streaming import StreamingContainer

    obj = np.asarray(objects)
    if groups is None:
        if obj.shape[0] != len(container):
            raise ValueError(f"{obj.shape[0]} objects for a container of {len(container)} groups")
        groups = fit_groups(len(container))
        obj = obj[groups]
    if isinstance(container, StreamingContainer):
        amplitudes = container.gather_X(groups)
    else:
        amplitudes = np.asarray(container.X)[groups]
    physics = params.cfg if physics is None else physics
    probe = physics.get("probe")
    probe = container.probe if probe is None else probe
    tau = fit_common_tilt(
        obj, amplitudes, np.asarray(container.coords_nominal)[groups], np.asarray(probe),
        probe_mask=bool(physics.get("probe.mask") or False),
        gaussian_smoothing_sigma=float(physics.get("gaussian_smoothing_sigma") or 0.0),
        bad_pixels=getattr(container, "bad_pixels", None),
    )
    N = obj.shape[1]
    _log.info(
        "common phase tilt fitted to %d groups' patterns: (%+.5f, %+.5f) rad/px (a %.3f px pattern shift)",
        len(groups), tau[0], tau[1], float(np.hypot(*tau)) * N / (2 * np.pi))
    return tau


def _central_crop(objects: np.ndarray, M: int) -> np.ndarray:
    from ptycho.phase_sync import central_crop

    return np.array(central_crop(objects, M), dtype=np.complex64)


def subsample(data: RawData, n_subsample: int | None, seed: int) -> RawData:
    """Keep ``n_subsample`` scan positions chosen at random (sorted, seeded); all when None or larger."""
    M = len(data.xcoords)
    if n_subsample is None or n_subsample >= M:
        return data
    keep = np.sort(np.random.default_rng([seed, 1]).choice(M, size=int(n_subsample), replace=False))
    sub = RawData(
        data.xcoords[keep], data.ycoords[keep], data.xcoords_start[keep], data.ycoords_start[keep],
        data.diff3d[keep], data.probeGuess, data.scan_index[keep], objectGuess=data.objectGuess,
        Y=None if data.Y is None else data.Y[keep], metadata=getattr(data, "metadata", None),
        diffraction_is="amplitude", bad_pixels=data.bad_pixels, source=data.source,
    )
    sub.sample_indices = keep
    return sub


def create_ptycho_data_container(
    data: RawData | PtychoDataContainer, config: Any, *, seed: int | None = None
) -> PtychoDataContainer:
    """Group raw data into the container the models consume (a container passes through).

    Uses ``config.model.N``, ``config.model.gridsize``, ``config.neighbor_count``,
    ``config.n_groups`` (None: one group per scan position), ``config.n_subsample``,
    ``sequential_sampling``, ``enable_oversampling`` and ``neighbor_pool_size``.
    """
    from ptycho.streaming import StreamingContainer

    if isinstance(data, (PtychoDataContainer, StreamingContainer)):
        return data
    if not isinstance(data, RawData):
        raise TypeError(f"expected RawData or PtychoDataContainer, got {type(data).__name__}")
    seed = workflow_seed(config) if seed is None else int(seed)
    data = subsample(data, getattr(config, "n_subsample", None), seed)
    n_groups = getattr(config, "n_groups", None) or len(data.xcoords)
    grouped = data.generate_grouped_data(
        config.model.N,
        K=config.neighbor_count,
        nsamples=int(n_groups),
        seed=seed,
        sequential_sampling=bool(getattr(config, "sequential_sampling", False)),
        gridsize=config.model.gridsize,
        enable_oversampling=bool(getattr(config, "enable_oversampling", False)),
        neighbor_pool_size=getattr(config, "neighbor_pool_size", None),
    )
    return load(lambda: grouped, data.probeGuess, which=None, create_split=False)


def set_intensity_scale(config: Any) -> float:
    """Write ``params.cfg['intensity_scale'] = sqrt(nphotons)/(N/2)`` for a training config and return it."""
    scale = conventions.intensity_scale(config.nphotons, config.model.N)
    params.cfg["intensity_scale"] = scale
    return scale


def model_inputs(container: PtychoDataContainer, intensity_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(X * s, coords_nominal)`` as float32: the two model inputs, channels-last.

    For a ``ptycho.streaming.StreamingContainer`` the first is a lazy ``ScaledPatterns`` (each
    ``x[indices]`` reads those groups from disk).
    """
    from ptycho.streaming import StreamingContainer

    if isinstance(container, StreamingContainer):
        return container.scaled(intensity_scale), container.coords_nominal.astype(np.float32)
    x = (container.X * np.float32(intensity_scale)).astype(np.float32)
    return x, container.coords_nominal.astype(np.float32)


def adjust_offsets(
    global_offsets: np.ndarray, *, flip_x: bool = False, flip_y: bool = False, transpose: bool = False
) -> np.ndarray:
    """Apply the optional stitching transforms to ``global_offsets`` ``[n, 1, 2, 1]`` (x, y)."""
    g = np.array(global_offsets, dtype=np.float64, copy=True)
    if transpose:
        g = g[:, :, ::-1, :].copy()
    if flip_x:
        g[:, :, conventions.X_INDEX, :] *= -1
    if flip_y:
        g[:, :, conventions.Y_INDEX, :] *= -1
    return g


def stitch(
    obj_tensor_full: np.ndarray,
    global_offsets: np.ndarray,
    M: int = 20,
    *,
    flip_x: bool = False,
    flip_y: bool = False,
    transpose: bool = False,
    align_phases: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stitch predicted objects ``[n, N, N, 1]`` at their group centroids.

    Returns ``(amplitude [S, S], phase [S, S], stitched complex64 [S, S, 1])`` using
    the NumPy reference ``reassemble_position`` (central ``M x M`` of every object).
    ``align_phases`` (default): first make the groups' constant phases agree over their overlaps
    (:func:`ptycho.phase_sync.align_group_phases`; a pattern does not record its group's constant
    phase, so the network's per-group offsets are arbitrary and averaging them scrambles the phase).
    """
    from ptycho.phase_sync import align_group_phases

    obj = np.asarray(obj_tensor_full)
    if obj.ndim != 4 or obj.shape[-1] != 1:
        raise ValueError(f"expected objects of shape [n, N, N, 1] (channels-last), got {obj.shape}")
    offsets = adjust_offsets(global_offsets, flip_x=flip_x, flip_y=flip_y, transpose=transpose)
    if align_phases:
        obj, _theta = align_group_phases(obj, offsets, M)
    stitched = reassemble_position(obj.astype(np.complex64), offsets, M)
    return np.abs(stitched[..., 0]), np.angle(stitched[..., 0]), stitched


# --------------------------------------------------------------------------- outputs


def _figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib ``Figure`` drawn by its own Agg canvas: pyplot and the global backend are never touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def mlflow_tracking_uri(output_dir: str | PathLike) -> str:
    """MLflow tracking URI of a run: the SQLite store ``<output_dir>/mlflow.db``.

    MLflow >= 3 refuses its old ``./mlruns`` file store, so both backends track into SQLite
    (needs ``sqlalchemy`` and ``alembic``: ``pip install 'ptychopinn[mlflow]'``).  Raises ConfigError
    naming the missing package.
    """
    import importlib.util

    from ptycho.errors import ConfigError

    for module in ("mlflow", "sqlalchemy", "alembic"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError("logger", "mlflow", "an installed logger backend",
                              fix=f"pip install 'ptychopinn[mlflow]' ({module} is missing), or use --logger csv / none")
    return "sqlite:///" + str((Path(output_dir) / "mlflow.db").resolve())


def _atomic_write(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        write(str(tmp))
    return path


def colour_limits(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """``(vmin, vmax)`` of a real image over ``mask`` (the scanned region), all pixels when None.

    The uncovered border of a stitched canvas is zero (or noise): scaling by it would wash out
    the object, so colour scales come from the covered pixels only.
    """
    a = np.asarray(image, dtype=np.float64)
    sel = a if mask is None or not np.any(mask) else a[np.asarray(mask, dtype=bool)]
    sel = sel[np.isfinite(sel)]
    if sel.size == 0:
        return 0.0, 1.0
    lo, hi = float(sel.min()), float(sel.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _show(fig: Any, ax: Any, image: np.ndarray, mask: np.ndarray | None, cmap: str, title: str | None) -> None:
    vmin, vmax = colour_limits(image, mask)
    im = ax.imshow(np.asarray(image), cmap=cmap, vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")


def save_image(
    array: np.ndarray, path: str | PathLike, *, cmap: str = "gray", title: str | None = None,
    mask: np.ndarray | None = None,
) -> Path:
    """Write a 2-D array as a PNG with a colour bar scaled to the pixels of ``mask`` (all when None)."""
    fig = _figure((5, 4.2))
    _show(fig, fig.add_subplot(1, 1, 1), np.asarray(array), mask, cmap, title)
    fig.tight_layout()
    return _atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))


def save_comparison(
    recon: np.ndarray, truth: np.ndarray, path: str | PathLike, *, mask: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """Truth vs reconstruction (complex ``[S, S]``): amplitude and phase rows, one colour scale per row.

    The reconstruction's global phase offset (relative to the truth, over ``mask``) is removed
    first; both colour scales come from the truth and reconstruction over ``mask``, and pixels
    outside ``mask`` (not scanned) are left blank in both.
    """
    from ptycho.evaluation import remove_global_phase

    r = remove_global_phase(np.asarray(recon), np.asarray(truth), mask)
    t = np.asarray(truth)
    fig = _figure((9, 8))
    for row, (fn, cmap, what) in enumerate(((np.abs, "gray", "amplitude"), (np.angle, "viridis", "phase (rad)"))):
        tv, rv = fn(t), fn(r)
        both = np.stack([tv, rv])
        sel = None if mask is None else np.stack([mask, mask])
        vmin, vmax = colour_limits(both, sel)
        for col, (img, who) in enumerate(((tv, "truth"), (rv, "reconstruction"))):
            ax = fig.add_subplot(2, 2, 2 * row + col + 1)
            shown = img if mask is None else np.ma.masked_where(~np.asarray(mask, dtype=bool), img)
            im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            ax.set_title(f"{who}: {what}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))


def save_outputs(
    amplitude: np.ndarray | None, phase: np.ndarray | None, results: Mapping[str, Any], output_prefix: str | PathLike
) -> list[Path]:
    """Upstream-compatible: write ``reconstructed_amplitude.png`` and ``reconstructed_phase.png``.

    Writes nothing when either array is None (as upstream, and as Ptychodus calls it).  Returns
    the written paths.  The CLIs write :func:`save_reconstruction` instead (not both: no duplicate PNGs).
    """
    if amplitude is None or phase is None:
        return []
    out = Path(output_prefix)
    return [
        save_image(np.squeeze(amplitude), out / "reconstructed_amplitude.png", cmap="gray", title="amplitude"),
        save_image(np.squeeze(phase), out / "reconstructed_phase.png", cmap="viridis", title="phase (rad)"),
    ]


def save_reconstruction(
    output_dir: str | PathLike,
    stitched: np.ndarray,
    *,
    metadata: Mapping[str, Any] | None = None,
    mask: np.ndarray | None = None,
    truth: np.ndarray | None = None,
) -> dict[str, Path]:
    """Write ``reconstruction.npz`` (amplitude, phase, object, + metadata arrays) and the PNGs.

    ``amplitude.png`` and ``phase.png`` are scaled to the covered region ``mask`` (bool
    ``[S, S]``, stored as ``covered`` in the NPZ); with the true object on the same grid
    (``truth``, complex ``[S, S]``) also ``comparison.png`` (:func:`save_comparison`).
    """
    out = Path(output_dir)
    obj = np.asarray(stitched)
    obj = obj[..., 0] if obj.ndim == 3 else obj
    amp, phase = np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32)
    meta = {str(k): np.asarray(v) for k, v in (metadata or {}).items()}
    if mask is not None:
        meta["covered"] = np.asarray(mask, dtype=bool)

    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, amplitude=amp, phase=phase, object=obj.astype(np.complex64), **meta)

    npz = _atomic_write(out / "reconstruction.npz", write_npz)
    files = {
        "npz": npz,
        "amplitude_png": save_image(amp, out / "amplitude.png", cmap="gray", title="stitched amplitude", mask=mask),
        "phase_png": save_image(phase, out / "phase.png", cmap="viridis", title="stitched phase (rad)", mask=mask),
    }
    if truth is not None:
        files["comparison_png"] = save_comparison(obj, truth, out / "comparison.png", mask=mask)
    return files


def write_stitched_outputs(
    output_dir: str | PathLike,
    stitched: np.ndarray,
    global_offsets: np.ndarray,
    N: int,
    M: int,
    objectGuess: np.ndarray | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[list[Path], dict[str, Any] | None]:
    """Everything the CLIs write for a stitched reconstruction; returns ``(paths, score or None)``.

    ``reconstruction.npz`` (with ``global_offsets``, ``N``, ``M`` and the ``covered`` mask, so
    ``ptycho_evaluate`` can score it later), ``amplitude.png`` / ``phase.png`` scaled to the covered
    region, and, when the true object is known, ``comparison.png`` and ``score.json``
    (:func:`ptycho.evaluation.score_stitched`; non-finite values written as null).  ``metadata``:
    further scalars/arrays for the NPZ.
    """
    import json

    from ptycho.atomic import atomic_write_bytes
    from ptycho.evaluation import coverage_mask, ground_truth_canvas, json_ready, score_stitched

    out = Path(output_dir)
    obj = np.asarray(stitched)
    obj = obj[..., 0] if obj.ndim == 3 else obj
    mask = coverage_mask(global_offsets, N, M)
    truth = None if objectGuess is None else ground_truth_canvas(objectGuess, global_offsets, obj.shape[0])
    meta = {**(metadata or {}), "global_offsets": np.asarray(global_offsets, np.float64), "N": int(N), "M": int(M)}
    written = list(save_reconstruction(out, obj, metadata=meta, mask=mask, truth=truth).values())
    score = None
    if objectGuess is not None:
        score = score_stitched(obj, objectGuess, global_offsets, N, M)
        atomic_write_bytes(out / "score.json", json.dumps(json_ready(score), indent=1, sort_keys=True).encode())
        written.append(out / "score.json")
    return written, score


def score_summary(score: Mapping[str, Any]) -> str:
    """One line of the headline numbers of a :func:`ptycho.evaluation.score_stitched` result."""
    res = score.get("frc_resolution_px")
    res_text = "none" if res is None or not np.isfinite(res) else f"{res:.2f} px"
    return (f"amplitude SSIM {score['amp_ssim']:.3f}, phase SSIM {score['phase_ssim']:.3f}, amplitude PSNR "
            f"{score['amp_psnr']:.1f} dB, FRC 1/2-bit resolution {res_text}, amplitude Pearson "
            f"{score['amp_pearson']:.3f}, phase Pearson {score['phase_pearson']:.3f}")


def write_history_csv(history: Mapping[str, Sequence[float]], path: str | PathLike) -> Path:
    """Write per-epoch loss history as CSV: an ``epoch`` column then one column per series."""
    keys = [k for k, v in history.items() if v is not None and len(v) > 0]
    n = max((len(history[k]) for k in keys), default=0)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", *keys])
            for i in range(n):
                w.writerow([i + 1, *[repr(float(history[k][i])) if i < len(history[k]) else "" for k in keys]])

    return _atomic_write(Path(path), write)


def plot_history_png(history: Mapping[str, Sequence[float]], path: str | PathLike, *, title: str = "loss") -> Path:
    """Plot every loss series in ``history`` against the epoch (log scale when all values are positive)."""
    fig = _figure((6, 4))
    ax = fig.add_subplot(1, 1, 1)
    values = []
    for key, series in history.items():
        if series is None or len(series) == 0:
            continue
        ax.plot(np.arange(1, len(series) + 1), series, marker="o", label=key)
        values.extend(float(v) for v in series)
    if values and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(title)
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))

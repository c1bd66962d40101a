"""Deterministic simulator of ptychography datasets in the NPZ data contract.

``simulate_dataset(...)`` draws a synthetic object, builds a defocused
circular-aperture probe, places scan positions, evaluates the forward model of
the NumPy reference (``physics.object_patches`` then ``physics.diffract``: the
same model the networks are trained with), scales the intensities to the photon
budget and draws Poisson noise.  It returns a :class:`~ptycho.raw_data.RawData`;
``RawData.to_file`` writes the NPZ.  The command line::

    python -m ptycho.simulate --output sim.npz [--N 64 --n-positions 512 --object lines ...]

Everything is deterministic for a seed: the object, the scan and the noise come
from independent sub-streams (:mod:`ptycho.simulation.rng`), numpy's global RNG is
never used.  ``specs/simulator.md`` is the prose specification.  NumPy and SciPy
only; matplotlib is imported lazily by ``--preview``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.errors import ConfigError, PtychoError
from ptycho.raw_data import RawData
from ptycho.simulation.diffraction import DiffractionResult, check_nphotons, simulate_diffraction
from ptycho.simulation.objects import (
    DEFAULT_AMP_RANGE,
    DEFAULT_GRF_EXPONENT,
    DEFAULT_PHASE_RANGE,
    OBJECT_KINDS,
    make_object,
)
from ptycho.simulation.probe import DEFAULT_APERTURE, default_defocus, make_probe
from ptycho.simulation.rng import STREAM_KEYS, check_seed, substream
from ptycho.simulation.scan import DEFAULT_BORDER, SCAN_KINDS, make_scan, min_object_size

__all__ = [
    "DEFAULT_N",
    "DEFAULT_N_POSITIONS",
    "DEFAULT_NPHOTONS",
    "DEFAULT_SCAN_SPACING",
    "GENERATOR",
    "SIMULATOR_VERSION",
    "SimulationParams",
    "auto_object_size",
    "main",
    "make_object",
    "make_probe",
    "make_scan",
    "simulate_dataset",
    "simulate_diffraction",
    "simulate_from_params",
    "write_preview",
]

#: Name recorded as ``generator`` in the dataset metadata.
GENERATOR: str = "ptycho.simulate"
#: Version of the simulation algorithm; bump it whenever the same parameters and
#: seed would produce different arrays.
SIMULATOR_VERSION: int = 1
#: Defaults of the built-in dataset (CLI and API).
DEFAULT_N: int = 64
DEFAULT_N_POSITIONS: int = 512
DEFAULT_NPHOTONS: float = 1e9
#: Scan density used to size the object when ``object_size`` is not given: one scan
#: position per ``DEFAULT_SCAN_SPACING**2`` square pixels (5 px keeps the nearest
#: neighbours of a gridsize-2 group within the default canvas margin).
DEFAULT_SCAN_SPACING: float = 5.0


def auto_object_size(
    N: int, n_positions: int, *, spacing: float = DEFAULT_SCAN_SPACING, border: float = DEFAULT_BORDER
) -> int:
    """Object side in pixels when none is given: ``N + 2 ceil(border) + 1 + ceil(sqrt(M) * spacing)``.

    The scan window (``scan.scan_window``) is then about ``sqrt(M) * spacing`` pixels
    wide, i.e. one position per ``spacing**2`` square pixels.  Example: N=64,
    M=512, defaults -> 187 pixels.
    """
    if not (np.isfinite(spacing) and spacing > 0):
        raise ConfigError("scan_spacing", spacing, "a positive spacing in pixels")
    size = int(N) + 2 * math.ceil(border) + 1 + math.ceil(math.sqrt(int(n_positions)) * float(spacing))
    return max(size, min_object_size(N, border))


@dataclass(frozen=True)
class SimulationParams:
    """Every parameter of one simulated dataset (units in brackets); see :func:`simulate_dataset`.

    ``None`` in ``object_size`` and ``probe_defocus`` means "derive from N (and
    n_positions)"; :meth:`resolved` fills them in and validates everything.
    """

    N: int = DEFAULT_N  # [px] patch / probe / detector side
    n_positions: int = DEFAULT_N_POSITIONS  # number of scan positions M
    object_kind: str = "lines"  # 'lines' | 'grf'
    object_size: int | None = None  # [px] side of the square object
    scan: str = "random"  # 'random' | 'raster'
    nphotons: float | None = DEFAULT_NPHOTONS  # [photons] mean expected total per pattern
    noise: bool = True  # Poisson noise (ignored when nphotons is None)
    probe_aperture: float = DEFAULT_APERTURE  # [fraction of Nyquist] pupil radius
    probe_defocus: float | None = None  # [waves] W020 at the pupil edge
    scan_border: float = DEFAULT_BORDER  # [px] margin between patches and object edge
    scan_spacing: float = DEFAULT_SCAN_SPACING  # [px] sets the automatic object size
    raster_step: float | None = None  # [px] raster spacing (None: fill the window)
    raster_jitter: float = 0.0  # [px] std of Gaussian jitter of raster positions
    amp_range: tuple[float, float] = DEFAULT_AMP_RANGE  # object amplitude (min, max)
    phase_range: tuple[float, float] = DEFAULT_PHASE_RANGE  # [rad] object phase (min, max)
    n_lines: int | None = None  # 'lines': number of segments (None: density default)
    grf_exponent: float = DEFAULT_GRF_EXPONENT  # 'grf': power-spectrum exponent
    seed: int = 0  # root seed of the object / scan / noise sub-streams

    def resolved(self) -> SimulationParams:
        """A copy with ``object_size`` and ``probe_defocus`` filled in; raises ``ConfigError``."""
        N = self.N
        if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 8 or N % 2:
            raise ConfigError("N", N, "an even integer number of pixels >= 8 (e.g. 64)")
        M = self.n_positions
        if isinstance(M, bool) or not isinstance(M, int | np.integer) or M < 1:
            raise ConfigError("n_positions", M, "a positive integer")
        if self.object_kind not in OBJECT_KINDS:
            raise ConfigError("object_kind", self.object_kind, f"one of {list(OBJECT_KINDS)}")
        if self.scan not in SCAN_KINDS:
            raise ConfigError("scan", self.scan, f"one of {list(SCAN_KINDS)}")
        if not (np.isfinite(self.scan_border) and self.scan_border >= 0):
            raise ConfigError("scan_border", self.scan_border, "a number of pixels >= 0")
        if not (np.isfinite(self.scan_spacing) and self.scan_spacing > 0):
            raise ConfigError("scan_spacing", self.scan_spacing, "a positive spacing in pixels")
        if self.raster_step is not None and not (np.isfinite(self.raster_step) and self.raster_step > 0):
            raise ConfigError("raster_step", self.raster_step, "a positive spacing in pixels or None")
        if not (np.isfinite(self.raster_jitter) and self.raster_jitter >= 0):
            raise ConfigError("raster_jitter", self.raster_jitter, "a standard deviation in pixels >= 0")
        size = self.object_size
        if size is None:
            size = auto_object_size(N, M, spacing=self.scan_spacing, border=self.scan_border)
        elif isinstance(size, bool) or not isinstance(size, int | np.integer):
            raise ConfigError("object_size", size, "an integer number of pixels")
        elif size < min_object_size(N, self.scan_border):
            need = min_object_size(N, self.scan_border)
            raise ConfigError(
                "object_size",
                size,
                f"at least {need} pixels for N={N} and scan_border={self.scan_border}",
                fix="increase object_size or decrease N / scan_border",
            )
        defocus = default_defocus(int(N)) if self.probe_defocus is None else float(self.probe_defocus)
        nphotons = check_nphotons(self.nphotons)
        return dataclasses.replace(
            self,
            N=int(N),
            n_positions=int(M),
            object_size=int(size),
            probe_defocus=defocus,
            nphotons=nphotons,
            noise=bool(self.noise),
            amp_range=tuple(float(v) for v in self.amp_range),
            phase_range=tuple(float(v) for v in self.phase_range),
            seed=check_seed(self.seed),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the parameters (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key in ("amp_range", "phase_range"):
            out[key] = list(out[key])
        return out


def simulate_dataset(
    N: int = DEFAULT_N,
    n_positions: int = DEFAULT_N_POSITIONS,
    *,
    object_kind: str = "lines",
    object_size: int | None = None,
    scan: str = "random",
    nphotons: float | None = DEFAULT_NPHOTONS,
    noise: bool = True,
    probe_aperture: float = DEFAULT_APERTURE,
    probe_defocus: float | None = None,
    scan_border: float = DEFAULT_BORDER,
    scan_spacing: float = DEFAULT_SCAN_SPACING,
    raster_step: float | None = None,
    raster_jitter: float = 0.0,
    amp_range: Sequence[float] = DEFAULT_AMP_RANGE,
    phase_range: Sequence[float] = DEFAULT_PHASE_RANGE,
    n_lines: int | None = None,
    grf_exponent: float = DEFAULT_GRF_EXPONENT,
    seed: int = 0,
) -> RawData:
    """Simulate one ptychography dataset; returns a validated :class:`RawData`.

    Steps (``specs/simulator.md``):

    1. object: :func:`make_object` ``(object_kind, object_size, rng_object)``,
       complex64 ``[S, S]``, amplitude in ``amp_range``, phase in ``phase_range`` rad;
    2. probe: :func:`make_probe` ``(N, aperture=probe_aperture, defocus=probe_defocus)``;
    3. scan: :func:`make_scan` ``(scan, n_positions, (S, S), N, rng_scan, ...)``,
       float64 ``(x, y)`` pixels;
    4. diffraction: :func:`simulate_diffraction` with ``nphotons`` (mean expected
       photons per pattern) and Poisson noise from ``rng_noise`` when ``noise``.

    Parameters
    ----------
    N: patch / probe / detector side in pixels (even, >= 8). Default 64.
    n_positions: number of scan positions ``M``. Default 512.
    object_kind: ``'lines'`` (default) or ``'grf'``.
    object_size: object side in pixels; default :func:`auto_object_size` (187 for the defaults).
    scan: ``'random'`` (default, uniform in the scan window) or ``'raster'``.
    nphotons: mean expected photons per pattern (default 1e9); ``None`` gives the
        unscaled noise-free amplitude of the unit-peak probe.
    noise: draw Poisson counts (default True); False stores expected amplitudes.
    probe_aperture: pupil radius, fraction of Nyquist (default 0.5).
    probe_defocus: defocus in waves at the pupil edge (default ``N / 48``).
    scan_border: margin in pixels between every patch and the object edge (default 4).
    scan_spacing: pixels per position used by the automatic object size (default 5).
    raster_step, raster_jitter: raster spacing and jitter std in pixels.
    amp_range, phase_range: object amplitude range and phase range (radians).
    n_lines, grf_exponent: texture parameters of 'lines' and 'grf'.
    seed: root seed (integer >= 0) of the object, scan and noise sub-streams.

    Returns
    -------
    RawData with ``xcoords == xcoords_start``, ``ycoords == ycoords_start`` (float64
    ``[M]``), ``diff3d`` float32 ``[M, N, N]`` amplitude (``sqrt`` of photon counts),
    ``probeGuess`` complex64 ``[N, N]`` in ``sqrt(photons)`` per pixel (so that
    ``physics.diffract(probeGuess * object_patches(objectGuess, xy, N))`` is the
    noise-free amplitude), ``objectGuess`` complex64 ``[S, S]``, ``scan_index`` int64
    zeros, and provenance ``metadata`` (written as the JSON string ``_metadata``).
    """
    params = SimulationParams(
        N=N,
        n_positions=n_positions,
        object_kind=object_kind,
        object_size=object_size,
        scan=scan,
        nphotons=nphotons,
        noise=noise,
        probe_aperture=probe_aperture,
        probe_defocus=probe_defocus,
        scan_border=scan_border,
        scan_spacing=scan_spacing,
        raster_step=raster_step,
        raster_jitter=raster_jitter,
        amp_range=tuple(amp_range),
        phase_range=tuple(phase_range),
        n_lines=n_lines,
        grf_exponent=grf_exponent,
        seed=seed,
    )
    return simulate_from_params(params)


def simulate_from_params(params: SimulationParams) -> RawData:
    """:func:`simulate_dataset` for a :class:`SimulationParams` (resolved here)."""
    p = params.resolved()
    size = int(p.object_size)  # resolved() fills it in
    obj = make_object(
        p.object_kind,
        size,
        substream(p.seed, "object"),
        amp_range=p.amp_range,
        phase_range=p.phase_range,
        n_lines=p.n_lines,
        grf_exponent=p.grf_exponent,
    )
    probe = make_probe(p.N, aperture=p.probe_aperture, defocus=p.probe_defocus)
    xy = make_scan(
        p.scan,
        p.n_positions,
        obj.shape,
        p.N,
        substream(p.seed, "scan"),
        border=p.scan_border,
        step=p.raster_step,
        jitter=p.raster_jitter,
    )
    result = simulate_diffraction(obj, probe, xy, nphotons=p.nphotons, rng=substream(p.seed, "noise"), poisson=p.noise)
    return RawData.from_coords_without_pc(
        xy[:, 0],
        xy[:, 1],
        result.diff3d,
        result.probe,
        np.zeros(p.n_positions, dtype=np.int64),
        objectGuess=obj,
        metadata=_metadata(p, result),
        diffraction_is="amplitude",
    )


def _metadata(p: SimulationParams, result: DiffractionResult) -> dict[str, Any]:
    noisy = p.nphotons is not None and p.noise
    if p.nphotons is None:
        units = "unscaled amplitude of the unit-peak probe, noise-free"
    elif noisy:
        units = "sqrt(photon counts), Poisson noise"
    else:
        units = "sqrt(expected photon counts), noise-free"
    return {
        "generator": GENERATOR,
        "simulator_version": SIMULATOR_VERSION,
        "seed": p.seed,
        "parameters": p.to_dict(),
        "diff3d_units": units,
        "photon_convention": "nphotons = mean over patterns of the expected total photon count per pattern",
        "count_scale": result.count_scale,
        "mean_expected_photons": result.mean_expected_photons,
        "mean_detected_photons": result.mean_detected_photons,
        "rng": {
            "bit_generator": "PCG64",
            "seeding": "np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(key,)))",
            "streams": dict(STREAM_KEYS),
        },
    }


# =========================================================================== preview


def write_preview(raw: RawData, path: str | Path) -> Path:
    """Write a PNG overview: object amplitude with the scan positions, object phase,
    probe amplitude and phase, one diffraction pattern and the mean pattern (log10).

    Imports matplotlib lazily and draws on a ``Figure`` with the Agg canvas (pyplot and the
    process's matplotlib backend are not touched).  Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    obj = raw.objectGuess
    fig = Figure(figsize=(13, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    panels: list[tuple[Any, np.ndarray, str, str]] = []
    if obj is not None:
        panels.append((axes[0, 0], np.abs(obj), "object amplitude + scan positions", "gray"))
        panels.append((axes[0, 1], np.angle(obj), "object phase [rad]", "twilight"))
    panels += [
        (axes[1, 0], np.abs(raw.probeGuess), "probe amplitude [sqrt(photons)/px]", "viridis"),
        (axes[1, 1], np.angle(raw.probeGuess), "probe phase [rad]", "twilight"),
        (axes[0, 2], np.log10(1 + raw.diff3d[0] ** 2), "pattern 0, log10(1 + counts)", "magma"),
        (axes[1, 2], np.log10(1 + np.mean(raw.diff3d**2, axis=0)), "mean pattern, log10(1 + counts)", "magma"),
    ]
    for ax, img, title, cmap in panels:
        im = ax.imshow(img, cmap=cmap, origin="upper")
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    if obj is not None:
        axes[0, 0].plot(raw.xcoords, raw.ycoords, "r.", markersize=2)
    else:
        for ax in axes[0, :2]:
            ax.axis("off")
    meta = raw.metadata or {}
    fig.suptitle(
        f"{meta.get('generator', 'dataset')}: M={raw.n_points}, N={raw.N}, seed={meta.get('seed')}",
        fontsize=11,
    )
    fig.savefig(path, dpi=80)
    return path


# =========================================================================== CLI


def _float_or_none(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ptycho.simulate",
        description=(
            "Simulate a ptychography dataset (synthetic object, defocused probe, scan, Poisson "
            "diffraction) and write it as an NPZ in the data contract (specs/data.md, "
            "specs/simulator.md). Deterministic for a seed."
        ),
        epilog=(
            "examples:\n"
            "  python -m ptycho.simulate --output sim.npz\n"
            "  python -m ptycho.simulate --output grf.npz --object grf --scan raster --jitter 0.5 "
            "--nphotons 1e6 --seed 3 --preview grf.png\n\n"
            "nphotons is the mean over patterns of the expected total photon count per pattern; "
            "diff3d holds sqrt(counts)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = SimulationParams()
    add = parser.add_argument
    add("--output", "-o", required=True, type=Path, help="NPZ file to write (.npz is appended if missing)")
    add("--N", type=int, default=d.N, help=f"patch / probe / detector size in pixels (default {d.N})")
    add("--n-positions", type=int, default=d.n_positions, help=f"scan positions (default {d.n_positions})")
    add("--object", choices=OBJECT_KINDS, default=d.object_kind, help="synthetic object (default lines)")
    add(
        "--object-size",
        type=int,
        default=None,
        help=f"object side in pixels (default: N + 2*border + 1 + sqrt(n_positions) * {d.scan_spacing:g})",
    )
    add("--scan", choices=SCAN_KINDS, default=d.scan, help="scan pattern (default random)")
    add(
        "--scan-spacing",
        type=float,
        default=d.scan_spacing,
        help=f"pixels per position used to size the object automatically (default {d.scan_spacing:g})",
    )
    add("--raster-step", type=float, default=None, help="raster spacing in pixels (default: fill the object)")
    add("--jitter", type=float, default=0.0, help="raster jitter std in pixels (default 0)")
    add("--border", type=float, default=d.scan_border, help="patch margin to the object edge in px (default 4)")
    add(
        "--nphotons",
        type=_float_or_none,
        default=d.nphotons,
        help="mean expected photons per pattern (default 1e9); 'none' = unscaled and noise-free",
    )
    add("--no-noise", action="store_true", help="store expected amplitudes (no Poisson noise)")
    add(
        "--probe-aperture",
        type=float,
        default=d.probe_aperture,
        help="pupil radius as a fraction of the Nyquist frequency (default 0.5)",
    )
    add(
        "--probe-defocus",
        type=float,
        default=None,
        help="probe defocus in waves at the pupil edge (default N/48, i.e. 1.33 for N=64)",
    )
    add("--amp-range", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(d.amp_range))
    add("--phase-range", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(d.phase_range))
    add("--seed", type=int, default=d.seed, help="root random seed (default 0)")
    add("--preview", type=Path, default=None, help="also write a PNG overview (needs matplotlib)")
    add("--quiet", "-q", action="store_true", help="print nothing on success")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 1 I/O error, 2 bad argument)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.preview is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "python -m ptycho.simulate: error: --preview needs matplotlib (pip install matplotlib)", file=sys.stderr
            )
            return 1
    try:
        raw = simulate_dataset(
            N=args.N,
            n_positions=args.n_positions,
            object_kind=args.object,
            object_size=args.object_size,
            scan=args.scan,
            nphotons=args.nphotons,
            noise=not args.no_noise,
            probe_aperture=args.probe_aperture,
            probe_defocus=args.probe_defocus,
            scan_border=args.border,
            scan_spacing=args.scan_spacing,
            raster_step=args.raster_step,
            raster_jitter=args.jitter,
            amp_range=args.amp_range,
            phase_range=args.phase_range,
            seed=args.seed,
        )
    except PtychoError as exc:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        written = raw.to_file(args.output)
        preview = None
        if args.preview is not None:
            args.preview.parent.mkdir(parents=True, exist_ok=True)
            preview = write_preview(raw, args.preview)
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write output: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        meta = raw.metadata or {}
        print(
            f"wrote {written}: {raw.n_points} patterns of {raw.N}x{raw.N}, object "
            f"{raw.objectGuess.shape[0]}x{raw.objectGuess.shape[1]}, mean photons/pattern "
            f"{meta.get('mean_detected_photons', float('nan')):.4g}, max amplitude {float(raw.diff3d.max()):.4g}"
        )
        if preview is not None:
            print(f"wrote {preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

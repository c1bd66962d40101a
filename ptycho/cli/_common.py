"""Argument helpers and error reporting shared by the ``ptycho_train`` / ``ptycho_inference`` CLIs.

The CLIs import no framework until the arguments are parsed, so ``--help`` and bad flags
answer at once.  Numeric flags are validated before any data is read (:func:`validate_numeric_args`).
Expected failures print one ``<prog>: error: ...`` line and write no output; the exit status says whose
move it is (:func:`exit_status`, the same for every command of both backends): 2 when the command or
its inputs were refused (a missing or invalid file, an invalid value, a bad bundle, an
``--output_dir`` that is a file; argparse's own bad-flag exit is 2 too), 1 when the run failed after
its inputs were accepted (a missing framework, running out of memory, a failed write).  No
traceback is shown for either.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ptycho.errors import PtychoError

BACKEND_CHOICES: tuple[str, ...] = ("tensorflow", "pytorch")
#: Exit status when the invocation or its inputs are refused (fix the command or the files).
EXIT_USAGE: int = 2
#: Exit status when a run whose inputs were accepted fails (environment, memory, disk).
EXIT_RUNTIME: int = 1
#: Exceptions that mean "the inputs were refused" (PtychoError covers ConfigError and the data and bundle
#: validation errors; ValueError / KeyError are argument checks).
_USAGE_ERRORS: tuple[type[BaseException], ...] = (PtychoError, FileNotFoundError, FileExistsError, NotADirectoryError,
                                                   IsADirectoryError, ValueError, KeyError)


def exit_status(exc: BaseException) -> int:
    """The exit status of a command that stopped with ``exc``: :data:`EXIT_USAGE` for a refused input,
    :data:`EXIT_RUNTIME` for anything else (every CLI of both backends maps errors through this)."""
    return EXIT_USAGE if isinstance(exc, _USAGE_ERRORS) else EXIT_RUNTIME
#: Largest stitching crop: upstream's M=20 (used for N >= 64).  For N=32 the crop is N/2 = 16,
#: the part of the trimmed object the reassembly normalises (the border is amplified ~1000x).
STITCH_M: int = 20


def stitch_crop(N: int) -> int:
    """Central crop ``M`` used to stitch objects of size ``N``: ``min(20, N // 2)``."""
    return min(STITCH_M, int(N) // 2)


#: Name of the resolved configuration every training and inference CLI writes next to its outputs.
RESOLVED_CONFIG_NAME = "config.yaml"
#: Parsed attributes that describe how the command ran, not the run (left out of the resolved config).
_NOT_RUN_SETTINGS = frozenset({"config", "debug", "__path__"})


def make_parser(prog: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """The argument parser of every training / inference CLI of both backends (jsonargparse, a drop-in
    ``argparse.ArgumentParser``), with the flags they all share:

    * ``--config FILE``: YAML or JSON mapping of flag values (keys: the option names without ``--``,
      e.g. ``nepochs: 30``); flags after it on the command line override it, an unknown key is refused
      (exit 2).  The ``config.yaml`` a run writes (:func:`write_resolved_config`) is such a file.
    * ``--debug``: show the traceback of an error instead of the one-line message.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, description=description, exit_on_error=True, **kwargs)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="YAML or JSON file of flag values (keys: flag names without '--'); flags after it "
                             "override it")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def warn_legacy_flags(argv: Sequence[str] | None, legacy: Mapping[str, str]) -> None:
    """A DeprecationWarning for each legacy spelling in ``argv`` (``legacy``: old flag -> its replacement)."""
    for token in sys.argv[1:] if argv is None else argv:
        flag = str(token).split("=", 1)[0]
        if flag in legacy:
            warnings.warn(f"{flag} is deprecated; use {legacy[flag]}", DeprecationWarning, stacklevel=3)


def write_resolved_config(args: argparse.Namespace, output_dir: str | os.PathLike) -> Path:
    """Write every setting of the run (defaults included; paths as strings) to ``output_dir/config.yaml``,
    atomically: ``--config output_dir/config.yaml`` repeats the run."""
    import yaml

    from ptycho.atomic import atomic_write_bytes

    def plain(v: Any) -> Any:
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    settings = {k: plain(v) for k, v in sorted(vars(args).items()) if k not in _NOT_RUN_SETTINGS}
    text = yaml.safe_dump(settings, sort_keys=True, default_flow_style=False)
    return atomic_write_bytes(Path(output_dir) / RESOLVED_CONFIG_NAME, text.encode("utf-8"))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags both CLIs accept."""
    parser.add_argument(
        "--backend", choices=BACKEND_CHOICES, default="tensorflow", help="framework (default: %(default)s)"
    )
    parser.add_argument("--output_dir", type=Path, required=False, help="directory for the outputs")
    parser.add_argument("--n_groups", type=int, default=None, help="number of groups to use (default: all)")
    parser.add_argument("--n_images", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--gridsize", type=int, default=None, help="group side; C = gridsize**2 patterns per group")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of grouping, initial weights and batch order (default 0)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    add_units_argument(parser)


def add_units_argument(parser: argparse.ArgumentParser) -> None:
    """``--diff3d_units``: what the data files' diffraction holds (``RawData`` ``diffraction_is``)."""
    parser.add_argument(
        "--diff3d_units", choices=("auto", "amplitude", "intensity"), default="auto",
        help="what diff3d holds: 'intensity' (photon counts, converted with sqrt) or 'amplitude'; 'auto' "
        "(default) reads integer data and CXI/HDF5 frames as counts, the NPZ key diff3d_units otherwise",
    )


def add_stream_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """``--stream``: read the ``what`` data's patterns from disk batch by batch (``ptycho.streaming``)."""
    parser.add_argument(
        "--stream", action="store_true",
        help=f"read the {what} patterns from disk batch by batch (data larger than memory; an uncompressed NPZ "
             "of amplitudes: ptycho.streaming); grouping uses the positions alone",
    )


def resolve_n_groups(args: argparse.Namespace) -> int | None:
    """``--n_groups``, or the deprecated ``--n_images`` alias (with a DeprecationWarning)."""
    if args.n_images is not None:
        warnings.warn("--n_images is deprecated; use --n_groups", DeprecationWarning, stacklevel=2)
        print("warning: --n_images is deprecated; use --n_groups", file=sys.stderr)
        if args.n_groups is not None and args.n_groups != args.n_images:
            raise ValueError(f"--n_images={args.n_images} contradicts --n_groups={args.n_groups}; pass only --n_groups")
        return args.n_images
    return args.n_groups


def require_file(path: Path | None, flag: str) -> Path:
    """``path`` if it is an existing file, else FileNotFoundError naming the flag."""
    if path is None:
        raise ValueError(f"{flag} is required")
    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    return Path(path)


#: Largest memory (bytes) ``--simulate`` may need, estimated as 32 bytes per pixel of the
#: ``[n_positions, N, N]`` patterns (patterns, patches and their complex intermediates).
MAX_SIMULATION_BYTES: int = 4 * 1024**3
_SIMULATION_BYTES_PER_PIXEL = 32


def _check_int(flag: str, value: object, low: int, high: int | None = None) -> None:
    from ptycho.errors import ConfigError

    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ConfigError(flag, value, allowed)


def validate_numeric_args(args: argparse.Namespace) -> None:
    """Check every numeric flag the parsed ``args`` carry, before any data is read or simulated.

    ``--N`` must be a supported patch size, ``--n_positions`` at least 1 and small enough that
    simulating it needs at most :data:`MAX_SIMULATION_BYTES`, ``--batch_size``, ``--nepochs``,
    ``--n_groups`` at least 1, ``--gridsize`` and ``--n_filters_scale`` within the bundle bounds
    (``ptycho.bundle_schema``), ``--nphotons`` finite and > 0, ``--scan_spacing`` finite, > 0 and small
    enough that the simulated object fits the same memory bound.  Raises ConfigError naming the flag.
    """
    import math

    from ptycho import bundle_schema
    from ptycho.conventions import SUPPORTED_N
    from ptycho.errors import ConfigError

    get = lambda name: getattr(args, name, None)  # noqa: E731
    if get("N") is not None and get("N") not in SUPPORTED_N:
        raise ConfigError("--N", get("N"), f"one of {SUPPORTED_N}")
    _check_int("--gridsize", get("gridsize"), 1, bundle_schema.MAX_GRIDSIZE)
    _check_int("--n_filters_scale", get("n_filters_scale"), 1, bundle_schema.MAX_N_FILTERS_SCALE)
    for flag in ("batch_size", "nepochs", "n_groups", "n_images"):
        _check_int(f"--{flag}", get(flag), 1)
    if get("n_positions") is not None and get("N") is not None:
        most = MAX_SIMULATION_BYTES // (_SIMULATION_BYTES_PER_PIXEL * get("N") ** 2)
        _check_int("--n_positions", get("n_positions"), 1, most)
    spacing = get("scan_spacing")
    if spacing is not None:
        if not (isinstance(spacing, float | int) and math.isfinite(spacing) and spacing > 0):
            raise ConfigError("--scan_spacing", spacing, "a finite number of pixels > 0")
        if get("N") is not None and get("n_positions") is not None:
            from ptycho.simulate import auto_object_size

            side = auto_object_size(get("N"), get("n_positions"), spacing=spacing)
            if side**2 * _SIMULATION_BYTES_PER_PIXEL > MAX_SIMULATION_BYTES:
                raise ConfigError("--scan_spacing", spacing, f"a spacing whose simulated object ({side} x {side} "
                                  f"px) fits in {MAX_SIMULATION_BYTES >> 30} GiB",
                                  fix="use a smaller --scan_spacing or fewer --n_positions")
    nphotons = get("nphotons")
    if nphotons is not None and not (isinstance(nphotons, float | int) and math.isfinite(nphotons) and nphotons > 0):
        raise ConfigError("--nphotons", nphotons, "a finite number > 0")


def fit_batch_size(prog: str, batch_size: int, n_groups: int, *, power_of_two: bool = True) -> int:
    """``batch_size``, or the largest allowed size <= ``n_groups`` with a message when it exceeds the data."""
    if n_groups <= 0 or batch_size <= n_groups:
        return batch_size
    fitted = 1 << (n_groups.bit_length() - 1) if power_of_two else n_groups
    print(f"{prog}: --batch_size {batch_size} is larger than the {n_groups} groups of the data; using {fitted}",
          file=sys.stderr)
    return fitted


def quiet_frameworks() -> None:
    """Silence TensorFlow's C++ start-up logging (set before it is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def show_core_log(prog: str, quiet: bool = False) -> None:
    """Show the core's log lines (logger ``ptycho``, e.g. "read as photon counts") on stderr as ``prog: ...``.

    INFO and above, WARNING and above with ``quiet``.  Idempotent: one handler however often a
    CLI's ``main`` runs in a process.
    """
    logger = logging.getLogger("ptycho")
    handler = next((h for h in logger.handlers if getattr(h, "ptycho_cli", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.ptycho_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    else:
        from ptycho.startup import to_current_stderr

        to_current_stderr(handler)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)


def run_main(prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
             argv: Sequence[str] | None) -> int:
    """Parse ``argv``, run ``body`` and turn expected errors into one readable line (:func:`exit_status`);
    with ``--debug`` the error propagates with its traceback."""
    args = parser.parse_args(argv)
    quiet_frameworks()
    show_core_log(prog, bool(getattr(args, "quiet", False)))
    try:
        validate_numeric_args(args)
        output_dir = getattr(args, "output_dir", None)
        if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise FileExistsError(f"--output_dir {output_dir} is an existing file, not a directory")
        return body(args)
    except (PtychoError, FileNotFoundError, ValueError, KeyError, RuntimeError, OSError, MemoryError) as exc:
        if getattr(args, "debug", False):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, MemoryError):
            message = f"out of memory ({exc or 'no detail'}); use smaller inputs"
        print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
        return exit_status(exc)


def one_line(message: object) -> str:
    """``message`` as a single line (newlines folded), for ``<prog>: error: ...``."""
    return " ".join(str(message).split())

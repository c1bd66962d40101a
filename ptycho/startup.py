"""Process start-up policy: the one place that sets what the frameworks read when they are imported.

TensorFlow and torch read some settings from the environment once, when their runtime loads, so
these must be in place before the first ``import tensorflow`` / ``import torch`` of the process.
:func:`prepare_frameworks` is called by ``ptycho_tf/__init__.py`` and ``ptycho_torch/__init__.py``
(every backend module imports its package first) and by the CLIs before they import anything else,
so ``ptycho_train --backend pytorch`` and ``python -m ptycho_torch.train`` run under the same policy.
Every variable is set with ``os.environ.setdefault``: a value the user exported wins.

=========================  ===========  ===============================================================
variable                   value        why
=========================  ===========  ===============================================================
``OMP_WAIT_POLICY``        ``PASSIVE``  OpenMP worker threads sleep instead of spinning between parallel
                                        regions; with busy-waiting a torch training step on a CPU shared
                                        with other processes ran up to 5x slower
                                        (``benchmarks/bench_step_time.py``), passive costs nothing
                                        measurable on an idle CPU.
``TF_CPP_MIN_LOG_LEVEL``   ``2``        TensorFlow's C++ start-up lines (oneDNN notice, CPU feature
                                        and CUDA probing) are not printed; errors still are.
=========================  ===========  ===============================================================

:func:`configure_cli_logging` is for command-line entry points only (a library leaves logging
configuration to its application): INFO lines of the ``ptycho*`` loggers to stderr, absl's
Python-side warnings lowered to errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

__all__ = ["FRAMEWORK_ENV", "TF_STARTUP_NOISE", "configure_cli_logging", "import_tensorflow_quietly",
           "prepare_frameworks", "to_current_stderr"]

#: Environment defaults applied by :func:`prepare_frameworks` (the table above).
FRAMEWORK_ENV: dict[str, str] = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def prepare_frameworks() -> None:
    """Apply :data:`FRAMEWORK_ENV` with ``setdefault`` (must run before TensorFlow / torch are imported).

    Warns (once, via ``logging``) when torch is already imported, since its OpenMP runtime has then
    already read ``OMP_WAIT_POLICY``.
    """
    missing = [k for k in FRAMEWORK_ENV if k not in os.environ]
    for key, value in FRAMEWORK_ENV.items():
        os.environ.setdefault(key, value)
    if "OMP_WAIT_POLICY" in missing and "torch" in sys.modules:
        logging.getLogger(__name__).warning(
            "torch was imported before ptychopinn set OMP_WAIT_POLICY=PASSIVE; import ptycho_torch (or call "
            "ptycho.startup.prepare_frameworks()) first, or export OMP_WAIT_POLICY=PASSIVE"
        )


#: Lines TensorFlow's C++ runtime writes to stderr at import whatever ``TF_CPP_MIN_LOG_LEVEL`` says
#: (TF >= 2.20 logs them through absl before absl's logging is initialised); informational only.
TF_STARTUP_NOISE: tuple[str, ...] = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation_placer.cc",
    "TF-TRT Warning",
    "could not find cuda drivers",
    "cuda_executor.cc",
)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its informational start-up lines (:data:`TF_STARTUP_NOISE`) dropped.

    For CLIs only: file descriptor 2 is redirected to a temporary file during the import, then
    every other line is written back to stderr, so real errors and warnings still show.  Does
    nothing when TensorFlow is already imported or the user set ``TF_CPP_MIN_LOG_LEVEL`` below 2.
    """
    import tempfile

    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") not in ("2", "3"):
        return
    prepare_frameworks()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(noise in line for noise in TF_STARTUP_NOISE)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def to_current_stderr(handler: logging.StreamHandler) -> None:
    """Point a CLI's handler, made by an earlier ``main`` in this process, at the current ``sys.stderr``
    (``setStream`` would first flush the old stream, which may be closed by now)."""
    with handler.lock or contextlib.nullcontext():
        handler.stream = sys.stderr


def _not_shown_by_the_cli(record: logging.LogRecord) -> bool:
    """False for a core (``ptycho``) record while a CLI shows those itself as ``prog: ...``
    (``ptycho.cli._common.show_core_log``), so no line is printed twice."""
    core = record.name == "ptycho" or record.name.startswith("ptycho.")
    return not (core and any(getattr(h, "ptycho_cli", False) for h in logging.getLogger("ptycho").handlers))


def configure_cli_logging(quiet: bool = False) -> None:
    """CLI logging: ``ptycho*`` loggers at INFO (WARNING with ``quiet``) to stderr as ``name: message``.

    Also lowers absl's Python logger (used by TensorFlow / Keras) to ERROR.  Call only from a
    command-line ``main``; it configures the root logger of the process.
    """
    level = logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_ptycho_cli", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        handler.addFilter(_not_shown_by_the_cli)
        handler._ptycho_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    else:
        to_current_stderr(handler)
    root.setLevel(logging.WARNING)
    for name in ("ptycho", "ptycho_tf", "ptycho_torch", "conformance"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("absl").setLevel(logging.ERROR)

"""A pool of persistent conformance workers: one ``python -m conformance.worker --serve`` process per backend.

Importing TensorFlow (~5 s) or torch (~3 s) for every generated case would dominate a
property-based run, so :class:`ServePool` starts each backend's worker once and then talks
to it in JSON lines: one request object per line on the worker's stdin, one reply object per
line on its stdout (the ``--serve`` protocol of :mod:`conformance.worker`)::

    with ServePool(("tensorflow", "pytorch", "reference")) as pool:
        replies = pool.broadcast({"scenario": scenario.to_dict(), "run": str(run_dir), "phase": "produce"})

:meth:`ServePool.broadcast` writes the request to every worker before reading any reply, so the
backends compute concurrently (each in its own process: TF and torch are never imported together,
and this module imports neither).  A worker that dies or exceeds its timeout raises
:class:`WorkerError` carrying the tail of its stderr; the dead (or killed) process is replaced by a
fresh one on the next request, so one crash is one failed case, not a dead session.

Lines on a worker's stdout that are not JSON objects (stray prints of a library) are skipped and
kept for the error message.  Each worker's stderr goes to a log file (``log_dir``, a temporary
directory by default), never to a pipe, so a chatty worker cannot block on a full pipe.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

__all__ = ["BACKENDS", "REPO_ROOT", "ServePool", "WorkerError", "serve_command"]

#: The workers a default pool starts: both backends and the NumPy reference.
BACKENDS: tuple[str, ...] = ("tensorflow", "pytorch", "reference")
#: The repository root (the workers run with it as the working directory).
REPO_ROOT: Path = Path(__file__).resolve().parents[1]
#: Lines of stderr quoted in a :class:`WorkerError`.
STDERR_TAIL_LINES: int = 40


def serve_command(backend: str, python: str = sys.executable) -> list[str]:
    """``python -m conformance.worker --backend BACKEND --serve``."""
    return [python, "-m", "conformance.worker", "--backend", backend, "--serve"]


class WorkerError(RuntimeError):
    """A serve worker crashed, timed out or broke the protocol; ``stderr_tail`` holds its last stderr lines."""

    def __init__(self, backend: str, reason: str, stderr_tail: str) -> None:
        super().__init__(f"{backend} worker {reason}\n--- stderr tail ---\n{stderr_tail}")
        self.backend = backend
        self.reason = reason
        self.stderr_tail = stderr_tail


@dataclass
class _Worker:
    """One running ``--serve`` process and the bookkeeping of its output."""

    backend: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: TextIO
    buffer: bytearray = field(default_factory=bytearray)
    noise: list[str] = field(default_factory=list)

    def stderr_tail(self, n: int = STDERR_TAIL_LINES) -> str:
        """The last ``n`` lines the worker wrote to stderr (and any non-JSON stdout lines)."""
        self.log_file.flush()
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        if self.noise:
            lines += ["--- non-JSON stdout lines ---", *self.noise[-10:]]
        return "\n".join(lines[-n:])


class ServePool:
    """Persistent ``--serve`` workers, one per backend, used as a context manager.

    Args:
        backends: the worker backends to run (``tensorflow``, ``pytorch``, ``reference``).
        python: the interpreter that runs ``-m conformance.worker`` (default: this one).
        env: extra environment variables for the workers (e.g. ``PTYCHO_MUTANT``), on top of
            this process's environment.
        timeout_s: the longest one request may take before its worker is killed.
        log_dir: where each worker's stderr log goes (default: a temporary directory).
        command: ``backend -> argv`` of one worker (default :func:`serve_command` with ``python``;
            tests substitute a fake worker).
    """

    def __init__(
        self,
        backends: Sequence[str] = BACKENDS,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 300.0,
        log_dir: Path | None = None,
        command: Callable[[str], list[str]] | None = None,
    ) -> None:
        self.backends: tuple[str, ...] = tuple(backends)
        self.command = command or functools.partial(serve_command, python=python)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.timeout_s = float(timeout_s)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_dir = log_dir
        self._workers: dict[str, _Worker] = {}
        self._starts: dict[str, int] = {b: 0 for b in self.backends}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> ServePool:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def log_dir(self) -> Path:
        """The directory holding the workers' stderr logs."""
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ptycho-serve-")
            self._log_dir = Path(self._tmp.name)
        return self._log_dir

    def start(self) -> None:
        """Start every worker that is not running (they import their framework concurrently)."""
        for backend in self.backends:
            self._ensure(backend)

    def close(self) -> None:
        """Ask every worker to exit (EOF on stdin), then terminate any that does not within 10 s."""
        for worker in self._workers.values():
            if worker.proc.stdin is not None and not worker.proc.stdin.closed:
                try:
                    worker.proc.stdin.close()
                except OSError:
                    pass
        for backend in list(self._workers):
            self._stop(backend, grace_s=10.0)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._log_dir = None

    def starts(self, backend: str) -> int:
        """How many processes were started for ``backend`` (1 unless one crashed or timed out)."""
        return self._starts[backend]

    def _ensure(self, backend: str) -> _Worker:
        if backend not in self.backends:
            raise ValueError(f"backend {backend!r} is not in this pool {self.backends}")
        worker = self._workers.get(backend)
        if worker is not None and worker.proc.poll() is None:
            return worker
        if worker is not None:
            self._stop(backend, grace_s=0.0)
        self._starts[backend] += 1
        log_path = self.log_dir / f"{backend}-{self._starts[backend]}.stderr.log"
        log_file = log_path.open("w")
        proc = subprocess.Popen(
            self.command(backend),
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
        worker = _Worker(backend, proc, log_path, log_file)
        self._workers[backend] = worker
        return worker

    def _stop(self, backend: str, grace_s: float) -> None:
        worker = self._workers.pop(backend)
        if grace_s > 0:
            try:
                worker.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        if worker.proc.poll() is None:
            worker.proc.terminate()
            try:
                worker.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        for stream in (worker.proc.stdin, worker.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        worker.log_file.close()

    # ------------------------------------------------------------------ protocol
    def _send(self, backend: str, message: Mapping[str, Any]) -> None:
        worker = self._ensure(backend)
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        try:
            assert worker.proc.stdin is not None
            worker.proc.stdin.write(line)
            worker.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            tail = worker.stderr_tail()
            self._stop(backend, grace_s=0.0)
            raise WorkerError(backend, "died before it could read the request", tail) from None

    def _receive(self, backend: str, deadline: float) -> dict[str, Any]:
        worker = self._workers[backend]
        stdout = worker.proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                newline = worker.buffer.find(b"\n")
                if newline >= 0:
                    raw = bytes(worker.buffer[:newline]).decode(errors="replace").strip()
                    del worker.buffer[: newline + 1]
                    reply = _parse_reply(raw)
                    if reply is not None:
                        return reply
                    if raw:
                        worker.noise.append(raw)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = worker.stderr_tail()
                    self._stop(backend, grace_s=0.0)
                    raise WorkerError(backend, f"timed out after {self.timeout_s:.0f} s", tail)
                if not sel.select(timeout=remaining):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = worker.proc.wait()
                    tail = worker.stderr_tail()
                    self._stop(backend, grace_s=0.0)
                    raise WorkerError(backend, f"exited with status {code} before replying", tail)
                worker.buffer.extend(chunk)

    def request(self, backend: str, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request to ``backend``'s worker and return its reply (a dict)."""
        self._send(backend, message)
        return self._receive(backend, time.monotonic() + self.timeout_s)

    def broadcast(
        self, message: Mapping[str, Any], backends: Sequence[str] | None = None
    ) -> dict[str, dict[str, Any] | WorkerError]:
        """Send ``message`` to several workers at once, then collect every reply.

        Returns ``{backend: reply}``; a backend whose worker failed maps to its :class:`WorkerError`
        (the others still reply, so the caller sees every failure of the case at once).
        """
        chosen = tuple(backends) if backends is not None else self.backends
        results: dict[str, dict[str, Any] | WorkerError] = {}
        sent: list[str] = []
        for backend in chosen:
            try:
                self._send(backend, message)
                sent.append(backend)
            except WorkerError as err:
                results[backend] = err
        deadline = time.monotonic() + self.timeout_s
        for backend in sent:
            try:
                results[backend] = self._receive(backend, deadline)
            except WorkerError as err:
                results[backend] = err
        return {b: results[b] for b in chosen}


def _parse_reply(raw: str) -> dict[str, Any] | None:
    """The JSON object on one stdout line, or None if the line is not one."""
    if not raw.startswith("{"):
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None

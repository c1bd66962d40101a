"""Developer and CI sessions.

``nox -s tests``   the default test suite (what the README and .ci/run run)
``nox -s slow``    the tests marked slow (longer end-to-end runs)
``nox -s lint``    ruff
``nox -s bench``   the benchmarks in benchmarks/ (CPU)
``nox -s gpu``     CUDA checks and throughput of the PyTorch backend (needs a GPU)

Each session installs the project from this checkout into its own virtualenv.
torch is pinned in pyproject.toml: an unpinned torch would pull CUDA wheels.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the default (not slow) test suite."""
    session.install("-e", ".[all,test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    """Run the tests marked ``slow``."""
    session.install("-e", ".[all,test]")
    session.run("python", "-m", "pytest", "-m", "slow", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run every benchmark script and print its measurements."""
    session.install("-e", ".[all]")
    session.run("python", "benchmarks/bench_grouping.py", *session.posargs)
    session.run("python", "benchmarks/bench_step_time.py")
    session.run("python", "benchmarks/bench_tf_training.py", "--epochs", "3", "--n_positions", "128")


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """On a machine with CUDA: PyTorch backend correctness, determinism and throughput on the GPU."""
    session.install("-e", ".[torch]")
    session.run("python", "benchmarks/cuda_check.py", *session.posargs)

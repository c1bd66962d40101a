"""Developer and CI sessions.

``nox -s tests``   the default test suite (what the README and .ci/run run)
``nox -s slow``    the tests marked slow (longer end-to-end runs)
``nox -s lint``    ruff
``nox -s parity``  the conformance gate: every DEFAULT_GATE scenario through both backends (reports/parity/)
``nox -s baselines`` regenerate the golden baselines in baselines/ on purpose and show the diff
``nox -s mutants`` negative controls: each injected bug must make the FULL default gate fail at the expected check
``nox -s mutation`` mutation score: cosmic-ray mutants of both backends' own code, each through the real gate
``nox -s bench``   the benchmarks in benchmarks/ (CPU)
``nox -s gpu``     on a GPU machine: CUDA checks and throughput, DDP throughput (> 1 GPU), the gate's
                  records made on the GPU judged with the CPU tolerances (reports/gpu/)

Each session installs the project from this checkout into its own virtualenv.
torch is pinned in pyproject.toml: an unpinned torch would pull CUDA wheels.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "parity"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
#: The classical engine of the slow-tier oracle and of the PINN-vs-classical benchmark, installed
#: without its dependencies (its torchvision requirement; pyproject.toml's ``oracle`` extra has the rest).
PTYCHI = "ptychi==2.2.0"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the default (not slow) test suite."""
    session.install("-e", ".[all,test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def slow(session: nox.Session) -> None:
    """Run the tests marked ``slow`` (including the pty-chi oracle)."""
    session.install("-e", ".[all,test,oracle]")
    session.install("--no-deps", PTYCHI)
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
    # data larger than memory: 200k N=64 patterns (3.3 GB) on disk, one streamed epoch vs in memory
    session.run("python", "benchmarks/bench_streaming.py", "--train_groups", "1024")
    # PINN (train on scan A, infer on held-out scan B) beside pty-chi LSQML reconstructing B: the README table.
    session.install("-e", ".[all,oracle]")
    session.install("--no-deps", PTYCHI)
    session.run("python", "benchmarks/bench_pinn_vs_classical.py", "--threads", "1")


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """On a machine with CUDA: PyTorch backend correctness, determinism and throughput on the GPU."""
    session.install("-e", ".[all,test]")
    session.run("python", "benchmarks/cuda_check.py", *session.posargs)
    out = session.run("python", "-c", "import torch; print(torch.cuda.device_count())", silent=True) or "1"
    n_gpus = int(str(out).strip().splitlines()[-1])
    # single GPU, and DDP over every GPU when there are several: samples/s into reports/gpu/ddp.json
    session.run("python", "benchmarks/bench_ddp.py", "--accelerator", "cuda", "--devices", str(max(n_gpus, 1)),
                "--report", "reports/gpu/ddp.json")
    # CPU-vs-GPU parity: the gate's records made on the GPU, judged by this checkout's (CPU-measured) tolerances
    run_dir = Path(session.create_tmp()) / "gpu-run"
    session.run("python", "-m", "conformance", "run", "--run-dir", str(run_dir), "--keep", "--no-report",
                env={"PTYCHO_DEVICE": "cuda"}, success_codes=[0, 1])
    session.run("python", "-m", "conformance", "judge", "--run-dir", str(run_dir), "--report-dir", "reports/gpu")


@nox.session(python=PYTHON)
def parity(session: nox.Session) -> None:
    """The conformance gate; exit 1 on any divergence. Reports in reports/parity/."""
    session.install("-e", ".[all,test]")
    run_dir = Path(session.create_tmp()) / "parity-run"
    session.run("python", "-m", "conformance", "run", "--run-dir", str(run_dir), "--report-dir", "reports/parity",
                *session.posargs)
    # Golden baselines (judged on the records of the run just made) and the hypothesis-generated cases.
    session.run("python", "-m", "pytest", "-m", "parity", "tests/conformance/test_baselines.py",
                "tests/conformance/test_hypothesis_parity.py", env={"PTYCHO_PARITY_RUN": str(run_dir)})
    # Data-parallel training (2 CPU replicas per backend) against single-process training.
    session.run("python", "-m", "conformance.distributed", "--report", "reports/parity/distributed.json")


@nox.session(python=PYTHON)
def baselines(session: nox.Session) -> None:
    """Regenerate the golden baselines (baselines/) and print the diff for review."""
    session.install("-e", ".[all,test]")
    session.run("python", "-m", "conformance.baselines", *session.posargs)


@nox.session(python=PYTHON)
def mutants(session: nox.Session) -> None:
    """Run the gate against every mutant (one injected upstream bug each) and print the kill table."""
    session.install("-e", ".[all,test]")
    session.run("python", "-m", "planted_bugs", *session.posargs)


@nox.session(python=PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation score of the gate: a seeded sample of cosmic-ray mutants of ptycho_tf/ and ptycho_torch/, each run
    through the real gate in an isolated copy of the tree; report in reports/mutation/ (2 gates at once)."""
    session.install("-e", ".[all,test,mutation]")
    session.run("python", "-m", "conformance.mutation", *session.posargs)


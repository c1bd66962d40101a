"""Developer and CI sessions.

``nox -s tests``     the default (not slow) test suite (what the README's test command runs)
``nox -s quick``     the quick subset (< 2 min): core, config, conformance unit tests; no training
``nox -s slow``      the tests marked slow (longer end-to-end runs)
``nox -s lint``      ruff
``nox -s parity``    the conformance gate: every DEFAULT_GATE scenario through both backends (reports/parity/)
``nox -s baselines`` regenerate the golden baselines in baselines/ on purpose and show the diff
``nox -s mutants``   negative controls: each planted bug must make the FULL default gate fail at the expected check
``nox -s mutation``  mutation score: cosmic-ray mutants of both backends' own code, each through the real gate
``nox -s bench``     the benchmarks in benchmarks/ (CPU)
``nox -s gpu``       on a GPU machine: CUDA checks and throughput, DDP throughput (> 1 GPU), the gate's
                     records made on the GPU judged with the CPU tolerances (reports/gpu/)
``nox -s compat``    the parity gate on the oldest and the newest framework versions of pyproject's ranges
                     (not run in CI: it installs two more framework stacks)

One environment for all sessions: every session except ``compat`` runs in ``.nox/shared``, created
once with ``pip install -c constraints/ci.txt -e .[all,test,dev,oracle,tensorboard,mlflow]`` (plus
pty-chi without its torchvision requirement, the slow tier's independent engine) and rebuilt only
when pyproject.toml or the constraints change (instead of one 2.7 GB environment per session).
``PTYCHO_NOX_PYTHON=/path/to/python`` uses an existing environment instead (CI: the one it installed).
The constraints pin torch's +cpu build: an unpinned torch would pull several GB of CUDA wheels.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "parity"]

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ROOT / "constraints" / "ci.txt"
SHARED = ROOT / ".nox" / "shared"
EXTRAS = ".[all,test,dev,oracle,tensorboard,mlflow]"
#: The classical engine of the slow-tier oracle and of the PINN-vs-classical benchmark, installed
#: without its dependencies (its torchvision requirement; pyproject.toml's ``oracle`` extra has the rest).
PTYCHI = "ptychi==2.2.0"


#: Oldest and newest framework versions of pyproject's ranges (``nox -s compat``).
COMPAT = {
    "oldest": ["torch==2.4.1", "lightning==2.4.0", "tensorflow-cpu==2.18.1", "keras==3.7.0", "numpy==2.0.2"],
    "newest": ["-c", str(CONSTRAINTS)],
}
QUICK = [
    "tests/test_config.py", "tests/test_params.py", "tests/test_conventions.py", "tests/test_training_plan.py",
    "tests/test_grouping.py", "tests/test_raw_data.py", "tests/test_bundle.py", "tests/test_loss_weights.py",
    "tests/test_network_spec.py", "tests/test_import_isolation.py", "tests/conformance/test_tolerances.py",
    "tests/conformance/test_compare.py", "tests/conformance/test_metrics.py",
]


def _bin(env: Path, name: str) -> str:
    return str(env / ("Scripts" if sys.platform == "win32" else "bin") / name)


def _stamp() -> str:
    text = (ROOT / "pyproject.toml").read_bytes() + CONSTRAINTS.read_bytes()
    return hashlib.sha256(text).hexdigest()


def _shared_python(session: nox.Session) -> str:
    """The interpreter of the shared environment, created or refreshed when its inputs changed."""
    if os.environ.get("PTYCHO_NOX_PYTHON"):
        return os.environ["PTYCHO_NOX_PYTHON"]
    stamp_file = SHARED / ".ptycho-stamp"
    if not (stamp_file.is_file() and stamp_file.read_text() == _stamp()):
        session.run(sys.executable, "-m", "venv", "--clear", str(SHARED), external=True)
        python = _bin(SHARED, "python")
        session.run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip", external=True)
        session.run(python, "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), "-e", EXTRAS,
                    external=True)
        session.run(python, "-m", "pip", "install", "--quiet", "--no-deps", PTYCHI, external=True)
        stamp_file.write_text(_stamp())
    return _bin(SHARED, "python")


def _run(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run(_shared_python(session), *args, external=True, env=env)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Run the default (not slow) test suite."""
    _run(session, "-m", "pytest", *session.posargs)


@nox.session(venv_backend="none")
def quick(session: nox.Session) -> None:
    """The quick subset (< 2 minutes): no training, no framework-heavy tests."""
    _run(session, "-m", "pytest", *QUICK, *session.posargs)


@nox.session(venv_backend="none")
def slow(session: nox.Session) -> None:
    """Run the tests marked ``slow`` (including the pty-chi oracle)."""
    _run(session, "-m", "pytest", "-m", "slow", *session.posargs)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    _run(session, "-m", "ruff", "check", ".")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Run every benchmark script and print its measurements."""
    _run(session, "benchmarks/bench_grouping.py", *session.posargs)
    _run(session, "benchmarks/bench_step_time.py")
    _run(session, "benchmarks/bench_tf_training.py", "--epochs", "3", "--n_positions", "128")
    # data larger than memory: 200k N=64 patterns (3.3 GB) on disk, one streamed epoch vs in memory
    _run(session, "benchmarks/bench_streaming.py", "--train_groups", "1024")
    # PINN (train on scan A, infer on held-out scan B) beside pty-chi LSQML reconstructing B: the README table.
    _run(session, "benchmarks/bench_pinn_vs_classical.py", "--threads", "1")
    # the unified CLI beside the backend's own CLI on the same PyTorch run (ratio of medians)
    _run(session, "benchmarks/bench_cli_speed.py")


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """On a machine with CUDA: PyTorch backend correctness, determinism and throughput on the GPU.

    Needs a CUDA build of torch in the environment (PTYCHO_NOX_PYTHON pointing at it): the shared
    environment holds the +cpu build.
    """
    python = _shared_python(session)
    _run(session, "benchmarks/cuda_check.py", *session.posargs)
    out = session.run(python, "-c", "import torch; print(torch.cuda.device_count())", silent=True,
                      external=True) or "1"
    n_gpus = int(str(out).strip().splitlines()[-1])
    # single GPU, and DDP over every GPU when there are several: samples/s into reports/gpu/ddp.json
    _run(session, "benchmarks/bench_ddp.py", "--accelerator", "cuda", "--devices", str(max(n_gpus, 1)),
         "--report", "reports/gpu/ddp.json")
    # CPU-vs-GPU parity: the gate's records made on the GPU, judged by this checkout's (CPU-measured) tolerances
    run_dir = Path(session.create_tmp()) / "gpu-run"
    session.run(python, "-m", "conformance", "run", "--run-dir", str(run_dir), "--keep", "--no-report",
                env={"PTYCHO_DEVICE": "cuda"}, success_codes=[0, 1], external=True)
    _run(session, "-m", "conformance", "judge", "--run-dir", str(run_dir), "--report-dir", "reports/gpu")


def _gate(session: nox.Session, python: str, report_dir: str, *args: str) -> int:
    """Run the gate with ``python``, its records in a temporary directory removed afterwards; the exit code."""
    run_dir = Path(session.create_tmp()) / "parity-run"
    try:
        session.run(python, "-m", "conformance", "run", "--run-dir", str(run_dir), "--report-dir", report_dir,
                    "--quiet", *args, external=True, success_codes=[0, 1])
        summary = Path(report_dir) / "summary.md"
        code = 0 if summary.is_file() and summary.read_text(errors="replace").startswith("## ✅") else 1
    finally:
        session.run(sys.executable, "-c", f"import shutil; shutil.rmtree({str(run_dir)!r}, ignore_errors=True)",
                    external=True, silent=True)
    return code


@nox.session(venv_backend="none")
def parity(session: nox.Session) -> None:
    """The conformance gate; exit 1 on any divergence. Reports in reports/parity/; records removed after."""
    python = _shared_python(session)
    run_dir = Path(session.create_tmp()) / "parity-run"
    session.run(python, "-m", "conformance", "run", "--run-dir", str(run_dir), "--report-dir", "reports/parity",
                *session.posargs, external=True)
    # Golden baselines (judged on the records of the run just made) and the hypothesis-generated cases.
    session.run(python, "-m", "pytest", "-m", "parity", "tests/conformance/test_baselines.py",
                "tests/conformance/test_hypothesis_parity.py", env={"PTYCHO_PARITY_RUN": str(run_dir)},
                external=True)
    session.run(python, "-c", f"import shutil; shutil.rmtree({str(run_dir)!r})", external=True, silent=True)
    # Data-parallel training (2 CPU replicas per backend) against single-process training.
    session.run(python, "-m", "conformance.distributed", "--report", "reports/parity/distributed.json",
                external=True)


@nox.session(venv_backend="none")
def baselines(session: nox.Session) -> None:
    """Regenerate the golden baselines (baselines/) and print the diff for review."""
    _run(session, "-m", "conformance.baselines", *session.posargs)


@nox.session(venv_backend="none")
def mutants(session: nox.Session) -> None:
    """Run the gate against every planted bug and print the kill table."""
    _run(session, "-m", "planted_bugs", *session.posargs)


@nox.session(venv_backend="none")
def mutation(session: nox.Session) -> None:
    """Mutation score of the gate: a seeded sample of cosmic-ray mutants of ptycho_tf/ and ptycho_torch/, each run
    through the real gate in an isolated copy of the tree; report in reports/mutation/ (2 gates at once)."""
    _run(session, "-m", "conformance.mutation", *session.posargs)


@nox.session(venv_backend="none")
def compat(session: nox.Session) -> None:
    """The parity gate on the oldest and newest framework versions of the ranges; prints a table.

    Each end gets its own environment (``.nox/compat-<end>``). An end whose wheels cannot be
    installed here (no network, no wheel for this platform) is reported as such, not as a gate
    failure. posargs go to ``conformance run`` (e.g. ``--scenario gs1_n64``).
    """
    rows = []
    for end, pins in COMPAT.items():
        env = ROOT / ".nox" / f"compat-{end}"
        python = _bin(env, "python")
        if not Path(python).exists():
            session.run(sys.executable, "-m", "venv", str(env), external=True)
        try:
            session.run(python, "-m", "pip", "install", "--quiet", *pins, "-e", ".[all,test]",
                        external=True)
        except nox.command.CommandFailed:
            rows.append((end, "-", "-", "not installable here"))
            continue
        versions = session.run(
            python, "-c", "import importlib.metadata as m; print(' '.join(m.version(p) for p in "
            "('torch', 'tensorflow-cpu', 'keras', 'lightning', 'numpy')))",
            external=True, silent=True,
        ).split()
        code = _gate(session, python, f"reports/compat-{end}", *session.posargs)
        rows.append((end, f"torch {versions[0]}, lightning {versions[3]}",
                     f"tensorflow {versions[1]}, keras {versions[2]}, numpy {versions[4]}",
                     "PASS" if code == 0 else f"FAIL (reports/compat-{end}/summary.md)"))
    table = ["| end | torch | tensorflow | gate |", "|---|---|---|---|"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    print("\n".join(table))
    if any(row[3].startswith("FAIL") for row in rows):
        session.error("the gate diverged on at least one end of the version ranges")

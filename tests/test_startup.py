"""Process start-up policy and library manners (ptycho.startup, ptycho_tf/__init__, plotting).

The policy is applied before any framework import, never overrides what the user exported, and the
library leaves process-global state (matplotlib's backend, pyplot) alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptycho import startup

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "TF_CPP_MIN_LOG_LEVEL",
                                                               "KERAS_BACKEND")}
    full.update(env, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)


def test_prepare_frameworks_sets_defaults_and_keeps_user_values():
    code = "import os; from ptycho import startup; startup.prepare_frameworks(); " \
           "print(os.environ['OMP_WAIT_POLICY'], os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    assert _python(code).stdout.split() == ["PASSIVE", "2"]
    assert _python(code, OMP_WAIT_POLICY="ACTIVE", TF_CPP_MIN_LOG_LEVEL="0").stdout.split() == ["ACTIVE", "0"]


def test_backend_packages_apply_the_policy_before_their_framework():
    # importing the package (what every backend module does first) sets the policy, and imports no framework
    for pkg in ("ptycho_tf", "ptycho_torch"):
        out = _python(f"import os, sys, {pkg}; print(os.environ.get('OMP_WAIT_POLICY'), "
                      "'tensorflow' in sys.modules, 'torch' in sys.modules)")
        assert out.stdout.split() == ["PASSIVE", "False", "False"], (pkg, out.stderr)


def test_keras_backend_other_than_tensorflow_is_a_clear_error():
    out = _python("import ptycho_tf", KERAS_BACKEND="torch")
    assert out.returncode != 0
    assert "BackendUnavailableError" in out.stderr and "KERAS_BACKEND" in out.stderr and "Fix:" in out.stderr


def test_plotting_leaves_matplotlib_backend_and_pyplot_alone(tmp_path):
    pytest.importorskip("matplotlib")
    code = ("import sys, matplotlib; matplotlib.use('svg'); from ptycho.workflows import common; "
            "import numpy as np; common.save_image(np.ones((4, 4)), sys.argv[1]); "
            "common.plot_history_png({'loss': [2.0, 1.0]}, sys.argv[2]); "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    full = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.png"), str(tmp_path / "h.png")],
                         capture_output=True, text=True, env=full, timeout=120)
    assert out.stdout.split() == ["svg", "False"], out.stderr
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "h.png").stat().st_size > 0


def test_cli_logging_levels():
    import logging

    startup.configure_cli_logging(quiet=True)
    assert logging.getLogger("ptycho_tf").level == logging.WARNING
    startup.configure_cli_logging(quiet=False)
    assert logging.getLogger("ptycho_torch").level == logging.INFO
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "_ptycho_cli", False)]
    assert len(handlers) == 1  # calling twice adds one handler
    for h in handlers:
        logging.getLogger().removeHandler(h)
    for name in ("ptycho", "ptycho_tf", "ptycho_torch", "conformance", "absl"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_a_core_log_line_is_printed_once_by_a_cli(capsys):
    """``ptycho_train``/``ptycho_inference`` set up both the root handler and the ``prog: `` core handler;
    a core line (e.g. the fitted common tilt) went out through both."""
    import argparse
    import logging

    from ptycho.cli._common import run_main

    def body(_args):
        startup.configure_cli_logging(quiet=False)
        logging.getLogger("ptycho").info("core line")
        logging.getLogger("ptycho_tf").info("backend line")
        return 0

    core = logging.getLogger("ptycho")
    before = list(core.handlers), core.level
    try:
        assert run_main("prog", body, argparse.ArgumentParser(), []) == 0
        err = capsys.readouterr().err.splitlines()
        assert err.count("prog: core line") == 1 and not any(line.endswith(": core line") and line != "prog: core line"
                                                             for line in err), err
        assert "ptycho_tf: backend line" in err
    finally:
        for h in [h for h in logging.getLogger().handlers if getattr(h, "_ptycho_cli", False)]:
            logging.getLogger().removeHandler(h)
        for h in core.handlers[:]:
            if h not in before[0]:
                core.removeHandler(h)
        core.setLevel(before[1])
        for name in ("ptycho_tf", "ptycho_torch", "conformance", "absl"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_quiet_tensorflow_import_drops_the_startup_lines_only():
    pytest.importorskip("tensorflow")
    out = _python("import sys; from ptycho import startup; startup.import_tensorflow_quietly(); "
                  "import os; os.write(2, b'after import\\n'); print('tensorflow' in sys.modules)")
    assert out.stdout.split() == ["True"], out.stderr
    assert "oneDNN" not in out.stderr and "absl::InitializeLog" not in out.stderr
    assert "after import" in out.stderr  # stderr works again afterwards

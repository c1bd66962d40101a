"""The backend-neutral core imports without TensorFlow or PyTorch.

Ptychodus imports ``ptycho.config.config`` in a process that has neither
framework, and the NumPy reference must not drag one in.  Each module is
imported in a fresh interpreter (``sys.modules`` of this test process may
already hold the frameworks) and the subprocess reports which frameworks
ended up loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Core modules that must stay framework-free.
CORE_MODULES = [
    "ptycho.config",
    "ptycho.config.config",
    "ptycho.params",
    "ptycho.conventions",
    "ptycho.errors",
    "ptycho.raw_data",
    "ptycho.simulate",
    "ptycho.reference.physics",
    "ptycho.network_spec",
    "ptycho.canonical_weights",
]
FRAMEWORKS = ("tensorflow", "torch", "keras", "lightning")

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(m for m in {frameworks!r} if m in sys.modules)))
"""


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_without_tensorflow_or_torch(module):
    assert (REPO / (module.replace(".", "/") + ".py")).is_file() or (
        REPO / module.replace(".", "/") / "__init__.py"
    ).is_file(), f"{module} is listed but has no source file"
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(frameworks=FRAMEWORKS), module],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {module} loaded {loaded}"


def test_no_core_module_imports_a_framework():
    """Every module of ``ptycho/`` but the compatibility aliases of ``specs/backends.md``, in one interpreter."""
    aliases = {"ptycho.model", "ptycho.tf_helper", "ptycho.model_manager", "ptycho.train_pinn",
               "ptycho.workflows.components"}
    modules = []
    for path in sorted((REPO / "ptycho").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name not in aliases and not parts[-1].startswith("__main__"):
            modules.append(name)
    assert "ptycho.loader" in modules and "ptycho.cli.train" in modules
    code = "import importlib, json, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += f"print(json.dumps(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

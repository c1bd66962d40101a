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

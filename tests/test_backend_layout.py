"""The backend layout of ``specs/backends.md``: mirrored module names, compatibility aliases, no import circles."""

from __future__ import annotations

import graphlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "backends.md"
PACKAGES = ("ptycho", "ptycho_tf", "ptycho_torch")
#: Core modules that may import a backend (lazily, after choosing it): the dispatcher and the unified CLIs.
DISPATCH = ("ptycho.cli", "ptycho.workflows.backend_selector")


def _table(heading: str) -> list[list[str]]:
    text = SPEC.read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def _modules(cell: str) -> list[str]:
    return re.findall(r"`([\w.]+)`", cell)


def _compat() -> dict[str, str]:
    return {_modules(row[0])[0]: _modules(row[1])[0] for row in _table("Compatibility names")}


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False, exclude_type_checking_imports=True)


def test_every_backend_module_is_in_the_role_table_and_exists():
    named = {m for row in _table("Role table") for cell in row[1:3] for m in _modules(cell)}
    for module in named:
        assert importlib.util.find_spec(module) is not None, f"{module} is in specs/backends.md but does not exist"
    on_disk = set()
    for package in ("ptycho_tf", "ptycho_torch"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] != "__init__":
                on_disk.add(".".join(parts))
    assert on_disk - named == set(), "backend modules missing from the role table in specs/backends.md"


def test_a_role_played_by_both_backends_has_the_same_module_name():
    for row in _table("Role table"):
        tf_mods, torch_mods = _modules(row[1]), _modules(row[2])
        if tf_mods and torch_mods:
            assert [m.split(".", 1)[1] for m in tf_mods] == [m.split(".", 1)[1] for m in torch_mods], row[0]


def test_no_import_circles_in_the_core_or_either_backend():
    graph = _graph()
    deps = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    # A package's __init__ is not an edge of interest (importing a.b imports a first by definition).
    deps = {m: {d for d in ds if not m.startswith(d + ".")} for m, ds in deps.items()}
    compat = set(_compat())
    for m in compat:  # an alias is its target; drop it so a core -> alias -> backend -> core path is not doubled
        deps.pop(m, None)
    deps = {m: ds - compat for m, ds in deps.items()}
    try:
        tuple(graphlib.TopologicalSorter(deps).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_backends_never_import_each_other():
    graph = _graph()
    for a, b in (("ptycho_tf", "ptycho_torch"), ("ptycho_torch", "ptycho_tf")):
        assert not graph.chain_exists(importer=a, imported=b, as_packages=True), f"{a} imports {b}"


def test_the_core_imports_a_backend_only_to_dispatch_to_it():
    graph = _graph()
    compat = set(_compat())
    for module in sorted(graph.find_children("ptycho") | graph.find_descendants("ptycho")):
        if module in compat or module.startswith(DISPATCH):
            continue
        imported = graph.find_modules_directly_imported_by(module)
        assert not {m for m in imported if m.split(".")[0] in ("ptycho_tf", "ptycho_torch")}, module


@pytest.mark.tf  # the compatibility names import TensorFlow
def test_each_compatibility_name_is_the_backend_module_itself():
    code = "; ".join(
        f"import {alias}, {target}; assert sys.modules[{alias!r}] is sys.modules[{target!r}], {alias!r}"
        for alias, target in _compat().items()
    )
    result = subprocess.run([sys.executable, "-c", f"import sys; {code}"], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_planted_bugs_are_not_installed_with_the_package():
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not [p for p in include if p.startswith("planted") or "mutants" in p]
    assert (ROOT / "planted_bugs" / "__init__.py").exists()
    assert not (ROOT / "conformance" / "mutants").exists()

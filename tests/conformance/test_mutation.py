"""conformance.mutation: cosmic-ray mutant generation, stable ids, sampling, the scenario rule and the score."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance import mutation
from conformance.scenarios import DEFAULT_GATE

SOURCE = '''from __future__ import annotations


def scale(x: int | None, k: float = 2.0) -> float:
    """Docstring."""
    if x is None or x < 0:
        return 0.0
    return x * k + 1
'''


def _module(root: Path, text: str = SOURCE, name: str = "ptycho_torch/toy.py") -> str:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return name


def test_mutants_come_from_cosmic_ray_and_skip_annotations(tmp_path):
    module = _module(tmp_path)
    mutants = mutation.enumerate_mutants([module], tmp_path)
    ops = {m.operator for m in mutants}
    assert "core/ReplaceBinaryOperator_Mul_Add" in ops and "core/ReplaceComparisonOperator_Lt_GtE" in ops
    # `int | None` and `float` are annotations (never evaluated): only the default value 2.0 is mutated
    assert {m.operator for m in mutants if m.line == 4} == {"core/NumberReplacer"}
    assert len({m.id for m in mutants}) == len(mutants)
    mul = next(m for m in mutants if m.operator == "core/ReplaceBinaryOperator_Mul_Add")
    mutated = mutation.apply(mul, SOURCE)
    assert "return x + k + 1" in mutated and mutated.count("\n") == SOURCE.count("\n")


def test_mutant_ids_survive_edits_elsewhere_in_the_file(tmp_path):
    before = {m.id: m for m in mutation.enumerate_mutants([_module(tmp_path)], tmp_path)}
    edited = SOURCE.replace('"""Docstring."""', '"""Docstring."""\n    y = 3 - 1')
    after = {m.id: m for m in mutation.enumerate_mutants([_module(tmp_path, edited)], tmp_path)}
    assert set(before) <= set(after)  # the new line adds mutants; the old ones keep their ids
    moved = next(m for m in before.values() if m.operator == "core/ReplaceBinaryOperator_Mul_Add")
    assert after[moved.id].line == moved.line + 1
    assert "x + k" in mutation.apply(after[moved.id], edited)  # still the same mutation


def test_sampling_is_seeded_one_variant_per_site_and_prefix_stable(tmp_path):
    mutants = mutation.enumerate_mutants([_module(tmp_path)], tmp_path)
    a = mutation.sample(mutants, 4, seed=1, root=tmp_path)
    assert a == mutation.sample(mutants, 4, seed=1, root=tmp_path)
    assert len({m.site for m in a}) == len(a) == 4
    assert mutation.sample(mutants, 2, seed=1, root=tmp_path) == a[:2]
    assert mutation.sample(mutants, 4, seed=2, root=tmp_path) != a
    assert all(mutation.compiles(m, tmp_path) for m in a)


def test_sample_stays_in_place_when_code_is_added_elsewhere(tmp_path):
    """A drawn site stays drawn (same id) after unrelated code is added above it: the sample is chosen by
    hashing each site's name, not by shuffling a list whose length the edit changes."""
    module = _module(tmp_path)
    before = mutation.sample(mutation.enumerate_mutants([module], tmp_path), 3, seed=0, root=tmp_path)
    grown = SOURCE + "\n\ndef other(a: int) -> int:\n    return a * 3 - 2 if a > 1 else a // 2\n"
    grown = grown.replace("from __future__ import annotations\n", "from __future__ import annotations\n\nK = 4 + 1\n")
    _module(tmp_path, grown)
    after = mutation.enumerate_mutants([module], tmp_path)
    picked = {m.id for m in mutation.sample(after, 50, seed=0, root=tmp_path)}
    old_ranked = [m.id for m in before]
    # every old pick is still a pick of the grown module's (complete) sample, and keeps its relative order
    assert set(old_ranked) <= picked
    new_sample = [m.id for m in mutation.sample(after, 50, seed=0, root=tmp_path) if m.id in set(old_ranked)]
    assert new_sample == old_ranked


def test_target_modules_before_and_after_the_layout_move(tmp_path):
    for rel in ("ptycho/model.py", "ptycho/tf_helper.py", "ptycho/config/config.py", "ptycho_torch/__init__.py",
                "ptycho_torch/optim.py"):
        _module(tmp_path, "x = 1\n", rel)
    assert mutation.target_modules(tmp_path) == ["ptycho/tf_helper.py", "ptycho/model.py", "ptycho_torch/optim.py"]
    _module(tmp_path, "x = 1\n", "ptycho_tf/optim.py")
    _module(tmp_path, "x = 1\n", "ptycho_tf/workflows/components.py")
    assert mutation.target_modules(tmp_path) == ["ptycho_tf/optim.py", "ptycho_tf/workflows/components.py",
                                                 "ptycho_torch/optim.py"]


def test_the_scenario_rule_depends_on_the_module_only():
    assert set(mutation.BASE_SCENARIOS) | set(mutation.USER_PATH_SCENARIOS) <= set(DEFAULT_GATE)
    assert mutation.scenarios_for("ptycho_torch/physics.py") == mutation.BASE_SCENARIOS
    user = (*mutation.BASE_SCENARIOS, *mutation.USER_PATH_SCENARIOS)
    for module in ("ptycho_tf/workflows/components.py", "ptycho_torch/training.py", "ptycho_torch/cli/shared.py",
                   "ptycho_torch/workflows/trainer.py"):
        assert mutation.scenarios_for(module) == user
    # every module stem the rule names exists in a backend (no stale name hides a module from the rule)
    stems = {Path(m).stem for m in mutation.target_modules()}
    assert mutation.WORKFLOW_MODULES <= stems


def _result(mid: str, status: str) -> mutation.MutantResult:
    spec = mutation.MutantSpec(mid, "ptycho_torch/toy.py", "core/NumberReplacer", 0, 1, 0, "x = 1", "x = 2")
    return mutation.MutantResult(spec, status, ["gs1_n32"], 1.0, ["gs1_n32/forward: fail"] * (status == "killed"))


def test_score_excludes_only_equivalent_survivors():
    results = [_result("a", "killed"), _result("b", "timeout"), _result("c", "survived"), _result("d", "survived"),
               _result("e", "broken")]
    eq = {"c": {"kind": "equivalent", "reason": "same value"}, "d": {"kind": "gap", "reason": "not reached"}}
    s = mutation.score(results, eq)
    assert (s["killed"], s["survived"], s["equivalent"], s["broken"], s["denominator"]) == (2, 1, 1, 1, 3)
    assert s["score"] == pytest.approx(2 / 3)
    md = mutation.markdown(results, s, eq, {"seed": 0, "population": 9, "modules": ["m"], "seconds": 1.0,
                                            "jobs": 2})
    assert "**equivalent**: same value" in md and "**gap**: not reached" in md and "66.7%" in md


def test_the_committed_equivalents_file_is_valid():
    doc = mutation.load_equivalents()
    assert isinstance(doc, dict)
    for mid, entry in doc.items():
        assert mid.count(".") >= 2 and entry["kind"] in ("equivalent", "gap") and entry["reason"].strip()


def test_an_equivalents_entry_without_a_reason_is_refused(tmp_path):
    path = tmp_path / "eq.json"
    path.write_text(json.dumps({"m.Op.abc": {"kind": "equivalent", "reason": " "}}))
    with pytest.raises(ValueError, match="reason"):
        mutation.load_equivalents(path)

"""The one monkeypatching primitive every mutant uses.

A target is ``"package.module:attr"`` or ``"package.module:Class.attr"``: the attribute is
replaced on the object it is looked up on at run time (for a name bound with
``from x import f`` that is the importing module, not ``x``).  Importing the module happens
here, so a mutant module itself imports neither TensorFlow nor PyTorch until it is applied.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Patch", "patch", "resolve"]


@dataclass
class Patch:
    """One applied monkeypatch; :meth:`undo` puts the original back (used by the unit tests)."""

    target: str
    owner: Any
    attr: str
    original: Any
    replacement: Any

    def undo(self) -> None:
        """Restore the original attribute."""
        setattr(self.owner, self.attr, self.original)


def resolve(target: str) -> tuple[Any, str]:
    """``"pkg.mod:A.b"`` -> ``(pkg.mod.A, "b")`` (imports ``pkg.mod``); ``ValueError`` for a malformed target."""
    module_name, sep, path = target.partition(":")
    if not sep or not module_name or not path:
        raise ValueError(f"mutant target {target!r} must look like 'package.module:attr'")
    owner: Any = importlib.import_module(module_name)
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    if not hasattr(owner, attr):
        raise AttributeError(f"mutant target {target!r}: {owner!r} has no attribute {attr!r}")
    return owner, attr


def patch(target: str, make: Callable[[Any], Any]) -> Patch:
    """Replace ``target`` by ``make(original)`` and return the :class:`Patch`."""
    owner, attr = resolve(target)
    original = getattr(owner, attr)
    replacement = make(original)
    setattr(owner, attr, replacement)
    return Patch(target=target, owner=owner, attr=attr, original=original, replacement=replacement)

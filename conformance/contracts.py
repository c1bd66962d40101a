"""Input contracts: both backends must refuse the same malformed calls.

A parity gate that only feeds valid inputs cannot see a backend that silently accepts a wrong layout
(upstream's 1-channel Lightning model at gridsize 2 ran without complaint): an op that broadcasts a
``[B, N, N]`` array where ``[B, N, N, C]`` belongs, or takes an odd stitching crop, returns numbers
that look like a reconstruction.  This module derives malformed variants of every valid call the
``physics_ops`` and ``forward`` stages make, mechanically (so a new op or argument is covered without
a hand-written list):

* an array argument: an extra leading axis, the leading axis dropped (``ndim >= 2``), each axis one
  element longer (zero-padded), and the last two axes swapped (a transposed layout; only when they
  differ in size);
* an integer size argument (``P``, ``N``, ``n``, ``M``): 0, its negative, and one more (odd where even
  is required; too large where it must fit).

:func:`probe` calls each variant and records what the side did (:func:`outcome`): ``computes`` (it
returned), ``refuses`` (it raised a documented refusal: ``ValueError``, ``TypeError`` or a
``PtychoError``, i.e. a check named the argument) or ``fails: <type>`` (it broke somewhere inside on an
input it should have refused: a framework error, an ``IndexError``...).  The NumPy reference is the
spec: each backend must do what it does, case by case.  A backend that computes what the spec
refuses lacks a guard; one that fails where the spec refuses has a guard that did not fire.
Nothing here imports tensorflow or torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["SIZE_ARGS", "malformed_calls", "outcome", "probe"]

#: Integer size arguments of the physics ops (``conformance.inputs.OP_SIGNATURES`` names).
SIZE_ARGS: frozenset[str] = frozenset({"P", "N", "n", "M"})


def _array_variants(a: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    yield "extra_axis", a[None]
    if a.ndim >= 2:
        yield "dropped_axis", a[0]
    for axis in range(a.ndim):
        widths = [(0, 0)] * a.ndim
        widths[axis] = (0, 1)
        yield f"axis{axis}+1", np.pad(a, widths)
    if a.ndim >= 2 and a.shape[-1] != a.shape[-2]:
        yield "swapped_last_axes", np.swapaxes(a, -1, -2).copy()


def _size_variants(v: int) -> Iterator[tuple[str, int]]:
    yield "zero", 0
    yield "negative", -abs(int(v))
    yield "plus_one", int(v) + 1


def malformed_calls(positional: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]
                    ) -> Iterator[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """``(case, args, kwargs)`` for every malformed variant of one valid call (one argument changed at a time);
    ``case`` is ``<argument>/<variant>``."""
    for i, (name, value) in enumerate(zip(positional, args, strict=True)):
        if name in SIZE_ARGS and isinstance(value, int | np.integer):
            variants: Iterator[tuple[str, Any]] = _size_variants(int(value))
        elif isinstance(value, np.ndarray) and value.ndim >= 1:
            variants = _array_variants(value)
        else:
            continue
        for tag, bad in variants:
            new = list(args)
            new[i] = bad
            yield f"{name}/{tag}", tuple(new), dict(kwargs)


def outcome(call: Callable[[], Any]) -> str:
    """``computes``, ``refuses`` or ``fails: <exception type>`` for one call (see the module docstring)."""
    from ptycho.errors import PtychoError

    try:
        call()
    except (ValueError, TypeError, PtychoError):
        return "refuses"
    except Exception as exc:  # noqa: BLE001 -- what broke is the finding
        return f"fails: {type(exc).__name__}"
    return "computes"


def probe(call: Callable[..., Any], positional: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]
          ) -> dict[str, str]:
    """``{case: outcome}`` for every malformed variant of ``call(*args, **kwargs)``."""
    return {case: outcome(lambda a=a, kw=kw: call(*a, **kw))
            for case, a, kw in malformed_calls(positional, args, kwargs)}

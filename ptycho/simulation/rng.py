"""Deterministic, independent random sub-streams of the simulator.

Every random draw of the simulator comes from a :class:`numpy.random.Generator`
built here, never from numpy's global RNG.  One user seed fans out into named
sub-streams, one per job (object, scan, noise), each seeded by
``SeedSequence(entropy=seed, spawn_key=(STREAM_KEYS[name],))``.  The streams are
statistically independent, and a stream depends only on the seed and its own
name: changing, say, the scan (its kind, its number of positions) never changes
the object or draws anything from the object's stream.
"""

from __future__ import annotations

import numpy as np

from ptycho.errors import ConfigError

__all__ = ["STREAM_KEYS", "check_seed", "substream"]

#: Name -> spawn key of each sub-stream.  Never renumber an entry: that would
#: change every dataset simulated with the affected stream.
STREAM_KEYS: dict[str, int] = {"object": 0, "scan": 1, "noise": 2}


def check_seed(seed: object) -> int:
    """Return ``seed`` as an ``int`` or raise :class:`ConfigError` (seeds are integers >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError("seed", seed, "a non-negative integer", fix="pass e.g. seed=0")
    return int(seed)


def substream(seed: int, name: str) -> np.random.Generator:
    """The generator of sub-stream ``name`` ('object', 'scan' or 'noise') for ``seed``.

    ``np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(key,)))``
    with ``key = STREAM_KEYS[name]``.  Two calls with the same arguments return
    generators that produce identical sequences.
    """
    if name not in STREAM_KEYS:
        raise ConfigError("stream", name, f"one of {sorted(STREAM_KEYS)}")
    sequence = np.random.SeedSequence(entropy=check_seed(seed), spawn_key=(STREAM_KEYS[name],))
    return np.random.default_rng(sequence)

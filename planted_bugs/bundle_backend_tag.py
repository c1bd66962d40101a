"""Mutant: the PyTorch backend writes bundles whose manifest has no ``backend`` tag.

Upstream torch bundles carried no ``backend`` key although upstream's own spec (§4.6, the
cross-backend rule) required one (``specs/pytorch-backend.md``, deviations table), so a loader
could not tell a PyTorch bundle from a TensorFlow one and failed deep inside the framework.
The replacement of ``write_bundle`` as bound in ``ptycho_torch.model_manager`` (what
``save_torch_bundle`` calls) writes the bundle and then rewrites ``manifest.json`` /
``manifest.dill`` without the ``backend`` key.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planted_bugs._patch import Patch, patch

TARGET = "ptycho_torch.model_manager:write_bundle"


def strip_backend_tag(path: Path) -> None:
    """Rewrite the bundle at ``path`` with ``backend`` removed from both manifest members."""
    from ptycho.bundle import dump_plain_pickle

    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info.filename)) for info in zf.infolist()]
    manifest = json.loads(dict((i.filename, d) for i, d in members)["manifest.json"])
    manifest.pop("backend", None)
    replaced = {
        "manifest.json": json.dumps(manifest, indent=1, sort_keys=True).encode(),
        "manifest.dill": dump_plain_pickle(manifest),
    }
    tmp = path.with_name(path.name + ".mutant")
    with zipfile.ZipFile(tmp, "w") as zf:
        for info, data in members:
            zf.writestr(info, replaced.get(info.filename, data))
    os.replace(tmp, path)


def apply() -> Patch:
    """Make every PyTorch bundle lose its manifest ``backend`` tag."""

    def make(original: Callable[..., Path]) -> Callable[..., Path]:
        def write_bundle(location: Any, **kwargs: Any) -> Path:
            path = Path(original(location, **kwargs))
            strip_backend_tag(path)
            return path

        return write_bundle

    return patch(TARGET, make)

"""``specs/tensorflow-backend.md`` tables agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

from ptycho.network_spec import LAYER_KINDS, build_network_spec
from ptycho_tf import canonical as tf_canonical
from ptycho_tf import model as tf_model
from ptycho_tf.model_manager import ALLOWED_KERAS_CLASSES

SPEC = Path(__file__).resolve().parents[2] / "specs" / "tensorflow-backend.md"


def _table(header: str) -> dict[str, str]:
    """Rows of the two-column Markdown table whose header row starts with ``header``."""
    lines = SPEC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1]
    return rows


def test_kind_to_keras_layer_table_matches_the_builder():
    table = _table("| spec kind | Keras layer |")
    assert set(table) == set(LAYER_KINDS)
    spec = build_network_spec(32, 2, n_filters_scale=1)
    seen = {}
    for layer in spec.layers:
        cls = type(tf_model._network_layer(layer))
        seen[layer.kind] = f"{'keras.layers' if cls.__module__.startswith('keras') else cls.__module__}.{cls.__name__}"
    assert seen == {k: v for k, v in table.items() if k in seen}
    assert set(seen) == set(LAYER_KINDS)


def test_every_class_the_table_names_may_be_loaded_from_a_bundle():
    allowed = {f"{m}.{c}" for m, c in ALLOWED_KERAS_CLASSES if m}
    for cls in _table("| spec kind | Keras layer |").values():
        assert cls in allowed, cls


def test_weight_naming_table():
    for keras_path, canonical in _table("| Keras variable | canonical name |").items():
        for path, name in zip(re.split(r",\s*", keras_path), re.split(r"`?,\s*`?", canonical), strict=True):
            assert tf_canonical.canonical_name(path.strip("`")) == name.strip("`")

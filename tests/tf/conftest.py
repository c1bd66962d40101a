"""TensorFlow test setup: quiet logs, two CPU threads, deterministic ops, every test marked ``tf``.

TensorFlow is imported once per test process (about 5 s); thread counts must be set before
its runtime starts, so this happens at collection time.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

# A torch-only environment (`pip install .[torch,test]`) skips this directory with the reason.
tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install '.[tf]')")

tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.experimental.enable_op_determinism()


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.tf)

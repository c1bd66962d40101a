"""PtychoPINN's TensorFlow / Keras 3 backend (the backend-neutral core lives in :mod:`ptycho`).

Module for module the mirror of :mod:`ptycho_torch` (``specs/backends.md`` has the role table):
``physics`` (the physics ops), ``layers`` (Keras layers), ``model``, ``canonical`` (native <->
canonical weights), ``losses``, ``optim``, ``training``, ``model_manager`` (bundles),
``workflows.components``, ``parity_api``.  Ptychodus and upstream code import the compatibility
names ``ptycho.model``, ``ptycho.tf_helper``, ``ptycho.model_manager``, ``ptycho.train_pinn`` and
``ptycho.workflows.components``, which re-export this package's objects.

Importing this package itself imports no framework; its modules import TensorFlow and Keras.
It applies :func:`ptycho.startup.prepare_frameworks` first (TensorFlow's C++ start-up lines off
unless ``TF_CPP_MIN_LOG_LEVEL`` is set) and refuses a ``KERAS_BACKEND`` other than
``tensorflow``: this backend is TensorFlow code, and Keras would otherwise fail later with an
obscure error.
"""

import os
import sys

from ptycho.errors import BackendUnavailableError
from ptycho.startup import prepare_frameworks

prepare_frameworks()
_keras = sys.modules.get("keras")
_keras_backend = _keras.backend.backend() if _keras is not None else os.environ.get("KERAS_BACKEND", "tensorflow")
if _keras_backend != "tensorflow":
    raise BackendUnavailableError(
        f"Keras backend {_keras_backend!r} (KERAS_BACKEND): ptycho_tf (the TensorFlow backend) needs Keras' "
        "TensorFlow backend. Fix: unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow; for the PyTorch "
        "backend use ptycho_torch (--backend pytorch)"
    )

#: Value of the ``backend`` attribute of the files this backend writes (bundle manifest, weight files).
BACKEND = "tensorflow"

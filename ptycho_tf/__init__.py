"""PtychoPINN's TensorFlow / Keras 3 backend (the backend-neutral core lives in :mod:`ptycho`).

Module for module the mirror of :mod:`ptycho_torch` (``specs/backends.md`` has the role table):
``physics`` (the physics ops), ``layers`` (Keras layers), ``model``, ``canonical`` (native <->
canonical weights), ``losses``, ``optim``, ``training``, ``model_manager`` (bundles),
``workflows.components``, ``parity_api``.  Ptychodus and upstream code import the compatibility
names ``ptycho.model``, ``ptycho.tf_helper``, ``ptycho.model_manager``, ``ptycho.train_pinn`` and
``ptycho.workflows.components``, which re-export this package's objects.

Importing this package itself imports no framework; its modules import TensorFlow and Keras.
"""

#: Value of the ``backend`` attribute of the files this backend writes (bundle manifest, weight files).
BACKEND = "tensorflow"

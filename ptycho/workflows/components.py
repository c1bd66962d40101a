"""Compatibility name ``ptycho.workflows.components``: the very module
:mod:`ptycho_tf.workflows.components`.

Ptychodus calls ``run_cdi_example`` / ``load_inference_bundle`` from it; ``specs/backends.md`` lists
every compatibility name. The module object itself is aliased (not copied), so attributes, module-
level state and monkeypatches are shared. Importing this name imports TensorFlow.
"""

import sys

from ptycho_tf.workflows import components as _implementation

sys.modules[__name__] = _implementation

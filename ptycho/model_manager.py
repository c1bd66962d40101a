"""Compatibility name ``ptycho.model_manager``: the very module :mod:`ptycho_tf.model_manager`.

Ptychodus saves and loads its models through ``ptycho.model_manager.ModelManager``;
``specs/backends.md`` lists every compatibility name. The module object itself is aliased (not
copied), so attributes, module-level state and monkeypatches are shared. Importing this name imports
TensorFlow.
"""

import sys

from ptycho_tf import model_manager as _implementation

sys.modules[__name__] = _implementation

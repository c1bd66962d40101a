"""Compatibility name ``ptycho.tf_helper``: the very module :mod:`ptycho_tf.physics`.

Ptychodus imports it (upstream's name for the TensorFlow physics ops); ``specs/backends.md`` lists
every compatibility name. The module object itself is aliased (not copied), so attributes, module-
level state and monkeypatches are shared. Importing this name imports TensorFlow.
"""

import sys

from ptycho_tf import physics as _implementation

sys.modules[__name__] = _implementation

"""Compatibility name ``ptycho.model``: the very module :mod:`ptycho_tf.model`.

Ptychodus and upstream code read ``ptycho.model.autoencoder`` / ``diffraction_to_obj`` /
``params()``; ``specs/backends.md`` lists every compatibility name. The module object itself is
aliased (not copied), so attributes, module-level state and monkeypatches are shared. Importing this
name imports TensorFlow.
"""

import sys

from ptycho_tf import model as _implementation

sys.modules[__name__] = _implementation

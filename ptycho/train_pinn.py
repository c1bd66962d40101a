"""Compatibility name ``ptycho.train_pinn``: the very module :mod:`ptycho_tf.training`.

upstream scripts import it (upstream's name for the TensorFlow training loop); ``specs/backends.md``
lists every compatibility name. The module object itself is aliased (not copied), so attributes,
module-level state and monkeypatches are shared. Importing this name imports TensorFlow.
"""

import sys

from ptycho_tf import training as _implementation

sys.modules[__name__] = _implementation

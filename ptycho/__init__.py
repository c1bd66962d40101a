"""ptychopinn: PtychoPINN ptychographic reconstruction.

``ptycho`` holds the backend-neutral core (conventions, config, params, data,
simulator, NumPy reference physics, network spec, bundle format) and the
TensorFlow backend.  Importing this package imports neither TensorFlow nor torch;
only the TensorFlow-specific modules (``ptycho_tf.physics``, ``ptycho_tf.model``, ...)
do.
"""

__version__ = "0.1.0"

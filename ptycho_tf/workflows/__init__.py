"""TensorFlow workflows: training, inference and stitching (:mod:`ptycho_tf.workflows.components`)."""

"""Workflows: the steps both backends share (:mod:`ptycho.workflows.common`), the backend dispatcher
(:mod:`ptycho.workflows.backend_selector`) and the compatibility name ``components`` (=
:mod:`ptycho_tf.workflows.components`).
"""

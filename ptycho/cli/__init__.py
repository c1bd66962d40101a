"""Unified command-line entry points: ``ptycho_train`` and ``ptycho_inference`` (both backends)."""

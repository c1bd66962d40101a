"""Workflows: shared steps (common) and the TensorFlow workflow (components)."""

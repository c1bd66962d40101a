"""The conformance harness: identical scenarios through the TensorFlow and PyTorch backends and the NumPy reference.

``scenarios`` (the registry), ``inputs`` (deterministic per-scenario inputs), ``worker`` /
``backends`` (one process per side writes plain-file records, ``record``), ``compare`` (the
judge), ``runner`` / ``cli`` (``python -m conformance run``), ``report``, ``mutants``.  Importing
this package imports neither tensorflow nor torch.
"""

"""PtychoPINN's PyTorch / Lightning backend (the canonical core lives in :mod:`ptycho`).

Entry points: :mod:`ptycho_torch.workflows.components` (``run_cdi_example_torch``,
``load_inference_bundle_torch``, ``predict_objects``), :mod:`ptycho_torch.model_manager`
(``save_torch_bundle``, ``load_torch_bundle``), :mod:`ptycho_torch.parity_api`, and the CLIs
``python -m ptycho_torch.train`` / ``python -m ptycho_torch.inference``.  ``specs/pytorch-backend.md``
describes the whole package.

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it
(it must happen before torch loads its OpenMP runtime): with the default busy-waiting OpenMP
threads, a training step on a CPU shared with other processes ran up to 5x slower here
(``benchmarks/bench_step_time.py``), while passive waiting costs nothing measurable on an idle CPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

"""PtychoPINN's PyTorch / Lightning backend (the canonical core lives in :mod:`ptycho`).

Entry points: :mod:`ptycho_torch.workflows.components` (``run_cdi_example_torch``,
``load_inference_bundle_torch``, ``predict_objects``), :mod:`ptycho_torch.model_manager`
(``save_torch_bundle``, ``load_torch_bundle``), :mod:`ptycho_torch.parity_api`, and the CLIs
``python -m ptycho_torch.train`` / ``python -m ptycho_torch.inference``.  ``specs/pytorch-backend.md``
describes the whole package.

Importing this package applies :func:`ptycho.startup.prepare_frameworks` (``OMP_WAIT_POLICY=PASSIVE``
unless the environment already sets it; it must happen before torch loads its OpenMP runtime, see
:mod:`ptycho.startup` for the measurements).
"""

from __future__ import annotations

from ptycho.startup import prepare_frameworks

prepare_frameworks()

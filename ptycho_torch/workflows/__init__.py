"""PyTorch workflows: training, inference and stitching (:mod:`ptycho_torch.workflows.components`)."""

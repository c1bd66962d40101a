"""Command-line helpers shared by ``python -m ptycho_torch.train`` and ``python -m ptycho_torch.inference``."""

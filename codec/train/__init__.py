"""Training: data, discriminators, losses, the torchrun/DDP trainer, checkpoints and export.

Nothing outside this package imports it; `codec train` and `codec export` load it on demand.
"""

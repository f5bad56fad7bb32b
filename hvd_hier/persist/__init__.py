"""What survives a restart: the optimizer's state dict and per-rank checkpoint files."""

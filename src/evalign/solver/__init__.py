"""The solver: preference pairs, losses, TRL training, packing and launched jobs."""

"""goodput: bench."""

"""goodput: controllers."""

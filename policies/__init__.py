"""goodput: policies."""

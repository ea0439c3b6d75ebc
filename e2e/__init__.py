"""goodput: e2e."""

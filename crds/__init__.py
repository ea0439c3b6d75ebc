"""goodput: crds."""

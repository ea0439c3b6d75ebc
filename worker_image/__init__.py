"""goodput: worker_image."""

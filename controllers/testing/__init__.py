"""Test and benchmark support for the operator: an in-memory API server, synthetic workers, a real Prometheus.

Imported only by tests and bench/ (kmock is a dev dependency); the operator never imports it.
"""

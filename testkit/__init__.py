"""Test and benchmark support, never installed: an in-memory API server, synthetic workers, a real Prometheus.

Imported by tests/, e2e/ and bench/ from a checkout (kmock is a dev dependency); nothing the product ships
imports it, and pyproject's `packages.find` leaves it out.
"""

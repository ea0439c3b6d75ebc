"""A kubeconfig that points a client (the operator, the CLI, a benchmark) at one test API server."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_kubeconfig(path: Path, server: str, namespace: str | None = None) -> Path:
    """Writes a one-context kubeconfig for `server` with a bearer token; `namespace` is the context's default."""
    context: dict[str, str] = {"cluster": "test", "user": "test"}
    if namespace is not None:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server}}],
        "users": [{"name": "test", "user": {"token": "test"}}],
        "contexts": [{"name": "test", "context": context}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config))
    return path

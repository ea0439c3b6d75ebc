"""The goodput operator process: the handlers and Kopf's settings are in controllers/ (handlers, kopf_settings).

Run as `kopf run -A operator/main.py` (all namespaces) or `kopf run -n team-a -n team-b operator/main.py`;
in a cluster, `python operator/main.py` does the same from environment variables (see `main`). Settings of
the operator itself (Prometheus URL, poll interval, window) come from GOODPUT_OPERATOR_* (controllers.config).

A single standalone replica (see controllers/kopf_settings.py); a crashed pod is restarted by its Deployment,
and the shared poller and every decision resume from status.
"""

from __future__ import annotations

import logging
import sys

import kopf

import goodput.controllers.handlers  # noqa: F401  (registers the handlers, the one startup handler among them)
from goodput.controllers.config import OperatorConfig


def main() -> None:
    """`python operator/main.py`: namespaces (GOODPUT_OPERATOR_NAMESPACES, comma-separated; empty = all) and
    the liveness endpoint (GOODPUT_OPERATOR_LIVENESS) from the operator's settings (controllers.config)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = OperatorConfig.from_env()
    kopf.run(
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        liveness_endpoint=config.liveness_endpoint,
    )


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus on loopback, discovering pods through the local API server (kubernetes_sd_configs).

The binary is built from source by e2e/build.py: Debian's package has Kubernetes discovery removed.

Pods opt in with the usual annotations (``prometheus.io/scrape: "true"``, ``prometheus.io/port``,
``prometheus.io/path``); their ``goodput.dev/inferenceservice`` and ``goodput.dev/tier`` labels and
namespace become the ``inferenceservice``, ``tier`` and ``namespace`` series labels the operator reads; a
router pod's ``goodput.dev/router`` label becomes ``inferenceservice`` too (its series carry their own ``tier``).
The operator's own pod is scraped the same way (its Deployment carries the annotations), and the shipped
rules (manifests/observability/rules.yaml) are loaded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml

from e2e import pki, procs

SCRAPE_INTERVAL = "1s"
# The shipped recording and alerting rules (SLO burn rates), as a Prometheus Operator would load them.
RULES = Path(__file__).resolve().parent.parent / "manifests" / "observability" / "rules.yaml"


def scrape_config(server: str, creds: pki.Pki) -> dict[str, Any]:
    tls = {
        "ca_file": str(creds.ca.cert),
        "cert_file": str(creds.admin.cert),
        "key_file": str(creds.admin.key),
    }
    relabel = [
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
            "action": "keep",
            "regex": "true",
        },
        {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "drop", "regex": "Succeeded|Failed"},
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
            "regex": "(.+)",
            "target_label": "__metrics_path__",
        },
        {
            "source_labels": [
                "__meta_kubernetes_pod_ip",
                "__meta_kubernetes_pod_annotation_prometheus_io_port",
            ],
            "regex": "(.+);(\\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {
            "source_labels": ["__meta_kubernetes_pod_label_goodput_dev_inferenceservice"],
            "target_label": "inferenceservice",
        },
        {"source_labels": ["__meta_kubernetes_pod_label_goodput_dev_tier"], "target_label": "tier"},
        {  # a router pod: the service it fronts (its series carry their own tier), as the shipped PodMonitor
            "source_labels": ["__meta_kubernetes_pod_label_goodput_dev_router"],
            "regex": "(.+)",
            "target_label": "inferenceservice",
        },
    ]
    return {
        "job_name": "pods",
        # Prometheus 3 rejects scrapes without a known Content-Type; plain files served in tests have none.
        "fallback_scrape_protocol": "PrometheusText0.0.4",
        "kubernetes_sd_configs": [{"role": "pod", "api_server": server, "tls_config": tls}],
        "relabel_configs": relabel,
    }


def start(
    binary: Path,
    state_dir: Path,
    server: str,
    creds: pki.Pki,
    *,
    tied: bool = True,
    address: str = "127.0.0.1",
) -> tuple[subprocess.Popen[bytes], str]:
    """Start Prometheus and wait until it is ready; returns the process and its base URL.

    ``address``: where it listens (the node bridge's, when the operator's pod must reach it).
    """
    directory = state_dir / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [scrape_config(server, creds)],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = procs.free_port(address)
    url = f"http://{address}:{port}"
    argv = [
        str(binary),
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={address}:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=1d",
    ]
    proc = procs.start(argv, state_dir / "logs" / "prometheus.log", cwd=directory, tied=tied)

    def ready() -> bool:
        if proc.poll() is not None:
            log = (state_dir / "logs" / "prometheus.log").read_text()[-3000:]
            raise procs.ProcessExited(f"prometheus exited with {proc.returncode}:\n{log}")
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200

    procs.wait_until(ready, 60, "prometheus /-/ready")
    return proc, url

"""Install goodput on the local stack the way users do: `kubectl apply -k` of manifests/, via an overlay.

The overlay (written into the stack's state dir) keeps the base intact and changes only what this stack
needs: the operator image `make images` built (its digest tag, never pulled: no registry is reachable), the
API Service's address for the in-cluster name (no cluster DNS here), and settings that point at the stack's
Prometheus with a short poll. The node then runs the operator pod from the shipped Deployment under the
shipped ServiceAccount (``goodput-system/goodput-operator``): it is bound only by the shipped RBAC, never the
admin kubeconfig. Prometheus scrapes its /metrics through the pod annotations.

Install = server-side dry run first (the API server validates every object), then the real apply.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes.client import AppsV1Api, CoreV1Api

from e2e import procs, service
from e2e.stack import REPO, Stack

NAMESPACE = "goodput-system"
OPERATOR_IMAGE = "ghcr.io/goodput/operator"
NAME = "goodput-operator"
MANIFESTS = REPO / "manifests"


@dataclass(frozen=True)
class OperatorSettings:
    """What the overlay sets on the operator (GOODPUT_OPERATOR_*): fast enough for tests and the demo."""

    poll_interval_s: float = 1.0
    window_s: int = 10


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message carries its stderr."""


def kubectl(stack: Stack, *args: str, stdin: str | None = None) -> str:
    result = stack.kubectl(*args, stdin=stdin)
    if result.returncode != 0:
        raise KubectlError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def write_overlay(stack: Stack, settings: OperatorSettings) -> Path:
    """A kustomization over manifests/ that runs the operator image built from this checkout on this stack."""
    directory = stack.state_dir / "install"
    directory.mkdir(exist_ok=True)
    container = "/spec/template/spec/containers/0"
    env = {
        "GOODPUT_OPERATOR_PROMETHEUS_URL": stack.prometheus_url or "",
        "GOODPUT_OPERATOR_POLL_INTERVAL_S": f"{settings.poll_interval_s:g}",
        "GOODPUT_OPERATOR_WINDOW_S": str(settings.window_s),
    }
    # No cluster DNS here: the in-cluster API name resolves through /etc/hosts to the Service's IP.
    api_ip = str(next(ipaddress.ip_network(stack.service_cidr()).hosts()))
    api_names = ["kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
    ops: list[dict[str, object]] = [
        {"op": "replace", "path": f"{container}/image", "value": stack.images[OPERATOR_IMAGE]},
        {"op": "replace", "path": f"{container}/imagePullPolicy", "value": "Never"},
        {
            "op": "add",
            "path": "/spec/template/spec/hostAliases",
            "value": [{"ip": api_ip, "hostnames": api_names}],
        },
    ]
    base_env = yaml.safe_load((MANIFESTS / "operator" / "deployment.yaml").read_text())
    names = [e["name"] for e in base_env["spec"]["template"]["spec"]["containers"][0]["env"]]
    for key, value in env.items():
        if key in names:
            ops.append({"op": "replace", "path": f"{container}/env/{names.index(key)}/value", "value": value})
        else:
            ops.append({"op": "add", "path": f"{container}/env/-", "value": {"name": key, "value": value}})
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS, directory)],
        "patches": [{"target": {"kind": "Deployment", "name": NAME}, "patch": yaml.safe_dump(ops)}],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


def install(stack: Stack, settings: OperatorSettings | None = None) -> str:
    """Dry-run then apply the overlay; returns the real apply's output (one line per object)."""
    overlay = write_overlay(stack, settings or OperatorSettings())
    # A dry run of namespaced objects needs their namespace, and of the default SLOPolicy its established
    # CRD: dry-run and apply those first (as `kubectl apply` users do in two passes), then everything.
    for prerequisite in (MANIFESTS / "crds", MANIFESTS / "operator" / "namespace.yaml"):
        kubectl(stack, "apply", "--server-side", "--dry-run=server", "-f", str(prerequisite))
        kubectl(stack, "apply", "--server-side", "-f", str(prerequisite))
    kubectl(stack, "wait", "--for=condition=Established", "crd", "--all", "--timeout=30s")
    kubectl(stack, "apply", "--server-side", "--dry-run=server", "-k", str(overlay))
    return kubectl(stack, "apply", "--server-side", "-k", str(overlay))


def wait_ready(stack: Stack, timeout: float = 180.0) -> str:
    """Wait until the operator Deployment's pod is Running and has started its control loop; its name."""
    with stack.api_client() as client:
        apps, core = AppsV1Api(client), CoreV1Api(client)

        def pod_name() -> str | None:
            pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app.kubernetes.io/name={NAME}").items
            running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
            return running[0].metadata.name if running else None

        def available() -> bool:
            status = apps.read_namespaced_deployment(NAME, NAMESPACE).status
            return bool(status.available_replicas) and pod_name() is not None

        procs.wait_until(available, timeout, "the goodput operator pod Running", interval=0.5)
        name = pod_name()
        assert name is not None
        return name


@contextmanager
def installed(stack: Stack, policy: service.FastPolicy) -> Iterator[str]:
    """goodput installed and `policy` applied for a test module; yields the operator pod's name.

    Prints the operator's log tail on the way out (pytest shows it when a test failed).
    """
    install(stack)
    pod = wait_ready(stack)
    service.apply(stack, policy.manifest())
    try:
        yield pod
    finally:
        print(f"operator log (tail):\n{stack.pod_logs(NAMESPACE, pod)[-6000:]}")
        uninstall(stack)


def uninstall(stack: Stack) -> None:
    """Delete the operator Deployment and wait for its pod to go (a clean SIGTERM, Kopf's graceful exit)."""
    kubectl(stack, "delete", "deployment", NAME, "-n", NAMESPACE, "--wait=true", "--timeout=60s")
    with stack.api_client() as client:
        core = CoreV1Api(client)
        selector = f"app.kubernetes.io/name={NAME}"
        began = time.monotonic()
        procs.wait_until(
            lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items,
            max(1.0, 60 - (time.monotonic() - began)),
            "the operator pod gone",
            interval=0.5,
        )

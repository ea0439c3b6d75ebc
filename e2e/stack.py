"""The whole local stack: control plane + a node + Prometheus, as one start/stop unit.

The node is real (kubelet + containerd + runc + CNI + kube-proxy, pods run from the images :mod:`e2e.images`
builds; see :mod:`e2e.node`); ``node=False`` starts the control plane alone, on loopback.

Tests use :func:`running_stack` (or the ``cluster`` fixture in e2e/conftest.py); the CLI
``python -m e2e.cluster up|down|env`` uses :func:`start_stack` / :func:`stop_stack` with the state
saved in ``stack.json`` so a later command can find and stop the processes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import kubernetes
from kubernetes.client import CoreV1Api, DiscoveryV1Api

from e2e import build, hostnet, images, procs, prometheus
from e2e import node as real_node
from e2e.controlplane import SERVICE_CIDR, ControlPlane, write_kubeconfig

REPO = Path(__file__).resolve().parent.parent
STOP_ORDER = ["prometheus", "kube-controller-manager", "kube-apiserver", "etcd"]  # after the node


@dataclass
class Stack:
    """Where the running stack lives and how to reach it."""

    state_dir: Path
    kubeconfig: Path
    server: str
    version: str
    prometheus_url: str | None
    start_seconds: float
    pids: dict[str, int]
    ports: dict[str, int]
    nodes: list[str]
    network: int | None = None  # the node's N: pods in 198.18.N.0/24, Services in 198.19.N.0/24
    baseline: dict[str, object] | None = None  # the host state the node changes, before it started
    images: dict[str, str] = field(default_factory=dict)  # repository -> the digest tag the node runs
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def api_client(self) -> kubernetes.client.ApiClient:
        """A fresh admin client (the official `kubernetes` package)."""
        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def service_account_kubeconfig(self, namespace: str, name: str, hours: int = 24) -> Path:
        """A kubeconfig holding a TokenRequest token for ServiceAccount ``namespace/name``.

        For running a component (the operator) under its own identity, bound only by its RBAC.
        """
        with self.api_client() as client:
            request = {"spec": {"expirationSeconds": hours * 3600}}
            token = CoreV1Api(client).create_namespaced_service_account_token(name, namespace, request)
        path = self.state_dir / f"sa-{namespace}-{name}.kubeconfig"
        ca = self.state_dir / "pki" / "ca.crt"
        write_kubeconfig(path, self.server, ca, {"token": token.status.token}, f"{namespace}:{name}")
        return path

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the stack's own kubectl (same release) as admin; check ``returncode`` yourself."""
        kubectl = next(t.path for t in build.targets() if t.name == "kubectl")
        argv = [str(kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)

    def service_endpoints(self, namespace: str, service: str) -> list[str]:
        """``ip:port`` of each endpoint the Service routes to now (its EndpointSlices: ready, not terminating).

        What kube-proxy balances over, read by clients that pick the least-loaded endpoint themselves.
        """
        with self.api_client() as client:
            selector = f"kubernetes.io/service-name={service}"
            slices = DiscoveryV1Api(client).list_namespaced_endpoint_slice(namespace, label_selector=selector)
        found = []
        for piece in slices.items:
            port = (piece.ports or [None])[0]
            for endpoint in piece.endpoints or []:
                if port is not None and endpoint.conditions.ready:
                    found += [f"{address}:{port.port}" for address in endpoint.addresses]
        return sorted(found)

    def pod_logs(self, namespace: str, name: str) -> str:
        """Everything the pod's containers wrote (`kubectl logs --all-containers`), or kubectl's error."""
        result = self.kubectl("logs", "-n", namespace, name, "--all-containers")
        return result.stdout if result.returncode == 0 else result.stderr

    def container_running(self, container_id: str) -> bool:
        """Whether a container status's ``containerID`` (``containerd://…``) still runs."""
        found = real_node.crictl(
            self.socket, "ps", "--quiet", "--state=running", f"--id={runtime_id(container_id)}"
        )
        return found.returncode == 0 and bool(found.stdout.strip())

    def container_pid(self, container_id: str) -> int:
        """The host PID of a container status's ``containerID``: containerd's task for it."""
        ident = runtime_id(container_id)
        found = real_node.crictl(self.socket, "inspect", "--output=json", ident)
        if found.returncode != 0:
            raise RuntimeError(f"crictl inspect {ident}: {found.stderr.strip()}")
        return int(json.loads(found.stdout)["info"]["pid"])

    @property
    def socket(self) -> Path:
        return self.state_dir / "node" / "containerd.sock"

    def listening(self, port: int) -> bool:
        """Whether something listens on ``port`` at loopback or (while its bridge exists) the node's address."""
        hosts = ["127.0.0.1"]
        if self.network is not None:
            net = hostnet.NodeNetwork(self.network)
            hosts += [net.gateway] if net.bridge in hostnet.links() else []
        return any(procs.listening(port, host) for host in hosts)

    def service_cidr(self) -> str:
        """The Services' address range (the node's own, else the control plane's fixed one)."""
        return hostnet.NodeNetwork(self.network).service_cidr if self.network is not None else SERVICE_CIDR

    def save(self) -> None:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_procs"}
        (self.state_dir / "stack.json").write_text(json.dumps(data, default=str, indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> Stack:
        data = json.loads((state_dir / "stack.json").read_text())
        data["state_dir"], data["kubeconfig"] = Path(data["state_dir"]), Path(data["kubeconfig"])
        return cls(**data)


def start_stack(
    state_dir: Path | None = None,
    *,
    node: bool = True,
    node_labels: dict[str, str] | None = None,
    with_prometheus: bool = True,
    tied: bool = True,
) -> Stack:
    """Build (if needed) and start everything; on any failure, stop what started and re-raise.

    ``node=False``: the control plane alone, on loopback (nothing on the host changes). ``node_labels`` label
    the Node (e.g. an accelerator pool). ``tied`` processes die with the calling thread (tests); the CLI
    passes False so they outlive it.
    """
    binaries = build.ensure_binaries()
    references = images.ensure_all() if node else {}
    began = time.monotonic()
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="goodput-e2e-"))
    baseline = hostnet.snapshot() if node else None
    net = hostnet.choose_network() if node else None
    address = net.gateway if net else "127.0.0.1"
    service_cidr = net.service_cidr if net else SERVICE_CIDR
    plane = ControlPlane(
        state_dir, binaries, tied=tied, address=address, service_cidr=service_cidr, node_lifecycle=bool(net)
    )
    started: dict[str, subprocess.Popen[bytes]] = plane.processes
    try:
        if net is not None:
            hostnet.create_bridge(net)
            hostnet.write_sysctl("net/ipv4/ip_forward", "1")  # pods reach the host and each other
        plane.start()
        assert plane.creds is not None
        prom_url = None
        if with_prometheus:
            started["prometheus"], prom_url = prometheus.start(
                binaries["prometheus"], state_dir, plane.server, plane.creds, tied=tied, address=address
            )
        node_ports: dict[str, int] = {}
        if net is not None:
            kubelet = real_node.RealNode(plane, net, node_labels or {}, tied=tied)
            try:
                kubelet.start(binaries, references)
            finally:
                started |= kubelet.processes
            node_ports = kubelet.ports
        stack = Stack(
            state_dir=state_dir,
            kubeconfig=plane.kubeconfig,
            server=plane.server,
            version=build.kube_version(),
            prometheus_url=prom_url,
            start_seconds=round(time.monotonic() - began, 2),
            pids={name: p.pid for name, p in started.items()},
            nodes=[real_node.NODE_NAME] if net else [],
            ports={
                **plane.ports,
                **node_ports,
                **({"prometheus": int(prom_url.rsplit(":", 1)[1])} if prom_url else {}),
            },
            network=net.index if net else None,
            baseline=baseline,
            images=references,
            _procs=dict(started),
        )
        stack.save()
    except BaseException:
        pids = {name: p.pid for name, p in started.items()}
        real_node.stop(pids, started, state_dir)
        rest = {n: p for n, p in started.items() if n not in real_node.PROCESSES}
        for name in stop_order(rest):
            procs.stop(started[name].pid, grace=5, proc=started[name])
        if net is not None and baseline is not None:
            restore_host(net, baseline)
        shutil.rmtree(state_dir, ignore_errors=True)
        raise
    return stack


def restore_host(net: hostnet.NodeNetwork, baseline: dict[str, object]) -> None:
    """After the real node's processes are gone: its cgroups, bridge, rules, namespaces and sysctls."""
    real_node.remove_cgroups(f"/{net.bridge}")
    hostnet.delete_bridge(net)
    hostnet.restore(baseline)


def stop_order(processes: dict[str, object]) -> list[str]:
    """The control plane and Prometheus in STOP_ORDER (the node's processes stop first, in :func:`e2e.node.stop`)."""
    return [name for name in STOP_ORDER if name in processes]


def runtime_id(container_id: str) -> str:
    """The runtime's ID in a container status's ``containerID`` (``containerd://ID``)."""
    kind, _, ident = container_id.partition("://")
    if kind != "containerd" or not ident:
        raise ValueError(f"containerID {container_id!r} is not containerd://ID")
    return ident


def stop_stack(stack: Stack) -> None:
    """Stop every process (the node first, so pods go while the API is up) and remove the state dir."""
    real_node.stop(stack.pids, stack._procs, stack.state_dir)
    rest = {n: p for n, p in stack.pids.items() if n not in real_node.PROCESSES}
    for name in stop_order(rest):
        pid, proc = stack.pids[name], stack._procs.get(name)
        # A stack loaded from stack.json has bare pids: only signal those that are still ours.
        if proc is not None or procs.mentions(pid, str(stack.state_dir)):
            procs.stop(pid, grace=10.0, proc=proc)
    if stack.network is not None and stack.baseline is not None:
        restore_host(hostnet.NodeNetwork(stack.network), stack.baseline)
    shutil.rmtree(stack.state_dir, ignore_errors=True)


def leftovers(stack: Stack) -> list[str]:
    """What a stopped stack left behind (processes, listening ports, its state dir, the node's host
    changes: mounts, bridge, cgroups, rules, namespaces, sysctls); empty when clean."""
    found = [f"process {pid} ({name})" for name, pid in stack.pids.items() if procs.alive(pid)]
    found += [
        f"process {pid} under {stack.state_dir}" for pid in procs.processes_mentioning(str(stack.state_dir))
    ]
    found += [f"port {port} ({name})" for name, port in stack.ports.items() if stack.listening(port)]
    found += [f"directory {stack.state_dir}"] if stack.state_dir.exists() else []
    if stack.network is not None and stack.baseline is not None:
        bridge = hostnet.NodeNetwork(stack.network).bridge
        found += real_node.leftovers(stack.state_dir, bridge, stack.baseline)
    return found


@contextmanager
def running_stack(**kwargs: object) -> Iterator[Stack]:
    stack = start_stack(**kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        stop_stack(stack)

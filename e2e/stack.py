"""The whole local stack: control plane + a node + Prometheus, as one start/stop unit.

The node is the process kubelet (``node="process"``, the default: pods are host processes) or a real one
(``node="real"``, or ``GOODPUT_E2E_NODE=real``: kubelet + containerd + runc + CNI + kube-proxy, pods run
from the images :mod:`e2e.images` builds; see :mod:`e2e.node`).

Tests use :func:`running_stack` (or the ``cluster`` fixture in e2e/conftest.py); the CLI
``python -m e2e.cluster up|down|env`` uses :func:`start_stack` / :func:`stop_stack` with the state
saved in ``stack.json`` so a later command can find and stop the processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import kubernetes
from kubernetes.client import CoreV1Api

from e2e import build, hostnet, images, procs, prometheus
from e2e import node as real_node
from e2e.controlplane import SERVICE_CIDR, ControlPlane, write_kubeconfig

REPO = Path(__file__).resolve().parent.parent
STOP_ORDER = ["prometheus", "kube-controller-manager", "kube-apiserver", "etcd"]  # after the kubelets
KUBELET_GRACE_S = 20.0  # a kubelet gives its pods 10 s to stop


@dataclass(frozen=True)
class NodeSpec:
    """One process kubelet: a Node with these labels and allocatable resources (e.g. an accelerator pool)."""

    name: str = "goodput-node"
    labels: dict[str, str] = field(default_factory=dict)
    cpu: str = "64"
    memory: str = "256Gi"
    gpus: str = "8"


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
    runtime: str = "process"  # the node: "process" (the process kubelet) or "real" (containerd)
    network: int | None = None  # the real node's N: pods in 198.18.N.0/24, Services in 198.19.N.0/24
    baseline: dict[str, object] | None = None  # the host state the real node changes, before it started
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

    def service_backends(self, namespace: str, service: str) -> list[str]:
        """``ip:port`` of each pod a Service would route to (Ready, not terminating), first port.

        The stand-in for EndpointSlices: the API server rejects loopback endpoint addresses
        ("may not be in the loopback range"), so the slices of this stack stay empty.
        """
        with self.api_client() as client:
            core = CoreV1Api(client)
            spec = core.read_namespaced_service(service, namespace).spec
            selector = ",".join(f"{k}={v}" for k, v in (spec.selector or {}).items())
            pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        target = spec.ports[0].target_port
        backends = []
        for pod in pods:
            conditions = {c.type: c.status for c in pod.status.conditions or []}
            if conditions.get("Ready") != "True" or pod.metadata.deletion_timestamp:
                continue
            ports = {p.name: p.container_port for c in pod.spec.containers for p in c.ports or []}
            backends.append(f"{pod.status.pod_ip}:{ports.get(target, target)}")
        return sorted(backends)

    def pod_logs(self, namespace: str, name: str) -> str:
        """Everything the pod's containers wrote (`kubectl logs` on the real node; files on the process one)."""
        if self.runtime == "real":
            result = self.kubectl("logs", "-n", namespace, name, "--all-containers")
            return result.stdout if result.returncode == 0 else result.stderr
        logs = sorted((self.state_dir / "pods").glob(f"{namespace}_{name}_*/*.log"))
        return "".join(f"==> {log.name} <==\n{log.read_text(errors='replace')}" for log in logs)

    def container_running(self, container_id: str) -> bool:
        """Whether a container status's ``containerID`` still runs: a process, or a containerd container."""
        kind, _, ident = container_id.partition("://")
        if kind == "process":
            return procs.alive(int(ident))
        socket = self.state_dir / "node" / "containerd.sock"
        found = real_node.crictl(socket, "ps", "--quiet", "--state=running", f"--id={ident}")
        return found.returncode == 0 and bool(found.stdout.strip())

    def service_cidr(self) -> str:
        """The Services' address range (the real node's own, else the process kubelet's fixed one)."""
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
    nodes: list[NodeSpec] | None = None,
    with_prometheus: bool = True,
    tied: bool = True,
    node: str | None = None,
) -> Stack:
    """Build (if needed) and start everything; on any failure, stop what started and re-raise.

    ``nodes`` defaults to one :class:`NodeSpec`; pass ``[]`` for no kubelet. ``tied`` processes die
    with the calling thread (tests); the CLI passes False so they outlive it. ``node``: "process" or
    "real" (default: ``$GOODPUT_E2E_NODE``, else "process").
    """
    nodes = [NodeSpec()] if nodes is None else nodes
    runtime = node or os.environ.get("GOODPUT_E2E_NODE", "process")
    if runtime not in ("process", "real"):
        raise ValueError(f"node: {runtime!r} is neither 'process' nor 'real'")
    if runtime == "real" and len(nodes) != 1:
        raise ValueError(f"nodes: the real node is one machine, got {len(nodes)} NodeSpecs")
    binaries = build.ensure_binaries(node=runtime == "real")
    references = images.ensure_all() if runtime == "real" else {}
    began = time.monotonic()
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="goodput-e2e-"))
    baseline = hostnet.snapshot() if runtime == "real" else None
    net = hostnet.choose_network() if runtime == "real" else None
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
        if net is not None:
            if nodes[0].name != real_node.NODE_NAME:
                raise ValueError(
                    f"nodes[0].name: the real node is {real_node.NODE_NAME}, not {nodes[0].name}"
                )
            kubelet = real_node.RealNode(plane, net, nodes[0].labels, tied=tied)
            try:
                kubelet.start(binaries, references)
            finally:
                started |= kubelet.processes
        else:
            for spec in nodes:
                started[f"kubelet/{spec.name}"] = start_kubelet(plane, spec, tied)
        node_ports = kubelet.ports if net is not None else {}
        stack = Stack(
            state_dir=state_dir,
            kubeconfig=plane.kubeconfig,
            server=plane.server,
            version=build.kube_version(),
            prometheus_url=prom_url,
            start_seconds=round(time.monotonic() - began, 2),
            pids={name: p.pid for name, p in started.items()},
            nodes=[spec.name for spec in nodes],
            ports={
                **plane.ports,
                **node_ports,
                **({"prometheus": int(prom_url.rsplit(":", 1)[1])} if prom_url else {}),
            },
            runtime=runtime,
            network=net.index if net else None,
            baseline=baseline,
            images=references,
            _procs=dict(started),
        )
        stack.save()
    except BaseException:
        pids = {name: p.pid for name, p in started.items()}
        rest = started
        if net is not None:
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


def pod_subnet() -> str:
    """A random 127.X.Y.0/24, so pods of stacks running side by side (other test sessions) never collide."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.0/24"


def start_kubelet(plane: ControlPlane, node: NodeSpec, tied: bool) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "e2e.kubelet",
        f"--kubeconfig={plane.kubeconfig}",
        f"--state-dir={plane.state_dir}",
        f"--pod-subnet={pod_subnet()}",
        f"--node-name={node.name}",
        f"--cpu={node.cpu}",
        f"--memory={node.memory}",
        f"--gpus={node.gpus}",
        *(f"--label={k}={v}" for k, v in node.labels.items()),
    ]
    log = plane.state_dir / "logs" / f"kubelet-{node.name}.log"
    # Pods are processes sharing this host's cores: one torch thread each unless the caller chose, as a CPU
    # limit of one would give them in a cluster. Two threads per pod oversubscribe a small host, and one
    # replica could then use every core, so adding replicas would add no capacity.
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = procs.start(argv, log, env=env, cwd=REPO, tied=tied)

    def node_ready() -> bool:
        if proc.poll() is not None:
            raise procs.ProcessExited(f"kubelet exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with plane.http() as client:
            status = client.get(f"/api/v1/nodes/{node.name}", timeout=2).json().get("status", {})
        return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))

    procs.wait_until(node_ready, 30, f"node {node.name} Ready")
    return proc


def stop_order(processes: dict[str, object]) -> list[str]:
    """Kubelets first (so pods get their SIGTERM while the API is up), then the rest in STOP_ORDER."""
    kubelets = [name for name in processes if name.startswith("kubelet/")]
    return kubelets + [name for name in STOP_ORDER if name in processes]


def stop_stack(stack: Stack) -> None:
    """Stop every process (the node first, so pods go while the API is up) and remove the state dir."""
    rest = stack.pids
    if stack.runtime == "real":
        real_node.stop(stack.pids, stack._procs, stack.state_dir)
        rest = {n: p for n, p in stack.pids.items() if n not in real_node.PROCESSES}
    for name in stop_order(rest):
        pid, proc = stack.pids[name], stack._procs.get(name)
        # A stack loaded from stack.json has bare pids: only signal those that are still ours.
        if proc is not None or procs.mentions(pid, str(stack.state_dir)):
            grace = KUBELET_GRACE_S if name.startswith("kubelet/") else 10.0
            procs.stop(pid, grace=grace, proc=proc)
    if stack.network is not None and stack.baseline is not None:
        restore_host(hostnet.NodeNetwork(stack.network), stack.baseline)
    shutil.rmtree(stack.state_dir, ignore_errors=True)


def leftovers(stack: Stack) -> list[str]:
    """What a stopped stack left behind (processes, listening ports, its state dir, the real node's host
    changes: mounts, bridge, cgroups, rules, namespaces, sysctls); empty when clean."""
    found = [f"process {pid} ({name})" for name, pid in stack.pids.items() if procs.alive(pid)]
    found += [
        f"process {pid} under {stack.state_dir}" for pid in procs.processes_mentioning(str(stack.state_dir))
    ]
    found += [f"port {port} ({name})" for name, port in stack.ports.items() if procs.listening(port)]
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

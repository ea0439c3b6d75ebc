"""Start etcd, kube-apiserver and kube-controller-manager, the way envtest does plus a KCM.

Everything listens on 127.0.0.1 at free ports, but the API server, which listens on ``address``: the node
bridge's address, so pods in containers reach it (loopback for a control plane without a node). State (PKI, etcd
data, logs) lives in one directory.
"""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from e2e import pki, procs

# Controllers the operator's children need (Deployment → ReplicaSet → Pod, GC of owned objects, PDBs,
# Endpoints for Services, namespaces, service accounts), plus the cheap housekeeping ones; node-lifecycle
# joins them when there is a node (see ControlPlane.node_lifecycle).
CONTROLLERS = [
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "disruption-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "resourcequota-controller",
    "pod-garbage-collector-controller",
    "job-controller",
    "cronjob-controller",
    "statefulset-controller",
    "daemonset-controller",
    "ttl-after-finished-controller",
]
SERVICE_CIDR = "198.19.0.0/24"  # from 198.18.0.0/15, reserved for benchmarking: never a real network


@dataclass
class ControlPlane:
    """Handles on the three control-plane processes and the credentials to talk to them."""

    state_dir: Path
    binaries: dict[str, Path]
    tied: bool = True
    address: str = "127.0.0.1"
    service_cidr: str = SERVICE_CIDR
    # A real kubelet registers its Node tainted not-ready: the node-lifecycle controller lifts the taint
    # once the node is Ready (and watches its lease). Without a node it has nothing to do.
    node_lifecycle: bool = False
    server: str = ""
    creds: pki.Pki | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    def start(self) -> None:
        service_ip = str(next(ipaddress.ip_network(self.service_cidr).hosts()))  # the `kubernetes` Service
        extra = (service_ip,) if self.address == "127.0.0.1" else (service_ip, self.address)
        self.creds = pki.generate(self.state_dir / "pki", extra)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.ports = {name: procs.free_port() for name in ("etcd", "etcd-peer", "apiserver", "kcm")}
        self.server = f"https://{self.address}:{self.ports['apiserver']}"
        write_kubeconfig(
            self.kubeconfig, self.server, self.creds.ca.cert, cert_user(self.creds.admin), "admin"
        )
        kcm_kubeconfig = self.state_dir / "controller-manager.kubeconfig"
        write_kubeconfig(
            kcm_kubeconfig, self.server, self.creds.ca.cert, cert_user(self.creds.controller_manager), "kcm"
        )
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager(kcm_kubeconfig)

    def _run(self, name: str, argv: list[str]) -> None:
        log = self.state_dir / "logs" / f"{name}.log"
        self.processes[name] = procs.start(argv, log, cwd=self.state_dir, tied=self.tied)

    def _check_running(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is not None:
            log = (self.state_dir / "logs" / f"{name}.log").read_text()[-3000:]
            raise procs.ProcessExited(f"{name} exited with {proc.returncode}:\n{log}")

    def _start_etcd(self) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self._run(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=goodput",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=goodput={peer}",
                "--unsafe-no-fsync",  # test data; a shared disk's fsync latency would dominate
            ],
        )

        def healthy() -> bool:
            self._check_running("etcd")
            return httpx.get(f"{client}/health", timeout=1).json()["health"] == "true"

        procs.wait_until(healthy, 30, "etcd /health")

    def _start_apiserver(self) -> None:
        assert self.creds is not None
        c = self.creds
        self._run(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--advertise-address={self.address}",
                f"--bind-address={self.address}",
                f"--secure-port={self.ports['apiserver']}",
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                f"--cert-dir={self.state_dir / 'apiserver-certs'}",
                f"--tls-cert-file={c.serving.cert}",
                f"--tls-private-key-file={c.serving.key}",
                f"--client-ca-file={c.ca.cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={c.sa_public}",
                f"--service-account-signing-key-file={c.sa_private}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--authorization-mode=Node,RBAC",
                # `kubectl logs` and exec: the API server calls the kubelet as admin, checking its cert.
                f"--kubelet-client-certificate={c.admin.cert}",
                f"--kubelet-client-key={c.admin.key}",
                f"--kubelet-certificate-authority={c.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )

        def ready() -> bool:
            self._check_running("kube-apiserver")
            with self.http() as client:
                return client.get("/readyz", timeout=2).status_code == 200

        procs.wait_until(ready, 90, "kube-apiserver /readyz", interval=0.25)

    def _start_controller_manager(self, kubeconfig: Path) -> None:
        assert self.creds is not None
        self._run(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.ports['kcm']}",
                f"--cert-dir={self.state_dir / 'kcm-certs'}",
                f"--controllers={','.join(CONTROLLERS + ['node-lifecycle-controller'] * self.node_lifecycle)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.creds.sa_private}",
                f"--root-ca-file={self.creds.ca.cert}",
                f"--service-cluster-ip-range={self.service_cidr}",
                "--leader-elect=false",
            ],
        )
        url = f"https://127.0.0.1:{self.ports['kcm']}/healthz"

        def healthy() -> bool:
            self._check_running("kube-controller-manager")
            return httpx.get(url, verify=False, timeout=2).status_code == 200

        procs.wait_until(healthy, 60, "kube-controller-manager /healthz", interval=0.25)

        # Pods are refused until their namespace's default service account exists, which the service account
        # controller creates shortly after it starts: a pod created in that gap failed a test once.
        def default_account() -> bool:
            self._check_running("kube-controller-manager")
            with self.http() as client:
                path = "/api/v1/namespaces/default/serviceaccounts/default"
                return client.get(path, timeout=2).status_code == 200

        procs.wait_until(default_account, 30, "the default service account", interval=0.25)

    def http(self) -> httpx.Client:
        """An admin HTTP client for raw API calls (health, /version)."""
        assert self.creds is not None
        ctx = ssl.create_default_context(cafile=str(self.creds.ca.cert))
        ctx.load_cert_chain(str(self.creds.admin.cert), str(self.creds.admin.key))
        return httpx.Client(base_url=self.server, verify=ctx)


def cert_user(pair: pki.CertPair) -> dict[str, str]:
    return {"client-certificate": str(pair.cert), "client-key": str(pair.key)}


def write_kubeconfig(path: Path, server: str, ca: Path, credentials: dict[str, str], user: str) -> None:
    """A kubeconfig for ``user``: ``credentials`` is its kubeconfig user entry (client cert or token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "goodput-e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "goodput-e2e", "context": {"cluster": "goodput-e2e", "user": user}}],
        "current-context": "goodput-e2e",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)

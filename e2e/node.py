"""The real node: containerd + runc + CNI (Debian's packages), kubelet, kube-proxy and kube-scheduler v1.34.

Facts of this host it follows: no systemd as PID 1 (cgroupfs driver everywhere), hybrid cgroup v1 (kubelet
``failCgroupV1: false``; runc, not crun), no CAP_SYS_RESOURCE (containerd ``restrict_oom_score_adj``).
containerd keeps its content and snapshots under ``$GOODPUT_CACHE/containerd`` so the 5.8 GB worker image
is unpacked once; its runtime state, the kubelet's and the CNI's live in the stack's state dir. Images from
:mod:`e2e.images` are loaded into containerd's ``k8s.io`` namespace. :func:`stop` removes every pod sandbox
through crictl, then puts the host back (:mod:`e2e.hostnet`); :func:`leftovers` says what is still there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from e2e import build, hostnet, images, pki, procs
from e2e.controlplane import ControlPlane, cert_user, write_kubeconfig

CONTAINERD_ROOT = build.CACHE_ROOT / "containerd"
CNI_BIN = Path("/usr/lib/cni")
RUNC = shutil.which("runc") or "/usr/sbin/runc"
NODE_NAME = "goodput-node"
PROCESSES = ("kube-scheduler", f"kubelet/{NODE_NAME}", "kube-proxy", "containerd")  # what :func:`stop` stops


@dataclass
class RealNode:
    """The node's processes and where they keep their state."""

    plane: ControlPlane
    net: hostnet.NodeNetwork
    labels: dict[str, str]
    name: str = NODE_NAME
    tied: bool = True
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.plane.state_dir / "node"

    @property
    def socket(self) -> Path:
        return self.root / "containerd.sock"

    def _run(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.plane.state_dir / "logs" / f"{name.replace('/', '-')}.log"
        proc = procs.start(argv, log, cwd=self.root, tied=self.tied)
        self.processes[name] = proc
        return proc

    def _alive(self, name: str) -> None:
        proc = self.processes[name]
        if proc.poll() is not None:
            log = (self.plane.state_dir / "logs" / f"{name.replace('/', '-')}.log").read_text()[-3000:]
            raise procs.ProcessExited(f"{name} exited with {proc.returncode}:\n{log}")

    def start(self, binaries: dict[str, Path], references: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_containerd(references[images.PAUSE.name])
        load_images(self.socket, references.values())
        self.write_cni()
        self.start_scheduler(binaries["kube-scheduler"])
        self.start_kube_proxy(binaries["kube-proxy"])
        self.start_kubelet(binaries["kubelet"])

    def start_containerd(self, pause: str) -> None:
        cri = {
            "sandbox_image": pause,
            "restrict_oom_score_adj": True,  # no CAP_SYS_RESOURCE here: every sandbox fails without it
            "disable_apparmor": True,
            "enable_selinux": False,
            "containerd": {
                "snapshotter": "overlayfs",
                "default_runtime_name": "runc",
                "runtimes": {
                    "runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        "options": {"SystemdCgroup": False, "BinaryName": RUNC},
                    }
                },
            },
            "cni": {"bin_dir": str(CNI_BIN), "conf_dir": str(self.root / "cni" / "net.d")},
        }
        config = {
            "version": 2,
            "root": str(CONTAINERD_ROOT),
            "state": str(self.root / "containerd"),
            "grpc": {"address": str(self.socket)},
            "ttrpc": {"address": str(self.socket) + ".ttrpc"},
            "plugins": {
                "io.containerd.grpc.v1.cri": cri,
                "io.containerd.internal.v1.opt": {"path": str(self.root / "opt")},
            },
        }
        path = self.root / "containerd.toml"
        path.write_text(toml(config))
        self._run("containerd", ["containerd", f"--config={path}"])

        def serving() -> bool:
            self._alive("containerd")
            return ctr(self.socket, "version").returncode == 0

        procs.wait_until(serving, 30, "containerd", interval=0.25)

    def write_cni(self) -> None:
        conf = {
            "cniVersion": "1.0.0",
            "name": "goodput",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.net.bridge,
                    "isGateway": True,
                    "isDefaultGateway": True,  # Service IPs (198.19.N.0/24) leave through the bridge
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.net.pod_cidr, "gateway": self.net.gateway}]],
                        "dataDir": str(self.root / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        directory = self.root / "cni" / "net.d"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "10-goodput.conflist").write_text(json.dumps(conf, indent=2))

    def component_kubeconfig(self, stem: str, common_name: str, organization: str | None = None) -> Path:
        assert self.plane.creds is not None
        pair = pki.issue(self.plane.creds, stem, common_name, organization)
        path = self.root / f"{stem}.kubeconfig"
        write_kubeconfig(path, self.plane.server, self.plane.creds.ca.cert, cert_user(pair), common_name)
        return path

    def start_scheduler(self, binary: Path) -> None:
        kubeconfig = self.component_kubeconfig("scheduler", "system:kube-scheduler")
        self.ports["kube-scheduler"] = port = procs.free_port()
        self._run(
            "kube-scheduler",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
            ],
        )

    def start_kube_proxy(self, binary: Path) -> None:
        kubeconfig = self.component_kubeconfig("kube-proxy", "system:kube-proxy")
        healthz, metrics = procs.free_port(), procs.free_port()
        self.ports |= {"kube-proxy-healthz": healthz, "kube-proxy-metrics": metrics}
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",  # one table of its own, deleted whole at teardown
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.name,
            "clusterCIDR": self.net.pod_cidr,
            "bindAddress": "127.0.0.1",
            "healthzBindAddress": f"127.0.0.1:{healthz}",
            "metricsBindAddress": f"127.0.0.1:{metrics}",
            "nodePortAddresses": [f"{self.net.gateway}/32"],
            # Leave the host's conntrack sysctls alone.
            "conntrack": {"maxPerCore": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        path = self.root / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._run("kube-proxy", [str(binary), f"--config={path}", f"--hostname-override={self.name}"])

    def start_kubelet(self, binary: Path) -> None:
        assert self.plane.creds is not None
        create_cgroups(f"/{self.net.bridge}")
        creds = self.plane.creds
        serving = pki.issue(creds, "kubelet-serving", self.name, None, (self.net.gateway,))
        kubeconfig = self.component_kubeconfig("kubelet", f"system:node:{self.name}", "system:nodes")
        self.ports["kubelet"] = port = procs.free_port(self.net.gateway)
        self.ports["kubelet-healthz"] = healthz = procs.free_port()
        endpoint = f"unix://{self.socket}"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.net.gateway,
            "port": port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(creds.ca.cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},  # only holders of a cert from the stack's CA get here
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.net.bridge}",  # one subtree per stack, removed at teardown
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,  # never collect the locally built images: nothing re-pulls
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "shutdownGracePeriod": "0s",
            "registerNode": True,
        }
        path = self.root / "kubelet.yaml"
        path.write_text(yaml.safe_dump(config))
        labels = ",".join(f"{k}={v}" for k, v in self.labels.items())
        argv = [
            str(binary),
            f"--config={path}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.root / 'kubelet'}",
            f"--cert-dir={self.root / 'kubelet-pki'}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.net.gateway}",
            *([f"--node-labels={labels}"] if labels else []),
        ]
        self._run(f"kubelet/{self.name}", argv)

        def node_ready() -> bool:
            self._alive(f"kubelet/{self.name}")
            with self.plane.http() as client:
                status = client.get(f"/api/v1/nodes/{self.name}", timeout=2).json().get("status", {})
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))

        procs.wait_until(node_ready, 90, f"node {self.name} Ready", interval=0.5)


def toml(config: dict[str, object], prefix: str = "") -> str:
    """The TOML containerd reads (tables and scalars only: all this config needs)."""
    scalars, tables = [], []
    for key, value in config.items():
        if isinstance(value, dict):
            name = f'{prefix}."{key}"' if "." in key else f"{prefix}.{key}" if prefix else key
            tables.append(f"\n[{name.lstrip('.')}]\n" + toml(value, name))
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    return "\n".join(scalars) + "".join(tables) + "\n"


def ctr(socket: Path, *args: str, stdin: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["ctr", f"--address={socket}", "--namespace=k8s.io", *args]
    return subprocess.run(argv, stdin=stdin, capture_output=True, text=True, timeout=900, check=False)


def crictl(socket: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    binary = next(t.path for t in build.targets() if t.name == "crictl")
    endpoint = f"unix://{socket}"
    argv = [str(binary), f"--runtime-endpoint={endpoint}", f"--image-endpoint={endpoint}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def load_images(socket: Path, references: object) -> None:
    """``podman save | ctr import`` each image containerd lacks (its digest tag names the content)."""
    present = set(ctr(socket, "images", "ls", "-q").stdout.split())
    for reference in references:  # type: ignore[attr-defined]
        if reference in present:
            continue
        name = reference.rsplit(":", 1)[0]
        version_tag = f"{name}:{images.version()}"
        save = subprocess.Popen(
            images.podman("save", "--format=docker-archive", reference), stdout=subprocess.PIPE
        )
        result = ctr(socket, "images", "import", "-", stdin=save.stdout.fileno())  # type: ignore[union-attr]
        save.wait()
        if result.returncode != 0 or save.returncode != 0:
            raise RuntimeError(f"loading {reference} into containerd failed: {result.stderr}")
        ctr(socket, "images", "tag", "--force", reference, version_tag)
        stale = [r for r in present if r.startswith(f"{version_tag}-") and r != reference]
        if stale:  # containerd collects the content only they held
            ctr(socket, "images", "rm", *stale)


def stop(
    node_pids: dict[str, int], procs_by_name: dict[str, subprocess.Popen[bytes]], state_dir: Path
) -> None:
    """Scheduler and kubelet first; every pod sandbox removed through CRI; kube-proxy; containerd."""
    socket = state_dir / "node" / "containerd.sock"

    def halt(name: str, grace: float) -> None:
        pid, proc = node_pids.get(name), procs_by_name.get(name)
        if pid is not None and (proc is not None or procs.mentions(pid, str(state_dir))):
            procs.stop(pid, grace=grace, proc=proc)

    halt("kube-scheduler", 10)
    halt(f"kubelet/{NODE_NAME}", 10)
    if socket.exists():
        crictl(socket, "stop", "--timeout=5", *crictl(socket, "ps", "-q").stdout.split())
        crictl(socket, "rmp", "--force", "--all")
    halt("kube-proxy", 10)
    halt("containerd", 10)
    hostnet.unmount_under(state_dir)


def cgroup_dirs(root: str) -> list[Path]:
    """The stack's cgroup subtree in every hierarchy (v1 controllers and the unified one)."""
    base = Path("/sys/fs/cgroup")
    return [d / root.lstrip("/") for d in base.iterdir() if (d / root.lstrip("/")).exists()]


def create_cgroups(root: str) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy before it starts."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if hierarchy.is_dir():
            (hierarchy / root.lstrip("/")).mkdir(exist_ok=True)


def remove_cgroups(root: str) -> None:
    for top in cgroup_dirs(root):
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            directory.rmdir()
        top.rmdir()


def leftovers(state_dir: Path, bridge: str, baseline: dict[str, object]) -> list[str]:
    """What the real node left on the host; empty when clean."""
    found = [f"mount {m}" for m in hostnet.mounts_under(state_dir, CONTAINERD_ROOT)]
    found += [f"bridge {bridge}"] if bridge in hostnet.links() else []
    found += [f"cgroup {d}" for d in cgroup_dirs(f"/{bridge}")]
    found += [f"containerd shim {pid}" for pid in procs.processes_mentioning(str(state_dir / "node"))]
    return found + hostnet.differences(baseline)

"""Process kubelet: one Node whose pods are local processes, each on its own loopback address.

There is no container runtime here, so this stands in for kubelet + scheduler on the e2e stack:

- registers a Ready Node with allocatable cpu, memory and ``nvidia.com/gpu``;
- binds every pending pod that names the default scheduler, whose nodeSelector matches the node's
  labels and whose requests fit what is left (all namespaces: every pod on this stack is a test's);
- runs each container's command + args as a process (``python``/``goodput`` map to this venv) with
  the pod's env (literals, fieldRef, configMap/secret refs, envFrom), in a session of its own; the
  pod gets its own loopback address (``status.podIP``) from ``--pod-subnet`` (default 127.0.0.0/24;
  the stack picks a random 127.X.Y.0/24 so concurrent stacks never collide) and binds to it through
  its env (fieldRef status.podIP); configMap, secret, emptyDir and hostPath volumes are materialised
  and their mountPaths rewritten in command, args and env (there is no mount namespace);
- reports phase, podIP, container statuses and Ready (readiness probes: httpGet, tcpSocket, exec),
  restarts per restartPolicy with a short backoff (1 s doubling to 30 s), restarts on liveness failure;
- mounts the pod's ServiceAccount token (a TokenRequest bound to the pod, unless
  ``automountServiceAccountToken: false``) with ``ca.crt`` and ``namespace``; with no mount namespace
  the process cannot see ``/var/run/secrets/kubernetes.io/serviceaccount``, so it also gets
  ``$KUBECONFIG`` naming a kubeconfig with that token: in-cluster credentials, bound by its RBAC;
- on deletion (and liveness kills) runs the preStop exec hook, then sends SIGTERM, SIGKILLs after the
  grace period, then deletes the pod with grace 0.

One plain polling loop (0.5 s) over a tiny cluster; no watches, no threads.
Run: ``python -m e2e.kubelet --kubeconfig admin.kubeconfig --state-dir DIR``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes.utils import parse_quantity

from e2e import procs

# The "image" every process pod runs is this checkout. A volume mounted over, say, /tmp never hides an image's
# own files in a container, so paths inside it are never rewritten (a checkout under /tmp would otherwise be
# redirected into the pod's /tmp volume and the operator pod would crash-loop).
IMAGE_ROOT = str(Path(__file__).resolve().parent.parent)

Obj = dict[str, Any]
LOOP_S = 0.5
HEARTBEAT_S = 10.0
BACKOFF_MAX_S = 30.0
RETRIED = ("ContainerCreating", "CrashLoopBackOff", "StartError", "CreateContainerConfigError")
PASS_ENV = ("HOME", "LANG", "LC_ALL", "TMPDIR", "HF_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """Just enough of the Kubernetes REST API, with the credentials of a (file-based) kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        cfg = yaml.safe_load(kubeconfig.read_text())
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == cfg["current-context"])
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        self.server = cluster["server"]
        self.ca = Path(cluster["certificate-authority"])
        tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
        tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self.http = httpx.Client(base_url=self.server, verify=tls, timeout=10)

    def call(self, method: str, path: str, body: Obj | None = None, patch: str = "") -> Obj | None:
        """JSON in, JSON out; None on 404 (the object is gone, which callers treat as done)."""
        headers = {"Content-Type": f"application/{patch}+json" if patch else "application/json"}
        resp = self.http.request(method, path, json=body, headers=headers)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp.json()


@dataclass
class Container:
    """One container's process and what its status must report."""

    spec: Obj
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restarts: int = 0
    last_terminated: Obj | None = None
    final: Obj | None = None  # terminated state once restartPolicy says it stays down
    waiting: tuple[str, str] = ("ContainerCreating", "")
    ready: bool = False
    probe_ok: int = 0
    probe_fail: int = 0
    live_fail: int = 0
    next_ready_probe: float = 0.0
    next_live_probe: float = 0.0
    backoff_until: float = 0.0
    kill_at: float | None = None
    pre_stop: subprocess.Popen[bytes] | None = None  # the preStop hook; SIGTERM follows when it ends


@dataclass
class PodRecord:
    uid: str
    namespace: str
    name: str
    ip: str
    dir: Path
    start_time: str
    containers: list[Container]
    grace: float = 30.0  # spec.terminationGracePeriodSeconds, for liveness kills
    mounts: dict[str, Path] | None = None  # volume name -> local dir, once materialised
    terminating: bool = False
    transitions: dict[str, tuple[str, str]] = field(default_factory=dict)
    last_status: Obj | None = None


def quantity_sum(pods: list[Obj], resource: str) -> float:
    total = 0.0
    for pod in pods:
        for c in pod["spec"]["containers"]:
            value = (c.get("resources", {}).get("requests") or {}).get(resource)
            total += float(parse_quantity(value)) if value is not None else 0.0
    return total


class Kubelet:
    def __init__(
        self,
        api: Api,
        state_dir: Path,
        node: str,
        capacity: dict[str, str],
        labels: dict[str, str],
        pod_subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("127.0.0.0/24"),
    ):
        self.api = api
        self.pod_subnet = pod_subnet
        self.state_dir = state_dir
        self.node = node
        self.capacity = capacity
        self.labels = {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux", **labels}
        self.pods: dict[str, PodRecord] = {}
        self.stopping = False
        self.last_heartbeat = 0.0
        self.venv_bin = Path(sys.executable).parent

    # --- node -------------------------------------------------------------------------------

    def register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": self.labels}}
        if self.api.call("GET", f"/api/v1/nodes/{self.node}") is None:
            self.api.call("POST", "/api/v1/nodes", node)
        # TaintNodesByCondition adds not-ready taints at creation; this node is Ready and has no taints.
        self.api.call("PATCH", f"/api/v1/nodes/{self.node}", {"spec": {"taints": None}}, "merge-patch")
        self.heartbeat()

    def heartbeat(self) -> None:
        stamp = now_iso()
        status = {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "process kubelet is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "nodeInfo": {
                "kubeletVersion": "goodput-process-kubelet",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        self.api.call(
            "PATCH", f"/api/v1/nodes/{self.node}/status", {"status": status}, "strategic-merge-patch"
        )
        self.last_heartbeat = time.monotonic()

    # --- scheduling -------------------------------------------------------------------------

    def unfit(self, pod: Obj, bound: list[Obj]) -> str:
        """Why ``pod`` cannot join the pods already ``bound`` here, in the scheduler's words ("" if it fits)."""
        selector = pod["spec"].get("nodeSelector") or {}
        if any(self.labels.get(k) != v for k, v in selector.items()):
            return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        if len(bound) + 1 > int(self.capacity["pods"]):
            return "0/1 nodes are available: 1 Too many pods."
        for resource, cap in self.capacity.items():
            if resource != "pods" and quantity_sum([*bound, pod], resource) > float(parse_quantity(cap)):
                return f"0/1 nodes are available: 1 Insufficient {resource}."
        return ""

    def mark_unschedulable(self, pod: Obj, message: str) -> None:
        """Set PodScheduled=False/Unschedulable, as kube-scheduler does, once per distinct message."""
        conditions = pod["status"].get("conditions") or []
        if any(c["type"] == "PodScheduled" and c.get("message") == message for c in conditions):
            return
        meta = pod["metadata"]
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": now_iso(),
        }
        body = {"metadata": {"uid": meta["uid"]}, "status": {"conditions": [condition]}}
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        self.api.call("PATCH", path, body, "strategic-merge-patch")

    def bind_pending(self, pods: list[Obj]) -> None:
        live = [p for p in pods if p["status"].get("phase") not in ("Succeeded", "Failed")]
        bound = [p for p in live if p["spec"].get("nodeName") == self.node]
        for pod in live:
            spec, meta = pod["spec"], pod["metadata"]
            if spec.get("nodeName") or spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            if meta.get("deletionTimestamp"):
                continue
            reason = self.unfit(pod, bound)
            if reason:
                self.mark_unschedulable(pod, reason)
                continue
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": meta["name"], "uid": meta["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
            }
            try:
                self.api.call(
                    "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", binding
                )
            except RuntimeError as exc:  # raced with a delete or another binder: next loop decides again
                print(f"bind {meta['namespace']}/{meta['name']} failed: {exc}", flush=True)
                continue
            print(f"bound {meta['namespace']}/{meta['name']}", flush=True)
            spec["nodeName"] = self.node
            bound.append(pod)

    # --- pod lifecycle ----------------------------------------------------------------------

    def free_ip(self) -> str:
        used = {rec.ip for rec in self.pods.values()} | {"127.0.0.1"}
        for host in self.pod_subnet.hosts():
            if str(host) not in used:
                return str(host)
        raise RuntimeError(f"pod subnet {self.pod_subnet} is full")

    def admit(self, pod: Obj) -> PodRecord:
        meta = pod["metadata"]
        pod_dir = self.state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        rec = PodRecord(
            uid=meta["uid"],
            namespace=meta["namespace"],
            name=meta["name"],
            ip=self.free_ip(),
            dir=pod_dir,
            start_time=now_iso(),
            containers=[Container(spec=c) for c in pod["spec"]["containers"]],
            grace=float(pod["spec"].get("terminationGracePeriodSeconds", 30)),
        )
        print(f"admitted {rec.namespace}/{rec.name} at {rec.ip}", flush=True)
        return rec

    def materialise_volumes(self, pod: Obj, pod_dir: Path) -> dict[str, Path]:
        """Local directories standing in for the pod's volumes, keyed by volume name."""
        ns, local = pod["metadata"]["namespace"], {}
        for vol in pod["spec"].get("volumes") or []:
            path = pod_dir / "volumes" / vol["name"]
            if "hostPath" in vol:
                local[vol["name"]] = Path(vol["hostPath"]["path"])
                continue
            path.mkdir(parents=True, exist_ok=True)
            local[vol["name"]] = path
            for kind, ref_key in (("configMap", "name"), ("secret", "secretName")):
                if kind not in vol:
                    continue
                src = vol[kind]
                obj = self.api.call("GET", f"/api/v1/namespaces/{ns}/{kind.lower()}s/{src[ref_key]}")
                if obj is None:
                    if src.get("optional"):
                        continue
                    raise RuntimeError(f"{kind} {src[ref_key]} not found")
                if kind == "configMap":
                    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                    data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
                else:
                    data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    target = path / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data[item["key"]])
        return local

    def field_ref(self, pod: Obj, rec: PodRecord, path: str) -> str:
        meta = pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": self.node,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1",
            "status.podIP": rec.ip,
            "status.podIPs": rec.ip,
        }
        if path in simple:
            return simple[path]
        match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if match:
            return (meta.get(match.group(1)) or {}).get(match.group(2), "")
        raise RuntimeError(f"unsupported fieldRef {path}")

    def key_ref(self, ns: str, kind: str, ref: Obj) -> str | None:
        obj = self.api.call("GET", f"/api/v1/namespaces/{ns}/{kind}/{ref['name']}")
        raw = (obj or {}).get("data", {}).get(ref["key"])
        if raw is None:
            if ref.get("optional"):
                return None
            raise RuntimeError(f"{kind} {ref['name']} has no key {ref['key']}")
        return base64.b64decode(raw).decode() if kind == "secrets" else raw

    def container_env(self, pod: Obj, rec: PodRecord, spec: Obj) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        host, port = self.api.server.removeprefix("https://").rsplit(":", 1)
        env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        env |= {
            "PATH": f"{self.venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOSTNAME": pod["metadata"]["name"],
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
        }
        for source in spec.get("envFrom") or []:
            for kind, key in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if kind in source:
                    obj = self.api.call("GET", f"/api/v1/namespaces/{ns}/{key}/{source[kind]['name']}") or {}
                    for k, v in (obj.get("data") or {}).items():
                        env[source.get("prefix", "") + k] = (
                            base64.b64decode(v).decode() if key == "secrets" else v
                        )
        for var in spec.get("env") or []:
            ref = var.get("valueFrom")
            if ref is None:
                value: str | None = expand(var.get("value", ""), env)
            elif "fieldRef" in ref:
                value = self.field_ref(pod, rec, ref["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in ref:
                value = self.key_ref(ns, "configmaps", ref["configMapKeyRef"])
            elif "secretKeyRef" in ref:
                value = self.key_ref(ns, "secrets", ref["secretKeyRef"])
            else:
                raise RuntimeError(f"unsupported env source for {var['name']}: {sorted(ref)}")
            if value is not None:
                env[var["name"]] = value
        return {k: self.rewrite(rec, spec, v) for k, v in env.items()}

    def service_account(self, pod: Obj, rec: PodRecord) -> dict[str, str]:
        """The pod's projected ServiceAccount token as files and a ``$KUBECONFIG`` (see the module docstring)."""
        spec, meta = pod["spec"], pod["metadata"]
        if spec.get("automountServiceAccountToken") is False:
            return {}
        ns, account = meta["namespace"], spec.get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 24 * 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        path = f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token"
        answer = self.api.call("POST", path, request)
        if answer is None:
            raise RuntimeError(f"serviceaccount {account} not found")
        directory = rec.dir / "serviceaccount"
        directory.mkdir(exist_ok=True)
        (directory / "token").write_text(answer["status"]["token"])
        (directory / "namespace").write_text(ns)
        shutil.copyfile(self.api.ca, directory / "ca.crt")
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.api.server,
                        "certificate-authority": str(directory / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": account, "user": {"token": answer["status"]["token"]}}],
            "contexts": [
                {"name": "in-cluster", "context": {"cluster": "local", "user": account, "namespace": ns}}
            ],
            "current-context": "in-cluster",
        }
        (directory / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
        return {"KUBECONFIG": str(directory / "kubeconfig")}

    def rewrite(self, rec: PodRecord, spec: Obj, text: str) -> str:
        """Replace the container's mountPaths (at a path boundary) with the local volume directories.

        Paths inside :data:`IMAGE_ROOT` are the image's own files and stay as they are.
        """
        if text == IMAGE_ROOT or text.startswith(IMAGE_ROOT + "/"):
            return text
        for mount in sorted(spec.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"])):
            if mount["name"] not in (rec.mounts or {}):
                continue
            local = (rec.mounts or {})[mount["name"]] / mount.get("subPath", "")
            text = re.sub(re.escape(mount["mountPath"].rstrip("/")) + r"(?=/|\s|$|,|;|:)", str(local), text)
        return text

    def executable(self, name: str, path: str) -> str:
        """``python`` runs this venv's interpreter and console scripts resolve in its bin dir first."""
        if re.fullmatch(r"python(3(\.\d+)?)?", name):
            return sys.executable
        if "/" in name:
            return name
        return shutil.which(name, path=path) or name

    def start_container(self, pod: Obj, rec: PodRecord, c: Container) -> None:
        spec = c.spec
        if not spec.get("command"):
            c.waiting = (
                "CreateContainerError",
                "the process kubelet runs no images: set the container command",
            )
            return
        try:  # a missing ConfigMap or Secret is retried with backoff: it may be created later
            if rec.mounts is None:
                rec.mounts = self.materialise_volumes(pod, rec.dir)
            env = self.service_account(pod, rec) | self.container_env(pod, rec, spec)
        except (RuntimeError, KeyError) as exc:
            c.waiting = ("CreateContainerConfigError", str(exc))
            c.backoff_until = time.monotonic() + self.backoff(c)
            return
        argv = [self.rewrite(rec, spec, expand(a, env)) for a in spec["command"] + (spec.get("args") or [])]
        argv[0] = self.executable(argv[0], env["PATH"])
        cwd = Path(self.rewrite(rec, spec, spec["workingDir"])) if spec.get("workingDir") else rec.dir
        try:
            c.proc = procs.start(argv, rec.dir / f"{spec['name']}.log", env=env, cwd=cwd)
        except OSError as exc:
            c.waiting = ("StartError", str(exc))
            c.backoff_until = time.monotonic() + self.backoff(c)
            return
        c.started_at, c.waiting, c.ready = now_iso(), ("", ""), False
        c.probe_ok = c.probe_fail = c.live_fail = 0
        now = time.monotonic()
        c.next_ready_probe = now + float((spec.get("readinessProbe") or {}).get("initialDelaySeconds", 0))
        c.next_live_probe = now + float((spec.get("livenessProbe") or {}).get("initialDelaySeconds", 0))
        print(f"started {rec.namespace}/{rec.name}/{spec['name']} pid {c.proc.pid}: {argv}", flush=True)

    def backoff(self, c: Container) -> float:
        return min(BACKOFF_MAX_S, 2.0**c.restarts)

    def terminate(self, rec: PodRecord, c: Container, grace: float) -> None:
        """Run the preStop exec hook if any (SIGTERM follows when it ends), else SIGTERM now; SIGKILL at grace."""
        if c.proc is None or c.proc.poll() is not None or c.kill_at is not None:
            return
        c.kill_at = time.monotonic() + grace
        hook = ((c.spec.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if hook and grace > 0:
            argv = list(hook["command"])
            argv[0] = self.executable(argv[0], f"{self.venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}")
            log = rec.dir / f"{c.spec['name']}.log"
            c.pre_stop = procs.start(argv, log, cwd=rec.dir)
            return
        procs.signal_group(c.proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)

    def after_pre_stop(self, c: Container) -> None:
        """SIGTERM once the preStop hook has finished; at the grace deadline the hook is killed too."""
        if c.pre_stop is None:
            return
        deadline = c.kill_at is not None and time.monotonic() >= c.kill_at
        if c.pre_stop.poll() is None and not deadline:
            return
        procs.stop(c.pre_stop.pid, grace=0, proc=c.pre_stop)
        c.pre_stop = None
        if c.proc is not None and c.proc.poll() is None:
            procs.signal_group(c.proc.pid, signal.SIGTERM)

    def reap(self, rec: PodRecord, c: Container, policy: str) -> None:
        """Record a container's exit and decide, per restartPolicy, whether it comes back."""
        assert c.proc is not None
        code = c.proc.returncode
        procs.signal_group(c.proc.pid, signal.SIGKILL)  # leftovers of its session go with it
        state = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": now_iso(),
            "containerID": f"process://{c.proc.pid}",
        }
        print(f"exited {rec.namespace}/{rec.name}/{c.spec['name']} code {code}", flush=True)
        c.proc, c.ready, c.kill_at = None, False, None
        if rec.terminating or policy == "Never" or (policy == "OnFailure" and code == 0):
            c.final = state
            return
        c.last_terminated = state
        c.waiting = ("CrashLoopBackOff", f"back-off restarting failed container {c.spec['name']}")
        c.backoff_until = time.monotonic() + self.backoff(c)

    def probe(self, spec: Obj, rec: PodRecord, c: Container) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        ports = {p.get("name"): p["containerPort"] for p in c.spec.get("ports") or []}
        try:
            if "httpGet" in spec:
                get = spec["httpGet"]
                port = ports.get(get["port"], get["port"])
                url = f"{get.get('scheme', 'HTTP').lower()}://{get.get('host') or rec.ip}:{port}{get.get('path', '/')}"
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                return 200 <= httpx.get(url, headers=headers, timeout=timeout, verify=False).status_code < 400
            if "tcpSocket" in spec:
                port = ports.get(spec["tcpSocket"]["port"], spec["tcpSocket"]["port"])
                with socket.create_connection((rec.ip, int(port)), timeout=timeout):
                    return True
            if "exec" in spec:
                run = subprocess.run(
                    spec["exec"]["command"], timeout=timeout, capture_output=True, cwd=rec.dir
                )
                return run.returncode == 0
        except (httpx.HTTPError, OSError, subprocess.TimeoutExpired):
            return False
        return False  # grpc probes are not supported: never ready, never silently passed

    def run_probes(self, rec: PodRecord, c: Container) -> None:
        """Readiness and liveness, each on its own period; no readiness probe means ready once running."""
        now = time.monotonic()
        if c.proc is None:
            return
        ready_spec, live_spec = c.spec.get("readinessProbe"), c.spec.get("livenessProbe")
        if ready_spec is None:
            c.ready = True
        elif now >= c.next_ready_probe:
            c.next_ready_probe = now + float(ready_spec.get("periodSeconds", 10))
            if self.probe(ready_spec, rec, c):
                c.probe_ok, c.probe_fail = c.probe_ok + 1, 0
                c.ready = c.ready or c.probe_ok >= int(ready_spec.get("successThreshold", 1))
            else:
                c.probe_ok, c.probe_fail = 0, c.probe_fail + 1
                c.ready = c.ready and c.probe_fail < int(ready_spec.get("failureThreshold", 3))
        if live_spec is not None and now >= c.next_live_probe:
            c.next_live_probe = now + float(live_spec.get("periodSeconds", 10))
            c.live_fail = 0 if self.probe(live_spec, rec, c) else c.live_fail + 1
            if c.live_fail >= int(live_spec.get("failureThreshold", 3)):
                print(f"liveness failed {rec.namespace}/{rec.name}/{c.spec['name']}", flush=True)
                self.terminate(rec, c, float(live_spec.get("terminationGracePeriodSeconds", rec.grace)))

    def sync(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        rec = self.pods.get(meta["uid"])
        if rec is None:
            if pod["status"].get("phase") in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
                if meta.get("deletionTimestamp"):
                    self.delete_pod(meta)
                return
            rec = self.pods[meta["uid"]] = self.admit(pod)
        if meta.get("deletionTimestamp") and not rec.terminating:
            rec.terminating = True
            grace = meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds", 30))
            print(f"killing {rec.namespace}/{rec.name} (grace {grace}s)", flush=True)
            for c in rec.containers:
                self.terminate(rec, c, float(grace))
        policy = spec.get("restartPolicy", "Always")
        for c in rec.containers:
            self.after_pre_stop(c)
            if c.proc is not None and c.kill_at is not None and time.monotonic() >= c.kill_at:
                procs.signal_group(c.proc.pid, signal.SIGKILL)
            if c.proc is not None and c.proc.poll() is not None:
                self.reap(rec, c, policy)
            waiting = c.waiting[0] in RETRIED
            due = waiting and time.monotonic() >= c.backoff_until
            if not rec.terminating and c.proc is None and c.final is None and due:
                if c.last_terminated is not None:
                    c.restarts += 1
                self.start_container(pod, rec, c)
            self.run_probes(rec, c)  # also while terminating: a draining worker turns itself unready
        if rec.terminating and all(c.proc is None for c in rec.containers):
            self.delete_pod(meta)
            del self.pods[rec.uid]
            return
        self.report(pod, rec)

    def delete_pod(self, meta: Obj) -> None:
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        try:
            self.api.call("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        except RuntimeError as exc:  # 409: a newer pod took the name; ours is gone already
            print(f"delete {meta['namespace']}/{meta['name']}: {exc}", flush=True)
        print(f"deleted {meta['namespace']}/{meta['name']}", flush=True)

    def forget(self, uid: str) -> None:
        """The pod vanished from the API (force-deleted): kill its processes now."""
        rec = self.pods[uid]
        for c in rec.containers:
            if c.pre_stop is not None:
                procs.stop(c.pre_stop.pid, grace=0, proc=c.pre_stop)
            if c.proc is not None:
                procs.stop(c.proc.pid, grace=0, proc=c.proc)
        del self.pods[uid]
        print(f"forgot {rec.namespace}/{rec.name}", flush=True)

    # --- status -----------------------------------------------------------------------------

    def container_status(self, c: Container) -> Obj:
        if c.proc is not None:
            state: Obj = {"running": {"startedAt": c.started_at}}
        elif c.final is not None:
            state = {"terminated": c.final}
        else:
            state = {
                "waiting": {"reason": c.waiting[0], **({"message": c.waiting[1]} if c.waiting[1] else {})}
            }
        status: Obj = {
            "name": c.spec["name"],
            "image": c.spec.get("image", ""),
            "imageID": "",
            "ready": c.ready,
            "started": c.proc is not None,
            "restartCount": c.restarts,
            "state": state,
            "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
        }
        if c.proc is not None:
            status["containerID"] = f"process://{c.proc.pid}"
        return status

    def condition(self, rec: PodRecord, kind: str, ok: bool) -> Obj:
        value = "True" if ok else "False"
        if rec.transitions.get(kind, ("", ""))[0] != value:
            rec.transitions[kind] = (value, now_iso())
        return {"type": kind, "status": value, "lastTransitionTime": rec.transitions[kind][1]}

    def report(self, pod: Obj, rec: PodRecord) -> None:
        finals = [c.final for c in rec.containers]
        if all(finals):
            phase = "Succeeded" if all(f["exitCode"] == 0 for f in finals if f) else "Failed"
        elif any(c.started_at for c in rec.containers):
            phase = "Running"
        else:
            phase = "Pending"
        ready = all(c.ready for c in rec.containers)
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": rec.ip,
            "podIPs": [{"ip": rec.ip}],
            "startTime": rec.start_time,
            "conditions": [
                self.condition(rec, "PodScheduled", True),
                self.condition(rec, "Initialized", True),
                self.condition(rec, "ContainersReady", ready),
                self.condition(rec, "Ready", ready),
            ],
            "containerStatuses": [self.container_status(c) for c in rec.containers],
        }
        if status == rec.last_status:
            return
        path = f"/api/v1/namespaces/{rec.namespace}/pods/{rec.name}/status"
        body = {"metadata": {"uid": rec.uid}, "status": status}
        if self.api.call("PATCH", path, body, "strategic-merge-patch") is not None:
            rec.last_status = status

    # --- main loop --------------------------------------------------------------------------

    def step(self) -> None:
        pods = self.api.call("GET", "/api/v1/pods") or {"items": []}
        items = pods["items"]
        self.bind_pending(items)
        mine = {p["metadata"]["uid"]: p for p in items if p["spec"].get("nodeName") == self.node}
        for uid in [u for u in self.pods if u not in mine]:
            self.forget(uid)
        for pod in mine.values():
            try:
                self.sync(pod)
            except Exception:  # one broken pod must not take the node down; its status shows it stuck
                print(f"sync {pod['metadata']['name']} failed:\n{traceback.format_exc()}", flush=True)
        if time.monotonic() - self.last_heartbeat > HEARTBEAT_S:
            self.heartbeat()

    def run(self) -> None:
        self.register()
        print(f"node {self.node} registered", flush=True)
        while not self.stopping:
            try:
                self.step()
            except (RuntimeError, httpx.HTTPError) as exc:  # API hiccup: retry on the next tick
                print(f"step failed: {exc}", flush=True)
            time.sleep(LOOP_S)
        self.shutdown()

    def shutdown(self) -> None:
        """Stop every pod process (SIGTERM, then SIGKILL after 10 s); the API objects stay, as with a kubelet."""
        running = [c for rec in self.pods.values() for c in rec.containers if c.proc is not None]
        for c in running:
            procs.signal_group(c.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        for c in running:
            procs.stop(c.proc.pid, grace=10, proc=c.proc)  # type: ignore[union-attr]
        print("kubelet stopped", flush=True)


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined names are substituted, $$ escapes, the rest stays."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
        lambda m: env.get(m.group(1), m.group(0)) if m.group(1) else "$",
        text,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--node-name", default="goodput-node")
    parser.add_argument("--cpu", default="64")
    parser.add_argument("--memory", default="256Gi")
    parser.add_argument("--gpus", default="8")
    parser.add_argument("--max-pods", default="110")
    parser.add_argument("--label", action="append", default=[], help="extra node label k=v (repeatable)")
    parser.add_argument(
        "--pod-subnet",
        type=ipaddress.IPv4Network,
        default=ipaddress.IPv4Network("127.0.0.0/24"),
        help="loopback range for pod IPs; stacks running side by side each get their own",
    )
    args = parser.parse_args()
    capacity = {"cpu": args.cpu, "memory": args.memory, "nvidia.com/gpu": args.gpus, "pods": args.max_pods}
    labels = dict(item.split("=", 1) for item in args.label)
    kubelet = Kubelet(Api(args.kubeconfig), args.state_dir, args.node_name, capacity, labels, args.pod_subnet)

    def stop(signum: int, frame: object) -> None:
        kubelet.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    kubelet.run()


if __name__ == "__main__":
    main()

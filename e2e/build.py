"""Build the real cluster binaries from the Go module proxy, once, into a cache outside the repo.

The control plane, the node's kubelet and kube-proxy, kubectl, etcd and Prometheus.

The versions come from the go.mod files in e2e/cluster/ (the single source of truth); binaries are
cached under ``$GOODPUT_CACHE`` (default ``~/.cache/goodput``) keyed by version and rebuilt only
when missing. Run ``python -m e2e.build`` to build ahead of time and watch the progress.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CLUSTER_MODULE = Path(__file__).resolve().parent / "cluster"
ETCD_MODULE = CLUSTER_MODULE / "etcd"
PROMETHEUS_MODULE = CLUSTER_MODULE / "prometheus"
CRICTL_MODULE = CLUSTER_MODULE / "crictl"
CACHE_ROOT = Path(os.environ.get("GOODPUT_CACHE", Path.home() / ".cache" / "goodput"))


@dataclass(frozen=True)
class Target:
    """One binary: where its main package lives and what /version must say."""

    name: str
    kind: str  # cache family: k8s, etcd, prometheus or crictl
    module_dir: Path
    package: str
    version: str
    ldflags: str
    tags: str = ""

    @property
    def path(self) -> Path:
        return CACHE_ROOT / self.kind / self.version / "bin" / self.name


def required_version(module_dir: Path, module: str) -> str:
    """The version go.mod requires for ``module``."""
    text = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"{module_dir}/go.mod does not require {module}")
    return match.group(1)


def kube_version() -> str:
    return required_version(CLUSTER_MODULE, "k8s.io/kubernetes")


def etcd_version() -> str:
    return required_version(ETCD_MODULE, "go.etcd.io/etcd/server/v3")


def crictl_version() -> str:
    return required_version(CRICTL_MODULE, "sigs.k8s.io/cri-tools")


def prometheus_version() -> str:
    """Prometheus 3.13.5 is published as Go module v0.313.5."""
    minor_major, patch = required_version(PROMETHEUS_MODULE, "github.com/prometheus/prometheus").split(".")[
        1:
    ]
    return f"v{int(minor_major) // 100}.{int(minor_major) % 100}.{patch}"


def prometheus_ldflags(version: str) -> str:
    """What Prometheus's .promu.yml stamps, so `prometheus --version` and buildinfo report the release."""
    pkg = "github.com/prometheus/common/version"
    date = datetime.now(UTC).strftime("%Y%m%d-%H:%M:%S")
    return f"-X {pkg}.Version={version.lstrip('v')} -X {pkg}.Branch=HEAD -X {pkg}.BuildDate={date}"


def kube_ldflags(version: str) -> str:
    """What hack/lib/version.sh stamps, so /version and `kubectl version` report the release."""
    major, minor = version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    pkgs = ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
    return " ".join(f"-X {pkg}.{key}={val}" for pkg in pkgs for key, val in values.items())


def targets() -> list[Target]:
    kube = kube_version()
    flags = kube_ldflags(kube)
    cmd = "k8s.io/kubernetes/cmd/"
    prom = prometheus_version()
    return [
        Target("etcd", "etcd", ETCD_MODULE, "go.etcd.io/etcd/server/v3", etcd_version(), ""),
        Target("kube-apiserver", "k8s", CLUSTER_MODULE, cmd + "kube-apiserver", kube, flags),
        Target(
            "kube-controller-manager", "k8s", CLUSTER_MODULE, cmd + "kube-controller-manager", kube, flags
        ),
        Target("kubectl", "k8s", CLUSTER_MODULE, cmd + "kubectl", kube, flags),
        Target("kube-scheduler", "k8s", CLUSTER_MODULE, cmd + "kube-scheduler", kube, flags),
        Target("kubelet", "k8s", CLUSTER_MODULE, cmd + "kubelet", kube, flags),
        Target("kube-proxy", "k8s", CLUSTER_MODULE, cmd + "kube-proxy", kube, flags),
        Target(
            "prometheus",
            "prometheus",
            PROMETHEUS_MODULE,
            "github.com/prometheus/prometheus/cmd/prometheus",
            prom,
            prometheus_ldflags(prom),
            tags="remove_all_sd,enable_kubernetes_sd",
        ),
        Target(
            "crictl",
            "crictl",
            CRICTL_MODULE,
            "sigs.k8s.io/cri-tools/cmd/crictl",
            crictl_version(),
            f"-X sigs.k8s.io/cri-tools/pkg/version.Version={crictl_version()}",
        ),
    ]


def log(message: str) -> None:
    print(f"[e2e.build] {message}", file=sys.stderr, flush=True)


def go_build(target: Target) -> None:
    """`go build -v` into a temp name, printing a progress line every 100 packages, then rename."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("`go` is not on PATH: install Go >= 1.24 to build the local control plane")
    target.path.parent.mkdir(parents=True, exist_ok=True)
    partial = target.path.with_suffix(".partial")
    cmd = [go, "build", "-p", str(os.cpu_count() or 2), "-v", "-trimpath", "-tags", target.tags]
    cmd += ["-ldflags", f"-s -w {target.ldflags}".strip(), "-o", str(partial), target.package]
    env = {**os.environ, "GOFLAGS": f"{os.environ.get('GOFLAGS', '')} -mod=mod".strip(), "CGO_ENABLED": "0"}
    log(f"building {target.name} {target.version} -> {target.path}")
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=target.module_dir, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    packages, tail = 0, []
    for line in proc.stderr:
        packages += 1
        tail = [*tail[-30:], line.rstrip()]
        if packages % 100 == 0:
            log(f"  {target.name}: {packages} packages, {time.monotonic() - start:.0f}s")
    if proc.wait() != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"go build {target.package} failed:\n" + "\n".join(tail))
    partial.rename(target.path)
    log(f"built {target.name} in {time.monotonic() - start:.0f}s ({packages} packages)")


def ensure_binaries() -> dict[str, Path]:
    """Paths of the binaries, building the missing ones (under a lock: one builder)."""
    wanted = targets()
    missing = [t for t in wanted if not t.path.exists()]
    if missing:
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        with open(CACHE_ROOT / "build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for target in missing:
                if not target.path.exists():
                    go_build(target)
    return {t.name: t.path for t in wanted}


def main() -> None:
    start = time.monotonic()
    for name, path in ensure_binaries().items():
        print(f"{name}: {path}")
    log(f"all binaries present after {time.monotonic() - start:.0f}s")


if __name__ == "__main__":
    main()

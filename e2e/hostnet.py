"""The host state a real node changes, captured before it starts and put back after it stops.

The node's bridge and address ranges come from 198.18.0.0/15 (reserved for benchmarking, never a real
network): pods in 198.18.N.0/24, Services in 198.19.N.0/24, one N per stack. The kubelet, kube-proxy and the
CNI plugins change sysctls, iptables rules and nftables tables, and containerd adds network namespaces and
mounts: :func:`snapshot` records them, :func:`restore` puts them back, :func:`differences` names what is off.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

# What the stack sets (ip_forward, br_netfilter) and what the kubelet and kube-proxy set on their own.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
TABLES = ("filter", "nat", "mangle", "raw")
NETNS = Path("/var/run/netns")


@dataclass(frozen=True)
class NodeNetwork:
    """One stack's addresses: N picks the /24s and names the bridge."""

    index: int

    @property
    def bridge(self) -> str:
        return f"goodput{self.index}"

    @property
    def pod_cidr(self) -> str:
        return f"198.18.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address: the node's InternalIP, where the API server and Prometheus listen."""
        return f"198.18.{self.index}.1"

    @property
    def service_cidr(self) -> str:
        return f"198.19.{self.index}.0/24"


def sh(*argv: str, stdin: str | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in sh("ip", "-o", "link").splitlines()}


def choose_network() -> NodeNetwork:
    """A free N: no bridge of that name exists (another stack's)."""
    taken = links()
    free = [n for n in range(1, 255) if f"goodput{n}" not in taken]
    return NodeNetwork(random.SystemRandom().choice(free))


def create_bridge(net: NodeNetwork) -> None:
    """The bridge the CNI plugin attaches pods to, up with the gateway address, before anything listens."""
    sh("ip", "link", "add", "name", net.bridge, "type", "bridge")
    sh("ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge)
    sh("ip", "link", "set", net.bridge, "up")


def delete_bridge(net: NodeNetwork) -> None:
    if net.bridge in links():
        sh("ip", "link", "delete", net.bridge)


def read_sysctl(name: str) -> str | None:
    path = Path("/proc/sys") / name
    return path.read_text().strip() if path.exists() else None


def write_sysctl(name: str, value: str) -> None:
    (Path("/proc/sys") / name).write_text(value + "\n")


def rules(table: str) -> list[str]:
    """``iptables -S`` of one table: chain declarations (-N/-P) and rules (-A), in order."""
    return sh("iptables", "-t", table, "-S").splitlines()


def nft_tables() -> list[str]:
    return [line.removeprefix("table ") for line in sh("nft", "list", "tables").splitlines()]


def netns() -> list[str]:
    return sorted(p.name for p in NETNS.iterdir()) if NETNS.exists() else []


def snapshot() -> dict[str, object]:
    """Everything :func:`restore` puts back, as JSON-ready data (kept in stack.json)."""
    return {
        "sysctls": {name: read_sysctl(name) for name in SYSCTLS},
        "iptables": {table: rules(table) for table in TABLES},
        "nft": nft_tables(),
        "netns": netns(),
        "netns_dir": NETNS.exists(),
    }


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below any of ``roots``, deepest first (the order to unmount them)."""
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return sorted(points, key=lambda p: -p.count("/"))


def unmount_under(*roots: Path) -> None:
    for point in mounts_under(*roots):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def restore(before: dict[str, object]) -> None:
    """Undo what the node added: rules and chains, nftables tables, network namespaces, sysctls."""
    saved_rules: dict[str, list[str]] = before["iptables"]  # type: ignore[assignment]
    for table in TABLES:
        old = set(saved_rules[table])
        added = [r for r in rules(table) if r not in old]
        for rule in reversed([r for r in added if r.startswith("-A ")]):
            subprocess.run(
                ["iptables", "-t", table, "-D", *rule.split()[1:]], capture_output=True, check=False
            )
        for chain in [r.split()[1] for r in added if r.startswith("-N ")]:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True, check=False)
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True, check=False)
    for table in nft_tables():
        if table not in before["nft"]:  # type: ignore[operator]
            subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True, check=False)
    for name in netns():
        if name not in before["netns"]:  # type: ignore[operator]
            subprocess.run(["umount", "-l", str(NETNS / name)], capture_output=True, check=False)
            (NETNS / name).unlink(missing_ok=True)
    if not before["netns_dir"] and NETNS.exists() and not any(NETNS.iterdir()):
        NETNS.rmdir()
    for name, value in before["sysctls"].items():  # type: ignore[attr-defined]
        if value is not None and read_sysctl(name) != value:
            write_sysctl(name, value)


def differences(before: dict[str, object]) -> list[str]:
    """What differs from the snapshot: each item names one leftover."""
    found = [
        f"sysctl {name}={read_sysctl(name)} (was {value})"
        for name, value in before["sysctls"].items()  # type: ignore[attr-defined]
        if read_sysctl(name) != value
    ]
    saved_rules: dict[str, list[str]] = before["iptables"]  # type: ignore[assignment]
    for table in TABLES:
        found += [f"iptables -t {table} {r}" for r in rules(table) if r not in set(saved_rules[table])]
    found += [f"nftables table {t}" for t in nft_tables() if t not in before["nft"]]  # type: ignore[operator]
    found += [f"network namespace {n}" for n in netns() if n not in before["netns"]]  # type: ignore[operator]
    return found

"""``python -m e2e.cluster up|down|env``: the local stack from a shell.

``up`` builds the binaries and images if missing, starts etcd, kube-apiserver, kube-controller-manager, the
node (containerd + kubelet + kube-proxy, unless ``--no-node``) and Prometheus (and,
with ``--with-operator``, installs goodput), and leaves them running; ``env`` prints the exports to use
it (``eval "$(python -m e2e.cluster env)"``); ``down`` stops everything and removes the state dir.
The running stack is found through ``$GOODPUT_CACHE/current-stack`` (it holds the state dir path).
(The Go module that builds the binaries lives in the e2e/cluster/ directory next to this file.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from e2e import build, procs
from e2e.stack import Stack, start_stack, stop_stack

POINTER = build.CACHE_ROOT / "current-stack"


def current() -> Stack | None:
    if not POINTER.exists():
        return None
    state_dir = Path(POINTER.read_text().strip())
    if not (state_dir / "stack.json").exists():
        POINTER.unlink()
        return None
    return Stack.load(state_dir)


def up(args: argparse.Namespace) -> None:
    running = current()
    if running and any(procs.alive(pid) for pid in running.pids.values()):
        sys.exit(f"a stack is already running in {running.state_dir}; run `python -m e2e.cluster down` first")
    stack = start_stack(node=not args.no_node, with_prometheus=not args.no_prometheus, tied=False)
    POINTER.parent.mkdir(parents=True, exist_ok=True)
    POINTER.write_text(str(stack.state_dir))
    print(f"stack {stack.version} up in {stack.start_seconds:.1f}s: {stack.server}", file=sys.stderr)
    print(f"state dir {stack.state_dir}; logs in {stack.state_dir / 'logs'}", file=sys.stderr)
    if args.with_operator:
        from e2e import operator

        operator.install(stack)
        pod = operator.wait_ready(stack)
        print(f"goodput operator running as pod {operator.NAMESPACE}/{pod}", file=sys.stderr)
    env(args)


def down(args: argparse.Namespace) -> None:
    stack = current()
    if stack is None:
        print("no stack running", file=sys.stderr)
        return
    stop_stack(stack)
    POINTER.unlink(missing_ok=True)
    print(f"stack in {stack.state_dir} stopped", file=sys.stderr)


def env(args: argparse.Namespace) -> None:
    stack = current()
    if stack is None:
        sys.exit("no stack running: `python -m e2e.cluster up`")
    print(f"export KUBECONFIG={stack.kubeconfig}")
    kubectl = next(t.path for t in build.targets() if t.name == "kubectl")
    print(f"export PATH={kubectl.parent}:$PATH")
    if stack.prometheus_url:
        print(f"export GOODPUT_PROMETHEUS_URL={stack.prometheus_url}")
        print(f"export GOODPUT_OPERATOR_PROMETHEUS_URL={stack.prometheus_url}")  # what the operator reads


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the stack and leave it running")
    p_up.add_argument("--no-node", action="store_true", help="the control plane alone, on loopback")
    p_up.add_argument("--no-prometheus", action="store_true")
    p_up.add_argument(
        "--with-operator",
        action="store_true",
        help="install goodput from manifests/ under its own ServiceAccount",
    )
    sub.add_parser("down", help="stop the stack and remove its state")
    sub.add_parser("env", help="print shell exports for the running stack")
    args = parser.parse_args()
    {"up": up, "down": down, "env": env}[args.command](args)


if __name__ == "__main__":
    main()

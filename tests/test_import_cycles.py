"""No import cycles among the project's modules, counting every import: at the top, inside functions and
under TYPE_CHECKING. A cycle means two modules cannot be understood (or changed) one without the other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("controllers", "crds", "policies", "router", "worker_image")  # installed as goodput.<folder>
PACKAGES = (*PRODUCT, "observability", "testkit")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(("goodput", *parts) if parts[0] in PRODUCT else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports; `from package import module` counts as importing the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out |= {
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            }
    return {m for m in out if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_finder_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    found = modules()
    known = set(found)
    graph = {name: imports(name, path, known) for name, path in found.items()}
    assert sum(len(edges) for edges in graph.values()) > 100  # the parser sees the project's imports
    assert cycles(graph) == []


# Who may import whom (docs/architecture.md, "Dependency rule"): each package's allowed project imports.
ALLOWED = {
    "goodput.crds": {"goodput.crds"},
    "goodput.policies": {
        "goodput.crds", "goodput.policies", "goodput.worker_image.contract", "goodput.worker_image.eviction",
    },
    "goodput.controllers": {
        "goodput.controllers", "goodput.crds", "goodput.policies", "goodput.worker_image.contract",
    },
    "observability": {"observability", "goodput.worker_image.contract"},
    "goodput.router": {"goodput.router", "goodput.policies", "goodput.worker_image.contract"},
    "goodput.worker_image": {"goodput.worker_image"},
}  # fmt: skip
# `goodput serve` starts the worker
WORKER_ENTRY = ("goodput.controllers.cli.serve", "goodput.worker_image.__main__")


def test_packages_import_only_what_the_dependency_rule_allows() -> None:
    found = modules()
    known = set(found)
    broken = []
    for name, path in found.items():
        package = next((p for p in ALLOWED if name == p or name.startswith(f"{p}.")), None)
        if package is None:
            continue
        for target in imports(name, path, known):
            allowed = any(target == a or target.startswith(f"{a}.") for a in ALLOWED[package])
            if not allowed and (name, target) != WORKER_ENTRY:
                broken.append(f"{name} -> {target}")
    assert broken == []

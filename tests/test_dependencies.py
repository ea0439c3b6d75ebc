"""pyproject.toml's dependency lists match what the code imports: nothing undeclared, nothing unused.

A product import must come from a main dependency (a fresh `pip install goodput` must run `goodput plan -f`
and the operator); tests, e2e and bench may also use the dev extra. Only a pytest plugin (loaded by entry
point) and the linter are declared without an import.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ["crds", "controllers", "policies", "worker_image", "router", "operator"]
TOOLING = ["tests", "e2e", "bench", "testkit", "observability"]  # test support and generators, not shipped
LOCAL = {"goodput", "e2e", "bench", "tests", "conftest", "testkit", "observability"}  # goodput: the product
NOT_IMPORTED = {"pytest-timeout", "ruff"}  # a pytest plugin loaded by entry point; the linter


def canonical(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonical(r) for r in project["dependencies"]}, {
        canonical(r) for r in project["optional-dependencies"]["dev"]
    }


def imports(folders: list[str]) -> set[str]:
    """Top-level third-party module names imported anywhere under ``folders``."""
    found: set[str] = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            if folder not in TOOLING and any(path.is_relative_to(REPO / t) for t in TOOLING):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in LOCAL}


def distributions(modules: set[str]) -> dict[str, set[str]]:
    providers = packages_distributions()
    return {m: {canonical(d) for d in providers.get(m, [])} for m in modules}


def with_requirements(names: set[str]) -> set[str]:
    """The declared distributions and what they themselves require (e.g. pydantic brings pydantic-core)."""
    return names | {canonical(r) for name in names for r in requires(name) or []}


def test_every_product_import_is_a_main_dependency() -> None:
    main, _ = declared()
    allowed = with_requirements(main)
    missing = {m: d for m, d in distributions(imports(PRODUCT)).items() if not d & allowed}
    assert not missing, f"imported by the product but not declared in [project] dependencies: {missing}"


def test_every_tooling_import_is_declared() -> None:
    main, dev = declared()
    allowed = with_requirements(main | dev)
    missing = {m: d for m, d in distributions(imports(TOOLING)).items() if not d & allowed}
    assert not missing, f"imported by tests, e2e or bench but not declared: {missing}"


def test_every_declared_dependency_is_imported() -> None:
    main, dev = declared()
    used = set().union(*distributions(imports(PRODUCT + TOOLING)).values())
    unused = (main | dev) - used - NOT_IMPORTED
    assert not unused, f"declared but never imported: {sorted(unused)}"


def test_the_worker_image_installs_every_worker_import() -> None:
    """The worker image pins its own list (its torch layer is cached apart): it must cover worker_image/."""
    dockerfile = (REPO / "worker_image" / "Dockerfile").read_text()
    installed = {canonical(r) for r in re.findall(r'"([A-Za-z0-9_.\-]+[<>=!~][^"]*)"', dockerfile)}
    allowed = with_requirements(installed)
    missing = {m: d for m, d in distributions(imports(["worker_image"])).items() if not d & allowed}
    assert not missing, f"imported by worker_image/ but not installed by its Dockerfile: {missing}"

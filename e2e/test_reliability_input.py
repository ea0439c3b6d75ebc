"""Bad input against the real API server: hypothesis mutates valid InferenceService and SLOPolicy manifests
and sends each one to kube-apiserver (server-side dry run, so nothing is stored).

The API server (structural schema + CEL rules of the shipped CRDs) and `crds.validation.validate_manifest`
(our Python mirror, used by `goodput plan -f` and the tests) must give the same verdict; a rejection must
name the field; whatever the API server accepts must load into the pydantic models the operator uses.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client import CustomObjectsApi
from pydantic import ValidationError

from e2e.stack import REPO, Stack
from goodput.crds.common import GROUP, VERSION
from goodput.crds.generate import all_crds
from goodput.crds.inferenceservice import InferenceService
from goodput.crds.slopolicy import SLOPolicy
from goodput.crds.validation import validate_manifest

pytestmark = pytest.mark.e2e

NAMESPACE = "default"
EXAMPLES = REPO / "manifests" / "examples"
CRDS = REPO / "manifests" / "crds"
MAX_JSON_INT = 2**53  # exact in both Go's float64 decoding and JSON


@dataclass
class Tally:
    """What the property tests sent, for bench/reliability.py (written when RELIABILITY_TALLY is set)."""

    sent: int = 0
    rejected: int = 0
    accepted: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


TALLY = Tally()


@pytest.fixture(scope="module")
def custom(cluster: Stack) -> Iterator[CustomObjectsApi]:
    """The CRDs from manifests/crds applied (server-side, as `goodput` installs them) and Established."""
    for args in (
        ("apply", "--server-side", "-f", str(CRDS)),
        ("wait", "--for=condition=Established", "crd", "--all", "--timeout=30s"),
    ):
        result = cluster.kubectl(*args)
        assert result.returncode == 0, result.stderr
    with cluster.api_client() as client:
        yield CustomObjectsApi(client)


def _schema(kind: str) -> dict[str, Any]:
    crd = next(c for c in all_crds().values() if c["spec"]["names"]["kind"] == kind)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def leaf_paths(
    schema: dict[str, Any], prefix: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], dict]]:
    """Every field under `schema` with its sub-schema; lists are entered at index 0."""
    out: list[tuple[tuple[str | int, ...], dict]] = [(prefix, schema)]
    if "properties" in schema:
        for name, sub in schema["properties"].items():
            out += leaf_paths(sub, (*prefix, name))
    elif schema.get("type") == "array" and "properties" in schema.get("items", {}):
        out += leaf_paths(schema["items"], (*prefix, 0))
    return out


PATHS = {kind: leaf_paths(_schema(kind), ("spec",)) for kind in ("InferenceService", "SLOPolicy")}

ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_JSON_INT, MAX_JSON_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def typed_value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the field's own type, concentrated on its bounds and enums (where verdicts flip)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | st.text(max_size=10)
    kind = schema.get("type")
    if kind in ("integer", "number"):
        edges = [schema[k] for k in ("minimum", "maximum") if k in schema]
        near = [e + d for e in edges for d in (-1, 0, 1)] + [0, 1, -1]
        if kind == "integer":
            return st.sampled_from([int(v) for v in near]) | st.integers(-(10**6), 10**6)
        return st.sampled_from([float(v) for v in near]) | st.floats(-1e6, 1e6) | st.sampled_from(near)
    if kind == "string":
        length = schema.get("maxLength", 20)
        return st.sampled_from(["", "x", "x" * length, "x" * (length + 1)]) | st.text(max_size=12)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(ANY_JSON, max_size=2)
    return st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=2)


@st.composite
def mutation(draw: st.DrawFn, kind: str) -> tuple[str, tuple[str | int, ...], Any]:
    path, schema = draw(st.sampled_from(PATHS[kind]))
    op = draw(st.sampled_from(["typed", "typed", "typed", "any", "delete", "unknown"]))
    if op == "typed":
        return "set", path, draw(typed_value(schema))
    if op == "any":
        return "set", path, draw(ANY_JSON)
    if op == "unknown":
        return "set", (*path[:-1], "unknownField"), draw(ANY_JSON)
    return "delete", path, None


def apply(obj: dict[str, Any], op: str, path: tuple[str | int, ...], value: Any) -> None:
    """Set or delete `path` in `obj`, creating missing objects on the way (a set reaches any field)."""
    node: Any = obj
    for step in path[:-1]:
        if isinstance(step, int):
            if not isinstance(node, list) or not node:
                return
            node = node[0]
        else:
            if not isinstance(node, dict):
                return
            if not isinstance(node.get(step), dict | list):
                node[step] = {}
            node = node[step]
    last = path[-1]
    if isinstance(last, int) or not isinstance(node, dict):
        return
    if op == "delete":
        node.pop(last, None)
    else:
        node[last] = copy.deepcopy(value)


def base(kind: str) -> dict[str, Any]:
    if kind == "SLOPolicy":
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SLOPolicy",
            "metadata": {"name": "fuzz"},
            "spec": {"headroom": 0.2, "tierBatchWindows": {"batch": {"minMs": 20, "maxMs": 40}}},
        }
    service = yaml.safe_load((EXAMPLES / "tiny-cpu.yaml").read_text())
    service["metadata"] = {"name": "fuzz", "namespace": NAMESPACE}
    service["spec"]["worker"] = {"apiKeySecret": {"name": "keys", "key": "api-key"}}
    return service


def dry_run_create(custom: CustomObjectsApi, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the object the API server would store, "") or (None, its rejection message)."""
    obj = {**obj, "metadata": {**obj["metadata"], "name": f"fuzz-{uuid.uuid4().hex[:8]}"}}
    try:
        if obj["kind"] == "SLOPolicy":
            stored = custom.create_cluster_custom_object(GROUP, VERSION, "slopolicies", obj, dry_run="All")
        else:
            stored = custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "inferenceservices", obj, dry_run="All"
            )
    except kubernetes.client.ApiException as error:
        assert error.status in (400, 422), f"{error.status}: {error.body}"
        return None, json.loads(error.body)["message"]
    return stored, ""


def names_field(message: str, dotted: str) -> bool:
    """The API server prints `spec.a.b[0].c: ...`; ours is the same dotted path."""
    return f"{dotted}:" in message or f"{dotted} " in message


def check_verdicts_agree(custom: CustomObjectsApi, obj: dict[str, Any]) -> None:
    ours = validate_manifest(obj)
    stored, message = dry_run_create(custom, obj)
    TALLY.sent += 1
    TALLY.kinds[obj["kind"]] = TALLY.kinds.get(obj["kind"], 0) + 1
    manifest = json.dumps(obj, sort_keys=True)
    if stored is None:
        TALLY.rejected += 1
        assert ours, f"the API server rejected what validate_manifest accepts:\n{message}\n{manifest}"
        assert any(names_field(message, e.field) for e in ours), (
            f"the rejection names none of {[e.field for e in ours]}:\n{message}\n{manifest}"
        )
        return
    TALLY.accepted += 1
    assert not ours, f"the API server accepted what validate_manifest rejects: {ours}\n{manifest}"
    model = SLOPolicy if obj["kind"] == "SLOPolicy" else InferenceService
    try:
        model.model_validate(stored)
    except ValidationError as error:
        pytest.fail(f"the API server stored what the operator cannot load: {error}\n{json.dumps(stored)}")


# The same examples on every run, so CI verdicts repeat; GOODPUT_FUZZ_RANDOM=1 explores new ones.
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,
    derandomize=os.environ.get("GOODPUT_FUZZ_RANDOM") != "1",
)


@pytest.mark.parametrize("kind", ["InferenceService", "SLOPolicy"])
def test_base_manifests_are_accepted(custom: CustomObjectsApi, kind: str) -> None:
    obj = base(kind)
    assert validate_manifest(obj) == []
    stored, message = dry_run_create(custom, obj)
    assert stored is not None, message


def mutated(kind: str, mutations: list) -> dict[str, Any]:
    """The valid base object of `kind` with each (op, path, value) mutation applied in turn."""
    obj = base(kind)
    for op, path, value in mutations:
        apply(obj, op, path, value)
    return obj


@FUZZ
@given(mutations=st.lists(mutation("InferenceService"), min_size=1, max_size=3))
def test_mutated_services_get_one_verdict(custom: CustomObjectsApi, mutations: list) -> None:
    check_verdicts_agree(custom, mutated("InferenceService", mutations))


@FUZZ
@given(mutations=st.lists(mutation("SLOPolicy"), min_size=1, max_size=3))
def test_mutated_policies_get_one_verdict(custom: CustomObjectsApi, mutations: list) -> None:
    check_verdicts_agree(custom, mutated("SLOPolicy", mutations))

"""The Grafana dashboard: a datasource variable every panel uses, and PromQL that a real Prometheus accepts."""

from __future__ import annotations

import json
import re
from types import ModuleType
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from goodput.controllers.metrics import REGISTRY
from goodput.worker_image.metrics import WorkerMetrics

# What Grafana substitutes before a query reaches Prometheus; a multi-value "All" becomes the allValue ".*".
VARIABLES = {"$namespace": ".*", "$inferenceservice": ".*", "$__rate_interval": "1m"}


def load(observability: ModuleType) -> dict[str, Any]:
    return json.loads(observability.DASHBOARD_FILE.read_text())


def expressions(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets, annotations, variable queries."""
    found = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    found += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
            assert match, var["query"]
            found.append(match.group(1))
    return found


def substituted(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr.replace('"$1"', ""), f"unknown variable left in {expr}"
    return expr


def test_datasource_variable_is_prometheus(observability: ModuleType) -> None:
    variables = {v["name"]: v for v in load(observability)["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "inferenceservice"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_panel_and_query_uses_the_datasource_variable(observability: ModuleType) -> None:
    board = load(observability)
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    assert board["panels"]
    for panel in board["panels"]:
        assert panel["datasource"] == wanted, panel["title"]
        for query in panel.get("targets", []):
            assert query["datasource"] == wanted, panel["title"]
    for annotation in board["annotations"]["list"]:
        assert annotation["datasource"] == wanted


def test_each_service_gets_its_panels(observability: ModuleType) -> None:
    """A row repeated per InferenceService holds the panels on-call reads for one service."""
    board = load(observability)
    rows = [p for p in board["panels"] if p["type"] == "row"]
    repeated = [r for r in rows if r.get("repeat") == "inferenceservice"]
    assert len(repeated) == 1
    start = board["panels"].index(repeated[0])
    titles = [p["title"] for p in board["panels"][start + 1 :] if p["type"] != "row"]
    for wanted in ("TTFT p95 vs SLO", "TPOT p95 vs SLO", "Requests per second", "Replicas per tier"):
        assert wanted in titles
    for wanted in ("KV cache usage", "Queue depth", "Decisions", "Error-budget burn rate"):
        assert wanted in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Series names a registry exposes, also for labelled metrics that have no children yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {f.name + suffix for f in registry.collect() for suffix in suffixes.get(f.type, ("",))}


def test_metric_names_exist(observability: ModuleType) -> None:
    """Every series the dashboard reads is exported by the worker, recorded by our rules, or the operator's."""
    worker = WorkerMetrics("m", max_model_len=128)
    exported = exported_names(worker.registry)
    recorded = {r["record"] for g in observability.rule_groups() for r in g["rules"] if "record" in r}
    operator = exported_names(REGISTRY) | {
        observability.PLAN_REPLICAS,
        *(sli.target_gauge for sli in observability.SLIS),
    }
    known = exported | recorded | operator | {"up"}
    for expr in expressions(load(observability)):
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
            if ":" in name or name.startswith(("goodput", "vllm")):
                assert name in known, f"{name} in {expr}"


@pytest.mark.prometheus
def test_every_expression_parses_in_prometheus(observability: ModuleType, prometheus: str) -> None:
    exprs = expressions(load(observability))
    assert len(exprs) > 20
    with httpx.Client(base_url=prometheus, timeout=10) as client:
        for expr in exprs:
            reply = client.get("/api/v1/query", params={"query": substituted(expr)})
            body = reply.json()
            assert body["status"] == "success", f"{expr}: {body.get('error')}"


@pytest.mark.prometheus
def test_prometheus_loads_every_rule_group(observability: ModuleType, prometheus: str) -> None:
    body = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()
    loaded = {g["name"]: len(g["rules"]) for g in body["data"]["groups"]}
    assert loaded == {g["name"]: len(g["rules"]) for g in observability.rule_groups()}

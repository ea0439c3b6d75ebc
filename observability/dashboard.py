"""The Grafana dashboard: per-service panels on the recorded SLIs, fleet panels on the operator's own series."""

from __future__ import annotations

from typing import Any

from goodput.worker_image import contract as c
from observability.slis import (
    DECISIONS,
    PLANNED,
    POLL_DURATION,
    PROMETHEUS_UP,
    RECONCILE_ERRORS,
    SERVICE,
    SERVICES_MANAGED,
    SLIS,
    SUCCESS,
    TARGET,
    Sli,
    service_namespace,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTED = 'namespace=~"$namespace", inferenceservice=~"$inferenceservice"'


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend, "range": True}


def dashed_red(regex: str) -> dict[str, Any]:
    """An override that draws the matching series (the SLO lines) as dashed red references."""
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    overrides: list[dict[str, Any]] | None = None,
    bars: bool = False,
    thresholds: tuple[float, ...] = (),
) -> dict[str, Any]:
    """A time series panel; `thresholds` are drawn as dashed lines, coloured by how alarming they are."""
    custom: dict[str, Any] = {"drawStyle": "bars" if bars else "line", "fillOpacity": 30 if bars else 8}
    defaults: dict[str, Any] = {"unit": unit, "custom": custom}
    if thresholds:
        colours = ("yellow", "orange", "red")[-len(thresholds) :]
        steps = [{"color": "green", "value": None}]
        steps += [{"color": c, "value": v} for c, v in zip(colours, thresholds, strict=True)]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        custom["thresholdsStyle"] = {"mode": "dashed"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(queries)],
    }


def latency_panel(sli: Sli) -> dict[str, Any]:
    def quantile(q: str) -> str:
        return (
            f"histogram_quantile(0.{q}, sum by (namespace, le) "
            f"(rate({sli.histogram}_bucket{{{SELECTED}}}[$__rate_interval])))"
        )

    return timeseries(
        f"{sli.title} p95 vs SLO",
        f"Observed {sli.title} percentiles over all tiers (from `{sli.histogram}`), and the SLO targets the "
        "operator exports (dashed red).",
        "s",
        [
            (quantile("95"), "p95 {{namespace}}"),
            (quantile("99"), "p99 {{namespace}}"),
            (
                f"max by (namespace, percentile) ({sli.target}{{{SELECTED}}})",
                "SLO p{{percentile}} {{namespace}}",
            ),
        ],
        overrides=[dashed_red("SLO.*")],
    )


def burn_panel() -> dict[str, Any]:
    queries = []
    for sli in SLIS:
        for window in ("5m", "1h"):
            queries.append(
                (
                    f"{sli.error_ratio(window)}{{{SELECTED}}} / on ({TARGET}) {sli.budget}",
                    f"{sli.title} p{{{{percentile}}}} {window}",
                )
            )
    return timeseries(
        "Error-budget burn rate",
        "Error ratio over the budget (1 = spending the budget exactly over 30 days). The fast-burn page fires "
        "at 14.4 (1h and 5m) or 6 (6h and 30m); the slow-burn ticket at 3 (1d and 2h) or 1 (3d and 6h).",
        "none",
        queries,
        thresholds=(1, 6, 14.4),
    )


def service_panels() -> list[dict[str, Any]]:
    per_tier = f"{SELECTED}"
    return [
        latency_panel(SLIS[0]),
        latency_panel(SLIS[1]),
        burn_panel(),
        timeseries(
            "Requests per second",
            "Finished requests per second by tier, and aborted ones.",
            "reqps",
            [
                (
                    f'sum by (namespace, tier) (rate({SUCCESS}{{{per_tier}, finished_reason!="abort"}}'
                    "[$__rate_interval]))",
                    "{{tier}} {{namespace}}",
                ),
                (
                    f'sum by (namespace) (rate({SUCCESS}{{{per_tier}, finished_reason="abort"}}'
                    "[$__rate_interval]))",
                    "aborted {{namespace}}",
                ),
            ],
        ),
        timeseries(
            "Replicas per tier",
            "Workers that answer scrapes (ready) against the replicas the operator's plan asks for (desired).",
            "short",
            [
                (f"count by (namespace, tier) (up{{{per_tier}}} == 1)", "{{tier}} ready {{namespace}}"),
                (
                    f"max by (namespace, tier) ({PLANNED}{{{per_tier}}})",
                    "{{tier}} desired {{namespace}}",
                ),
            ],
            overrides=[dashed_red(".*desired.*")],
        ),
        timeseries(
            "KV cache usage",
            "Share of KV-cache blocks in use: the busiest worker and the mean per tier. Near 1, requests queue.",
            "percentunit",
            [
                (
                    f"max by (namespace, tier) ({c.KV_CACHE_USAGE}{{{per_tier}}})",
                    "{{tier}} max {{namespace}}",
                ),
                (
                    f"avg by (namespace, tier) ({c.KV_CACHE_USAGE}{{{per_tier}}})",
                    "{{tier}} mean {{namespace}}",
                ),
            ],
        ),
        timeseries(
            "Queue depth",
            "Requests waiting for admission and running in batches, summed over a tier's workers.",
            "short",
            [
                (
                    f"sum by (namespace, tier) ({c.NUM_REQUESTS_WAITING}{{{per_tier}}})",
                    "{{tier}} waiting {{namespace}}",
                ),
                (
                    f"sum by (namespace, tier) ({c.NUM_REQUESTS_RUNNING}{{{per_tier}}})",
                    "{{tier}} running {{namespace}}",
                ),
            ],
        ),
        timeseries(
            "Decisions",
            "This service's decisions per interval by action: scale (replicas), retune (engine knobs), rollout "
            "(TP or accelerator).",
            "short",
            [
                (
                    "sum by (namespace, action) ("
                    + service_namespace(
                        f'increase({DECISIONS}{{inferenceservice=~"$inferenceservice"}}[$__rate_interval])'
                    )
                    + ")",
                    "{{action}} {{namespace}}",
                )
            ],
            bars=True,
        ),
    ]


def fleet_panels() -> list[dict[str, Any]]:
    burns = [
        (
            f"max by ({SERVICE}) ({sli.error_ratio('1h')}{{{SELECTED}}} / on ({TARGET}) {sli.budget})",
            f"{{{{namespace}}}}/{{{{inferenceservice}}}} {sli.title}",
        )
        for sli in SLIS
    ]
    return [
        timeseries(
            "Burn rate (1h) by service",
            "The worst 1-hour burn rate of each service's TTFT and TPOT targets; above 1 the SLO is at risk.",
            "none",
            burns,
            thresholds=(1, 6, 14.4),
        ),
        timeseries(
            "Operator decisions",
            "Decisions that changed a plan, by action (scale, retune, rollout) and mode (auto acts, recommend "
            "only writes status).",
            "short",
            [(f"sum by (action, mode) (increase({DECISIONS}[$__rate_interval]))", "{{action}} ({{mode}})")],
            bars=True,
        ),
        timeseries(
            "Operator health",
            "Reconcile errors per second by stage; whether the last Prometheus poll succeeded (1); services managed.",
            "short",
            [
                (f"sum by (stage) (rate({RECONCILE_ERRORS}[$__rate_interval]))", "errors/s {{stage}}"),
                (f"max({PROMETHEUS_UP})", "Prometheus reachable"),
                (f"max({SERVICES_MANAGED})", "services managed"),
            ],
        ),
        timeseries(
            "Control interval duration",
            "Wall time of one control interval for all services: the batched queries, decisions, writes.",
            "s",
            [
                (
                    f"histogram_quantile(0.{q}, sum by (le) (rate({POLL_DURATION}_bucket[$__rate_interval])))",
                    f"p{q}",
                )
                for q in ("50", "95")
            ],
        ),
    ]


def row(title: str, repeat: str | None = None) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "type": "row",
        "title": title,
        "collapsed": False,
        "datasource": DATASOURCE,
        "panels": [],
    }
    if repeat:
        panel["repeat"] = repeat
    return panel


def layout(sections: list[tuple[dict[str, Any], list[dict[str, Any]], int]]) -> list[dict[str, Any]]:
    """Rows with their panels below, `per_line` panels across the 24-column grid, ids in order."""
    panels, y = [], 0
    for header, members, per_line in sections:
        panels.append({**header, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}})
        y += 1
        width = 24 // per_line
        for index, panel in enumerate(members):
            column = index % per_line
            panels.append({**panel, "gridPos": {"x": column * width, "y": y, "w": width, "h": 8}})
            if column == per_line - 1 or index == len(members) - 1:
                y += 8
    return [{**panel, "id": i + 1} for i, panel in enumerate(panels)]


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {},
        "hide": 0,
        "regex": "",
        "options": [],
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "goodput: LLM services at their SLOs",
        "uid": "goodput-services",
        "description": "Per InferenceService: latency against the SLO, error-budget burn, load, capacity, decisions.",
        "tags": ["goodput", "llm", "slo"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                },
                variable("namespace", "Namespace", 'label_values(up{inferenceservice!=""}, namespace)'),
                variable(
                    "inferenceservice",
                    "InferenceService",
                    'label_values(up{namespace=~"$namespace", inferenceservice!=""}, inferenceservice)',
                ),
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Scaling decisions",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "iconColor": "orange",
                    "expr": (
                        f'sum by ({SERVICE}, action) (increase({DECISIONS}{{{SELECTED}, action!="hold"}}[2m])) > 0'
                    ),
                    "step": "60s",
                    "titleFormat": "{{action}}",
                    "textFormat": "{{namespace}}/{{inferenceservice}}",
                }
            ]
        },
        "panels": layout(
            [
                (row("Fleet"), fleet_panels(), 4),
                (row("$inferenceservice", repeat="inferenceservice"), service_panels(), 3),
            ]
        ),
    }

"""Generate goodput's Prometheus rules and Grafana dashboard from one source, so names never diverge.

`python manifests/observability/generate.py` writes, next to this file:

- `rules.yaml`: plain rule groups, for `promtool` and for a Prometheus configured with `rule_files`;
- `prometheus-rules.yaml`: the same groups as a `monitoring.coreos.com/v1` PrometheusRule;
- `goodput-dashboard.json`: the Grafana dashboard; its panels read the series the rules record;
- `monitors.yaml`: PodMonitors that scrape the workers and the operator with the labels the rules expect.

The SLO of each service reaches Prometheus through the operator's gauges `goodput_slo_ttft_target_seconds`
and `goodput_slo_tpot_target_seconds` (labels namespace, inferenceservice, percentile="95"|"99"). A p95
target of X is the objective "95% of events within X", so its error budget is 5%. Histograms only count
requests per bucket, so the share within a target that falls between two bucket bounds is interpolated
linearly inside that bucket: the same assumption `histogram_quantile` makes, which keeps the alerts and
the operator's observed p95 consistent (an observed p95 equal to the target is exactly a 5% error ratio).
Windows longer than 5 minutes average the recorded 5-minute rates instead of rereading days of raw buckets.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from worker_image import contract as c

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "rules.yaml"
PROMETHEUS_RULE_FILE = HERE / "prometheus-rules.yaml"
DASHBOARD_FILE = HERE / "goodput-dashboard.json"
MONITORS_FILE = HERE / "monitors.yaml"
RUNBOOK = "https://github.com/goodput/goodput/blob/main/docs/oncall.md"

SERVICE = "namespace, inferenceservice"
TARGET = f"{SERVICE}, percentile"
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
PERCENTILES = ("95", "99")  # the SLO fields ttftP95Ms/ttftP99Ms and tpotP95Ms/tpotP99Ms

# The operator's own /metrics (controllers/metrics.py). Its per-service series carry `namespace` and
# `inferenceservice` labels; `service_namespace` reads them whether or not the scrape honours labels.
# Decisions are {action, mode}; the per-service panel also needs {namespace, inferenceservice}.
DECISIONS = c.total(c.OPERATOR_DECISIONS)
RECONCILE_ERRORS = c.total(c.OPERATOR_RECONCILE_ERRORS)  # {stage}
POLL_DURATION = c.OPERATOR_POLL_DURATION  # histogram
PROMETHEUS_UP = c.OPERATOR_PROMETHEUS_UP  # 1 when the last interval's queries succeeded
SERVICES_MANAGED = c.OPERATOR_SERVICES
PLAN_REPLICAS = c.PLAN_REPLICAS  # {namespace, inferenceservice, tier}: the plan's replicas per tier
PLANNED = "goodput:plan_replicas"
SUCCESS = c.total(c.REQUEST_SUCCESS)  # {finished_reason}


def service_namespace(expr: str) -> str:
    """`expr` with the service's namespace in `namespace`, however the operator was scraped.

    A scrape job without honor_labels that sets `namespace` from the operator pod (as annotation-based pod
    discovery does) renames the series' own `namespace` to `exported_namespace`; this moves it back.
    """
    return f'label_replace({expr}, "namespace", "$1", "exported_namespace", "(.+)")'


@dataclass(frozen=True)
class Sli:
    """One latency objective: the worker histogram it is measured on and the operator gauge of its target."""

    key: str  # "ttft" | "tpot"
    title: str
    histogram: str
    buckets: tuple[float, ...]

    @property
    def target_gauge(self) -> str:
        return c.slo_target_gauge(self.key)

    @property
    def target(self) -> str:
        return f"goodput:slo_{self.key}_target_seconds"

    @property
    def budget(self) -> str:
        return f"goodput:slo_{self.key}_error_budget"

    @property
    def weight(self) -> str:
        return f"goodput:slo_{self.key}_bucket_weight"

    def bucket_rate(self, window: str) -> str:
        return f"goodput:{self.key}_bucket:rate{window}"

    def good_rate(self, window: str) -> str:
        return f"goodput:{self.key}_good:rate{window}"

    def events(self, window: str) -> str:
        """All events per second: requests for TTFT, token gaps for TPOT."""
        return f"goodput:{self.key}_events:rate{window}"

    def error_ratio(self, window: str) -> str:
        return f"goodput:{self.key}_error_ratio:rate{window}"


SLIS = (
    Sli("ttft", "TTFT", c.TTFT, c.TTFT_BUCKETS),
    Sli("tpot", "TPOT", c.INTER_TOKEN_LATENCY, c.INTER_TOKEN_BUCKETS),
)


@dataclass(frozen=True)
class BurnWindow:
    """One long/short window pair of the multi-window, multi-burn-rate alerts (SRE workbook, chapter 5)."""

    long: str
    short: str
    factor: float  # burn rate: how many times faster than "budget spent evenly over 30 days"


FAST_BURN = (BurnWindow("1h", "5m", 14.4), BurnWindow("6h", "30m", 6))  # 2% / 5% of a 30-day budget
SLOW_BURN = (BurnWindow("1d", "2h", 3), BurnWindow("3d", "6h", 1))  # 10% / 10% of a 30-day budget


def num(value: float) -> str:
    """A number for PromQL and for the canonical `le` label: no trailing ".0", no exponent.

    The bucket-rate rules strip ".0" from `le` too, so "1" (as Go clients write it) and "1.0" (as Python clients
    write it, and as Prometheus 3 normalises every `le` on ingestion) both match the bound 1.
    """
    text = repr(float(value)).removesuffix(".0")
    if "e" in text:
        raise ValueError(f"{value} would be written in exponent notation")
    return text


# --- rules ----------------------------------------------------------------------------------------------


def weight_rules(sli: Sli) -> list[dict[str, Any]]:
    """Per service, the weights of the bucket bounds around its target: good = Σ weight(le) · count(le).

    A target T between bounds lo < hi gives good = count(lo) + (T-lo)/(hi-lo) · (count(hi) - count(lo)),
    i.e. weight (hi-T)/(hi-lo) on `lo` and (T-lo)/(hi-lo) on `hi`. Below the first bound, the lower count
    is 0; at or above the last finite bound, every request counted there is good. Exactly one bucket pair
    matches each target, so the rules below (one per bound and side) never emit overlapping series.
    """
    t, bounds = sli.target, sli.buckets
    first = num(bounds[0])
    rules = [
        {
            "record": sli.weight,
            "expr": f"({t} < {first}) / {first}",
            "labels": {"le": first, "bound": "upper"},
        }
    ]
    for lo, hi in itertools.pairwise(bounds):
        inside = f"(({t} >= {num(lo)}) < {num(hi)})"
        span = f"({num(hi)} - {num(lo)})"
        rules.append(
            {
                "record": sli.weight,
                "expr": f"({num(hi)} - {inside}) / {span}",
                "labels": {"le": num(lo), "bound": "lower"},
            }
        )
        rules.append(
            {
                "record": sli.weight,
                "expr": f"({inside} - {num(lo)}) / {span}",
                "labels": {"le": num(hi), "bound": "upper"},
            }
        )
    rules.append(
        {
            "record": sli.weight,
            "expr": f"({t} >= {num(bounds[-1])}) * 0 + 1",
            "labels": {"le": num(bounds[-1]), "bound": "lower"},
        }
    )
    return rules


def target_rules(sli: Sli) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"record": sli.target, "expr": f"max by ({TARGET}) ({service_namespace(sli.target_gauge)})"},
    ]
    budgets = [
        f'{sli.target}{{percentile="{percentile}"}} * 0 + {num(round(1 - int(percentile) / 100, 6))}'
        for percentile in PERCENTILES
    ]
    rules.append({"record": sli.budget, "expr": "\nor\n".join(budgets)})
    return rules + weight_rules(sli)


def error_ratio_rule(sli: Sli, window: str) -> dict[str, Any]:
    return {
        "record": sli.error_ratio(window),
        "expr": (
            f"clamp(1 - ({sli.good_rate(window)} / on ({SERVICE}) group_left {sli.events(window)}), 0, 1)"
        ),
    }


def base_window_rules(sli: Sli) -> list[dict[str, Any]]:
    """The shortest window straight from the histograms: bucket rates, the good rate per target, the total."""
    window = WINDOWS[0]
    buckets = f"sum by ({SERVICE}, le) (rate({sli.histogram}_bucket[{window}]))"
    return [
        {
            "record": sli.bucket_rate(window),
            "expr": f'label_replace({buckets}, "le", "$1", "le", "(.+)[.]0")',
        },
        {
            "record": sli.good_rate(window),
            "expr": f"sum by ({TARGET}) ({sli.weight} * on ({SERVICE}, le) group_left {sli.bucket_rate(window)})",
        },
        {
            "record": sli.events(window),
            "expr": f'sum by ({SERVICE}) ({sli.bucket_rate(window)}{{le="+Inf"}})',
        },
        error_ratio_rule(sli, window),
    ]


def long_window_rules(sli: Sli, window: str) -> list[dict[str, Any]]:
    """A longer window as the mean of the recorded short-window rates (as the SRE workbook suggests).

    Reading days of raw buckets of every pod each evaluation would cost thousands of times more; the mean
    of the 5m rates over the window is the window's rate up to its first 5 minutes.
    """
    base = WINDOWS[0]
    return [
        {"record": sli.good_rate(window), "expr": f"avg_over_time({sli.good_rate(base)}[{window}])"},
        {"record": sli.events(window), "expr": f"avg_over_time({sli.events(base)}[{window}])"},
        error_ratio_rule(sli, window),
    ]


def burn_condition(sli: Sli, pair: BurnWindow) -> str:
    def over(window: str) -> str:
        return f"{sli.error_ratio(window)} > on ({TARGET}) ({num(pair.factor)} * {sli.budget})"

    return f"({over(pair.long)}\nand on ({TARGET})\n{over(pair.short)})"


def burn_alert(
    sli: Sli, name: str, severity: str, pairs: tuple[BurnWindow, ...], pace: str
) -> dict[str, Any]:
    windows = " or ".join(f"{p.long}/{p.short} at {num(p.factor)}x" for p in pairs)
    return {
        "alert": name,
        "expr": f"\nor on ({TARGET})\n".join(burn_condition(sli, pair) for pair in pairs),
        "for": "2m" if severity == "page" else "15m",
        "labels": {"severity": severity, "slo": sli.key},
        "annotations": {
            "summary": (
                f"{{{{ $labels.namespace }}}}/{{{{ $labels.inferenceservice }}}} spends its {sli.title} "
                f"p{{{{ $labels.percentile }}}} error budget {pace}"
            ),
            "description": (
                f"The share of {sli.title} events over the p{{{{ $labels.percentile }}}} target burns the "
                f"error budget faster than the SLO allows ({windows}). "
                f"Check `goodput explain {{{{ $labels.inferenceservice }}}} -n {{{{ $labels.namespace }}}}`."
            ),
            "runbook_url": f"{RUNBOOK}#slo-burn-alerts",
        },
    }


def operations_alerts() -> list[dict[str, Any]]:
    service = "{{ $labels.namespace }}/{{ $labels.inferenceservice }}"
    return [
        {
            "alert": "GoodputSLOTargetsMissing",
            "expr": (
                f'count by ({SERVICE}) (up{{inferenceservice!=""}})\n'
                f"unless on ({SERVICE}) goodput:slo_ttft_target_seconds"
            ),
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"{service} has workers but no SLO target series",
                "description": (
                    "The operator exports each service's SLO targets; without them the burn-rate alerts "
                    "cannot evaluate. Is the operator running and scraped?"
                ),
                "runbook_url": f"{RUNBOOK}#metricsavailable",
            },
        },
        {
            "alert": "GoodputWorkerDown",
            "expr": 'up{inferenceservice!=""} == 0',
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"{service}: worker {{{{ $labels.pod }}}} does not answer scrapes",
                "description": "Prometheus cannot scrape this worker; the operator sees it as missing metrics.",
                "runbook_url": f"{RUNBOOK}#metricsavailable",
            },
        },
        {
            "alert": "GoodputKVCacheSaturated",
            "expr": f"max by ({SERVICE}, tier) ({c.KV_CACHE_USAGE}) > 0.95",
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"{service} ({{{{ $labels.tier }}}}): KV cache above 95% for 10 minutes",
                "description": (
                    "A full KV cache queues and preempts requests, which raises TTFT. The plan may underestimate "
                    "context lengths; see `goodput explain`."
                ),
                "runbook_url": f"{RUNBOOK}#capacitylimited",
            },
        },
        {
            "alert": "GoodputReconcileErrors",
            "expr": f"sum by (stage) (rate({RECONCILE_ERRORS}[15m])) > 0",
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "the goodput operator keeps failing at stage {{ $labels.stage }}",
                "description": (
                    "Reconcile errors for 15 minutes: children may not match their plans. Read the operator's "
                    "log and the Events of the affected InferenceServices."
                ),
                "runbook_url": f"{RUNBOOK}#reading-status-and-events",
            },
        },
        {
            "alert": "GoodputOperatorBlind",
            "expr": f"max({PROMETHEUS_UP}) == 0",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "the goodput operator cannot query Prometheus",
                "description": (
                    "Every service's MetricsAvailable is False: the operator holds (or follows hints, per "
                    "SLOPolicy missingMetrics) instead of scaling on live load."
                ),
                "runbook_url": f"{RUNBOOK}#metricsavailable",
            },
        },
    ]


def rule_groups() -> list[dict[str, Any]]:
    """All rule groups. Targets and SLIs share one group so each evaluation sees one consistent snapshot."""
    recording: list[dict[str, Any]] = []
    for sli in SLIS:
        recording += target_rules(sli) + base_window_rules(sli)
        for window in WINDOWS[1:]:
            recording += long_window_rules(sli, window)
    burn: list[dict[str, Any]] = []
    for sli in SLIS:
        burn.append(burn_alert(sli, "GoodputSLOFastBurn", "page", FAST_BURN, "fast"))
        burn.append(burn_alert(sli, "GoodputSLOSlowBurn", "ticket", SLOW_BURN, "steadily"))
    return [
        {"name": "goodput-slo", "interval": "30s", "rules": recording},
        {
            "name": "goodput-plan",
            "rules": [
                {
                    "record": PLANNED,
                    "expr": f"max by ({SERVICE}, tier) ({service_namespace(PLAN_REPLICAS)})",
                }
            ],
        },
        {"name": "goodput-slo-alerts", "interval": "30s", "rules": burn},
        {"name": "goodput-operations", "rules": operations_alerts()},
    ]


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "goodput",
            "labels": {"app.kubernetes.io/name": "goodput", "app.kubernetes.io/component": "observability"},
        },
        "spec": {"groups": groups},
    }


def pod_monitors() -> list[dict[str, Any]]:
    """Scrape configs for the Prometheus Operator: workers (pod labels to series labels) and the operator.

    The worker relabelling matches e2e/prometheus.py, so both stacks give the series the same labels. The
    operator's series name services in their own `namespace` label, hence honorLabels.
    """
    labels = {"app.kubernetes.io/name": "goodput", "app.kubernetes.io/component": "observability"}
    workers = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "goodput-workers", "labels": labels},
        "spec": {
            "namespaceSelector": {"any": True},
            "selector": {"matchExpressions": [{"key": "goodput.dev/inferenceservice", "operator": "Exists"}]},
            "podMetricsEndpoints": [
                {
                    "port": "http",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [
                        {
                            "sourceLabels": [f"__meta_kubernetes_pod_label_goodput_dev_{name}"],
                            "targetLabel": name,
                        }
                        for name in ("inferenceservice", "tier")
                    ],
                }
            ],
        },
    }
    operator = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "goodput-operator", "labels": labels},
        "spec": {
            "namespaceSelector": {"matchNames": ["goodput-system"]},  # manifests/operator/namespace.yaml
            "selector": {"matchLabels": {"app.kubernetes.io/name": "goodput-operator"}},
            "podMetricsEndpoints": [
                {"port": "metrics", "path": "/metrics", "interval": "15s", "honorLabels": True}
            ],
        },
    }
    return [workers, operator]


# --- dashboard ------------------------------------------------------------------------------------------

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


# --- output ---------------------------------------------------------------------------------------------

HEADER = "# Generated by manifests/observability/generate.py. Do not edit; edit the generator and rerun it.\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer PromQL expressions) as literal blocks, so the files read like PromQL."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(obj: Any) -> str:
    return HEADER + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=4096)


def rendered() -> dict[Path, str]:
    """Every generated file and its content."""
    groups = rule_groups()
    return {
        RULES_FILE: to_yaml({"groups": groups}),
        PROMETHEUS_RULE_FILE: to_yaml(prometheus_rule(groups)),
        MONITORS_FILE: HEADER + yaml.dump_all(pod_monitors(), Dumper=_Dumper, sort_keys=False, width=4096),
        DASHBOARD_FILE: json.dumps(dashboard(), indent=2) + "\n",
    }


def main() -> int:
    for path, text in rendered().items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

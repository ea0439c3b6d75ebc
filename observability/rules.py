"""The recording rules (SLIs per window) and the alerts: multi-window burn rates and the operations alerts."""

from __future__ import annotations

import itertools
from typing import Any

from goodput.worker_image import contract as c
from observability.slis import (
    FAST_BURN,
    PERCENTILES,
    PLAN_REPLICAS,
    PLANNED,
    PROMETHEUS_UP,
    RECONCILE_ERRORS,
    RUNBOOK,
    SERVICE,
    SLIS,
    SLOW_BURN,
    TARGET,
    WINDOWS,
    BurnWindow,
    Sli,
    num,
    service_namespace,
)


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

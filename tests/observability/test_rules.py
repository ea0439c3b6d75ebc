"""The SLO rules: generated files current, accepted by promtool, and alerting on a fast burn but not on normal load.

The alert tests feed promtool synthetic worker histograms built from per-minute latency samples, so the
expected error ratios below follow from the samples by hand, not from the rules under test.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from prometheus_client.utils import floatToGoString


def service(name: str = "chat") -> dict[str, str]:
    return {"namespace": "prod", "inferenceservice": name}


def worker(name: str = "chat") -> dict[str, str]:
    return {**service(name), "tier": "interactive", "pod": f"{name}-interactive-0", "model_name": "llama"}


SERVICE = service()
WORKER = worker()
OPERATOR = {"job": "goodput-operator", "instance": "10.0.0.1:8080"}

Phase = tuple[int, list[tuple[float, int]]]  # minutes, and per minute: (latency seconds, requests)


def selector(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def counter_values(phases: list[tuple[int, int]]) -> str:
    """promtool's expanding notation for a counter growing by `increment` per minute in each phase."""
    parts, value = [], 0
    for index, (minutes, increment) in enumerate(phases):
        start = value if index == 0 else value + increment
        steps = minutes if index == 0 else minutes - 1
        parts.append(f"{start}+{increment}x{steps}")
        value = start + increment * steps
    return " ".join(parts)


def histogram_series(
    name: str,
    buckets: tuple[float, ...],
    labels: dict[str, str],
    phases: list[Phase],
    *,
    go_style: bool = False,
) -> list[dict[str, str]]:
    """Cumulative bucket counters of one worker histogram; `le` as prometheus_client writes it, or as Go does."""
    series = []
    for bound in (*buckets, float("inf")):
        text = floatToGoString(bound)
        if go_style:
            text = text.removesuffix(".0")
        per_minute = [(m, sum(n for latency, n in samples if latency <= bound)) for m, samples in phases]
        series.append(
            {
                "series": selector(f"{name}_bucket", {**labels, "le": text}),
                "values": counter_values(per_minute),
            }
        )
    return series


def gauge(name: str, labels: dict[str, str], value: float, minutes: int) -> dict[str, str]:
    return {"series": selector(name, {**labels, **OPERATOR}), "values": f"{value}+0x{minutes}"}


def target_series(
    key: str, targets: dict[str, float], minutes: int, labels: dict[str, str] = SERVICE
) -> list[dict[str, str]]:
    return [
        gauge(f"goodput_slo_{key}_target_seconds", {**labels, "percentile": p}, seconds, minutes)
        for p, seconds in targets.items()
    ]


def rendered(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)


def expected_alert(
    observability: ModuleType, name: str, slo: str, percentile: str, labels: dict[str, str] = SERVICE
) -> dict[str, Any]:
    rule = next(
        r
        for group in observability.rule_groups()
        for r in group["rules"]
        if r.get("alert") == name and r["labels"]["slo"] == slo
    )
    labels = {**labels, "percentile": percentile, **rule["labels"]}
    annotations = {key: rendered(text, labels) for key, text in rule["annotations"].items()}
    return {"exp_labels": labels, "exp_annotations": annotations}


def alert_test(series: list[dict[str, Any]], checks: list[tuple[str, str, list[Any]]]) -> dict[str, Any]:
    """A promtool unit test: per-minute `series`, and (time, alert name, the alerts expected firing) checks."""
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": name, "exp_alerts": exp} for at, name, exp in checks
        ],
    }


def run_promtool_test(
    promtool: str, observability: ModuleType, tmp_path: Path, tests: list[dict[str, Any]]
) -> None:
    spec = {"rule_files": [str(observability.RULES_FILE)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, width=4096))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_files_are_current(observability: ModuleType) -> None:
    for path, text in observability.rendered().items():
        assert path.exists(), f"{path} missing: run `python -m observability`"
        assert path.read_text() == text, f"{path} is stale: run `python -m observability`"


def test_prometheus_rule_carries_the_same_groups(observability: ModuleType) -> None:
    plain = yaml.safe_load(observability.RULES_FILE.read_text())
    resource = yaml.safe_load(observability.PROMETHEUS_RULE_FILE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == plain["groups"]


def test_promtool_check_rules_passes(promtool: str, observability: ModuleType) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", "--lint=all", "--lint-fatal", str(observability.RULES_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multiwindow_pairs_follow_the_sre_workbook(observability: ModuleType) -> None:
    fast = {(p.long, p.short, p.factor) for p in observability.FAST_BURN}
    slow = {(p.long, p.short, p.factor) for p in observability.SLOW_BURN}
    assert fast == {("1h", "5m", 14.4), ("6h", "30m", 6)}
    assert slow == {("1d", "2h", 3), ("3d", "6h", 1)}
    windows = {w for pair in fast | slow for w in pair[:2]}
    assert windows <= set(observability.WINDOWS)


def test_good_share_interpolates_inside_the_bucket_of_the_target(
    promtool: str, observability: ModuleType, tmp_path: Path
) -> None:
    """TTFT p95 target 0.3 s lies in the (0.25, 0.5] bucket; p99 target 1 s sits on a bound.

    Per minute: 60 requests at 0.2 s, 20 at 0.4 s, 20 at 2 s. Good at 0.3 s = 60 + 20·(0.3-0.25)/(0.5-0.25) = 64,
    so the error ratio is 0.36; good at 1 s = 80, error 0.2. TPOT target 1.2 s in (1, 2.5], with Go-style `le`
    ("1", not "1.0"): 50 gaps at 0.9 s, 30 at 2 s, 20 at 3 s give good = 50 + 30·0.2/1.5 = 54, error 0.46.
    """
    ttft = [(0.2, 60), (0.4, 20), (2.0, 20)]
    tpot = [(0.9, 50), (2.0, 30), (3.0, 20)]
    minutes = 40
    ttft_sli, tpot_sli = observability.SLIS
    series = [
        *histogram_series(ttft_sli.histogram, ttft_sli.buckets, WORKER, [(minutes, ttft)]),
        *histogram_series(tpot_sli.histogram, tpot_sli.buckets, WORKER, [(minutes, tpot)], go_style=True),
        *target_series("ttft", {"95": 0.3, "99": 1.0}, minutes),
        *target_series("tpot", {"95": 1.2}, minutes),
    ]

    def sample(percentile: str, value: float, name: str = "") -> dict[str, Any]:
        return {"labels": selector(name, {**SERVICE, "percentile": percentile}), "value": value}

    run_promtool_test(
        promtool,
        observability,
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": "round(goodput:ttft_error_ratio:rate5m, 0.001)",
                        "eval_time": "30m",
                        "exp_samples": [sample("95", 0.36), sample("99", 0.2)],
                    },
                    {
                        "expr": "round(goodput:tpot_error_ratio:rate30m, 0.001)",
                        "eval_time": "35m",
                        "exp_samples": [sample("95", 0.46)],
                    },
                    {
                        "expr": "goodput:slo_ttft_error_budget",
                        "eval_time": "5m",
                        "exp_samples": [
                            sample("95", 0.05, ttft_sli.budget),
                            sample("99", 0.01, ttft_sli.budget),
                        ],
                    },
                ],
            }
        ],
    )


NORMAL = [(0.2, 98), (1.5, 2)]  # 2% of requests over a 0.5 s target: under the 5% budget of a p95
OUTAGE = [(2.0, 100)]  # every request over target
DEGRADED = [(0.2, 80), (1.5, 20)]  # 20%: four times the budget


def test_burn_rate_alerts_page_on_outage_ticket_on_steady_burn_and_stay_quiet_otherwise(
    promtool: str, observability: ModuleType, tmp_path: Path
) -> None:
    """Three services with a TTFT p95 target of 0.5 s, one promtool run (each alert check lists every service).

    - quiet: 2% over target for 8 hours, under the 5% budget;
    - outage: from minute 360 every request is late; the 1h error ratio passes 14.4 x 5% = 0.72 about
      44 minutes in, so it pages by minute 410 but not at minute 380;
    - degraded: from minute 360, 20% late (4x the budget): never a page, but the 3d/6h pair passes 1x
      after about 72 minutes, so a ticket by minute 480.
    """
    sli = observability.SLIS[0]
    services = {
        "quiet": [(480, NORMAL)],
        "outage": [(360, NORMAL), (120, OUTAGE)],
        "degraded": [(360, NORMAL), (120, DEGRADED)],
    }
    series = []
    for name, phases in services.items():
        series += histogram_series(sli.histogram, sli.buckets, worker(name), phases)
        series += target_series("ttft", {"95": 0.5}, 480, service(name))

    def alerts(name: str, *firing: str) -> list[dict[str, Any]]:
        return [expected_alert(observability, name, "ttft", "95", service(s)) for s in firing]

    checks = [
        ("380m", "GoodputSLOFastBurn", alerts("GoodputSLOFastBurn")),
        ("410m", "GoodputSLOFastBurn", alerts("GoodputSLOFastBurn", "outage")),
        ("480m", "GoodputSLOFastBurn", alerts("GoodputSLOFastBurn", "outage")),
        ("380m", "GoodputSLOSlowBurn", alerts("GoodputSLOSlowBurn")),
        ("480m", "GoodputSLOSlowBurn", alerts("GoodputSLOSlowBurn", "outage", "degraded")),
    ]
    run_promtool_test(promtool, observability, tmp_path, [alert_test(series, checks)])


def test_tpot_alerts_read_the_inter_token_histogram(
    promtool: str, observability: ModuleType, tmp_path: Path
) -> None:
    sli = observability.SLIS[1]
    phases: list[Phase] = [
        (60, [(0.02, 1000)]),
        (60, [(0.2, 1000)]),
    ]  # token gaps jump over a 50 ms p99 target
    series = [
        *histogram_series(sli.histogram, sli.buckets, WORKER, phases),
        *target_series("tpot", {"99": 0.05}, 120),
    ]
    test = {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": "55m", "alertname": "GoodputSLOFastBurn", "exp_alerts": []},
            {
                "eval_time": "110m",
                "alertname": "GoodputSLOFastBurn",
                "exp_alerts": [expected_alert(observability, "GoodputSLOFastBurn", "tpot", "99")],
            },
        ],
    }
    run_promtool_test(promtool, observability, tmp_path, [test])


def test_operational_alerts(promtool: str, observability: ModuleType, tmp_path: Path) -> None:
    """A saturated KV cache, a worker that stops answering, and a service whose SLO gauges are missing."""
    up = {**worker("chat"), "job": "pods", "instance": "10.0.0.2:8000"}
    down = {**worker("batch"), "job": "pods", "instance": "10.0.0.3:8000"}
    series = [
        {"series": selector("vllm:kv_cache_usage_perc", worker("chat")), "values": "0.5x10 0.99x30"},
        {"series": selector("up", up), "values": "1x40"},
        {"series": selector("up", down), "values": "1x10 0x30"},
        *target_series("ttft", {"95": 0.5}, 40, service("chat")),
    ]

    def alert(name: str, labels: dict[str, str]) -> dict[str, Any]:
        rule = next(r for g in observability.rule_groups() for r in g["rules"] if r.get("alert") == name)
        full = {**labels, **rule["labels"]}
        return {
            "exp_labels": full,
            "exp_annotations": {k: rendered(v, full) for k, v in rule["annotations"].items()},
        }

    checks = [
        ("15m", "GoodputKVCacheSaturated", []),
        (
            "35m",
            "GoodputKVCacheSaturated",
            [alert("GoodputKVCacheSaturated", {**service(), "tier": "interactive"})],
        ),
        ("12m", "GoodputWorkerDown", []),
        ("20m", "GoodputWorkerDown", [alert("GoodputWorkerDown", down)]),
        ("30m", "GoodputSLOTargetsMissing", [alert("GoodputSLOTargetsMissing", service("batch"))]),
    ]
    run_promtool_test(promtool, observability, tmp_path, [alert_test(series, checks)])

"""The SLO rules on really scraped series: a worker's /metrics and the operator's SLO gauges, in both Prometheus 2
and 3 (which writes `le="1.0"` where 2 may write `le="1"`), and the dashboard's queries returning data.

Expected error ratios follow from the observations by hand (see each case), not from the rules under test.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from e2e import procs
from goodput.worker_image.metrics import WorkerMetrics
from testkit.metrics_http import serve_metrics

LABELS = {"namespace": "prod", "inferenceservice": "chat", "tier": "interactive", "pod": "chat-interactive-0"}
TARGETS = {("ttft", "95"): 1.0, ("ttft", "99"): 0.3, ("tpot", "95"): 0.05}
TTFT = [(0.5, 90), (2.0, 10)]  # seconds, requests
TPOT = [(0.02, 80), (0.2, 20)]  # seconds, token gaps
EXPECTED = {
    ("ttft", "95"): 0.1,  # 1 s is a bucket bound: 10 of 100 above it
    ("ttft", "99"): 0.82,  # 0.3 s in (0.25, 0.5]: good = 0 + 90 * (0.3 - 0.25) / 0.25 = 18
    ("tpot", "95"): 0.2,  # 50 ms is a bound: 20 of 100 gaps above it
}


@contextlib.contextmanager
def serving(render: Callable[[], tuple[bytes, str]]) -> Iterator[int]:
    """/metrics on a free loopback port from `render`, as the worker's server answers it."""
    server = serve_metrics(render)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def operator_registry() -> CollectorRegistry:
    """The per-service gauges the operator exports: SLO targets (seconds) and the plan's replicas per tier."""
    registry = CollectorRegistry()
    plan = Gauge(
        "goodput_plan_replicas",
        "Planned replicas",
        ["namespace", "inferenceservice", "tier"],
        registry=registry,
    )
    plan.labels("prod", "chat", "interactive").set(1)
    gauges = {
        key: Gauge(
            f"goodput_slo_{key}_target_seconds",
            "SLO target",
            ["namespace", "inferenceservice", "percentile"],
            registry=registry,
        )
        for key in ("ttft", "tpot")
    }
    for (key, percentile), seconds in TARGETS.items():
        gauges[key].labels("prod", "chat", percentile).set(seconds)
    return registry


def query(url: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    return body["data"]["result"]


def wait_for(url: str, expr: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal found
        found = query(url, expr)
        return len(found) >= count

    procs.wait_until(enough, 60, f"{count} series of {expr}", interval=0.25)
    return found


@pytest.fixture(scope="module")
def scraped(
    observability: ModuleType,
    launch: Callable[[Path, dict[str, Any]], contextlib.AbstractContextManager[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """Prometheus scraping a worker and the operator every second, the rules evaluated every second."""
    directory = tmp_path_factory.mktemp("scrape")
    rules = directory / "rules.yaml"
    groups = [{**group, "interval": "1s"} for group in observability.rule_groups()]
    rules.write_text(observability.to_yaml({"groups": groups}))
    worker = WorkerMetrics("llama", max_model_len=256)
    operator = operator_registry()
    with (
        serving(worker.render) as worker_port,
        serving(lambda: (generate_latest(operator), CONTENT_TYPE_LATEST)) as operator_port,
    ):
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"], "labels": LABELS}],
                },
                {  # as annotation-based pod discovery scrapes it: the series' `namespace` is renamed
                    "job_name": "operator",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{operator_port}"], "labels": {"namespace": "goodput-system"}}
                    ],
                },
            ],
        }
        with launch(directory / "prometheus", config) as url:
            wait_for(url, 'up{job="worker"} == 1', 1)  # the zero counts are in before any observation
            time.sleep(1.5)
            for seconds, n in TTFT:
                for _ in range(n):
                    worker.observe_first_token(seconds, num_prompt_tokens=16)
            for seconds, n in TPOT:
                for _ in range(n):
                    worker.observe_tokens(1, seconds)
            yield url


@pytest.mark.prometheus
@pytest.mark.parametrize(("slo", "percentile"), list(EXPECTED))
def test_error_ratio_from_scraped_histograms(scraped: str, slo: str, percentile: str) -> None:
    expr = f'goodput:{slo}_error_ratio:rate5m{{namespace="prod", inferenceservice="chat", percentile="{percentile}"}} > 0'
    (row,) = wait_for(scraped, expr, 1)
    assert float(row["value"][1]) == pytest.approx(EXPECTED[(slo, percentile)], abs=1e-9)


@pytest.mark.prometheus
def test_dashboard_queries_on_worker_series_return_data(observability: ModuleType, scraped: str) -> None:
    """Every panel query that reads only worker series, recorded series or SLO gauges has data.

    Queries on the operator's decision and health counters are left to the end-to-end run, which has a real
    operator.
    """
    board = json.loads(observability.DASHBOARD_FILE.read_text())
    wait_for(scraped, "goodput:tpot_error_ratio:rate1h > 0", 1)
    checked = 0
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            if "goodput_operator_" in expr:
                continue
            expr = expr.replace("$inferenceservice", "chat").replace("$namespace", "prod")
            expr = expr.replace("$__rate_interval", "1m")
            if "aborted" in target["legendFormat"]:
                continue  # no request was aborted
            assert query(scraped, expr), f"{panel['title']}: no data for {expr}"
            checked += 1
    assert checked >= 10

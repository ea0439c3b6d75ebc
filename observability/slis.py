"""The series the rules and the dashboard read and record, and the objectives they measure: one place for names."""

from __future__ import annotations

from dataclasses import dataclass

from goodput.worker_image import contract as c

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

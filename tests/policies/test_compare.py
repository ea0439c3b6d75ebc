"""The comparison report: its JSON shape, and how a baseline's headline setting is chosen."""

import json

import numpy as np

from goodput.controllers.replay import json_ready, run, table
from goodput.policies.compare import _best, bracketing
from goodput.policies.simulator import SimResult, Timeline
from goodput.policies.workloads import Trace


def _result(setting: str, attainment: float, gpu_hours: float) -> SimResult:
    empty = np.zeros(0)
    return SimResult(
        "hpa", setting, attainment, 100.0, 10.0, gpu_hours, 4 * gpu_hours, 0, 1, empty, empty, empty,
        Timeline(empty, empty, empty, empty, empty, empty),
    )  # fmt: skip


def test_headline_is_the_cheapest_setting_reaching_the_target_else_the_best_attainment():
    results = [_result("a", 0.995, 9.0), _result("b", 0.991, 7.0), _result("c", 0.98, 3.0)]
    assert _best(results, 0.99).setting == "b"
    assert _best(results, 0.999).setting == "a"  # none reaches it: the highest attainment


def test_report_on_a_short_trace():
    rng = np.random.default_rng(0)
    n = 1500
    trace = Trace(
        "short", np.sort(rng.uniform(0, 600, n)), rng.integers(100, 3000, n), rng.integers(2, 60, n)
    )
    report, _ = run(trace, ("goodput", "static", "oracle"), workers=1)
    p = report["policies"]
    assert set(p) == {"goodput", "static", "oracle"}
    for entry in p.values():
        assert {"attainment", "ttft_p95_ms", "tpot_p95_ms", "gpu_hours", "cost", "scale_events"} <= set(entry)
    assert len(p["static"]["sweep"]) >= 5
    assert p["oracle"]["gpu_hours"] <= min(
        s["gpu_hours"] for s in p["static"]["sweep"] if s["attainment"] >= p["oracle"]["attainment"]
    )
    assert "attainment" in report["targets"]
    assert report["workload"]["data"] == "short"  # the trace replayed, not a fixed citation
    json.dumps(json_ready(report))  # standard JSON
    assert table(report).count("\n") >= 2 + len(p["static"]["sweep"])


def test_sweeps_extend_until_they_bracket_the_target():
    reach, miss = _result("a", 0.995, 9.0), _result("b", 0.95, 3.0)
    assert bracketing([1.0, 2.0, 8.0], [reach, reach, reach], 0.99) == 16.0  # all reach: fewer replicas
    assert bracketing([1.0, 2.0, 8.0], [miss, miss, miss], 0.99) == 0.5  # none reaches: more replicas
    assert bracketing([1.0, 2.0, 8.0], [reach, reach, miss], 0.99) is None


def test_replayed_hpa_sweep_holds_settings_on_both_sides_of_the_target():
    rng = np.random.default_rng(1)
    n = 30000  # 50 rps of chat: one replica cannot carry it, so a lax enough setting misses the target
    trace = Trace(
        "busy", np.sort(rng.uniform(0, 600, n)), rng.integers(500, 3000, n), rng.integers(50, 400, n)
    )
    report, _ = run(trace, ("hpa",), workers=1)
    attained = [row["attainment"] >= 0.99 for row in report["policies"]["hpa"]["sweep"]]
    assert any(attained) and not all(attained)

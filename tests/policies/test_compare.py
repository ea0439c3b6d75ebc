"""The comparison report: its JSON shape, and how a baseline's headline setting is chosen."""

import json

import numpy as np
import pytest

from goodput.controllers.replay import json_ready, run, run_over_configurations, table
from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies import planner
from goodput.policies.compare import Pinned, ServiceShape, bracketing, configuration_of, headline, setup
from goodput.policies.simulator import SimResult, Timeline
from goodput.policies.types import Load
from goodput.policies.workloads import Trace


def _result(setting: str, attainment: float, gpu_hours: float) -> SimResult:
    empty = np.zeros(0)
    return SimResult(
        "hpa", setting, attainment, 100.0, 10.0, gpu_hours, 4 * gpu_hours, 0, 1, empty, empty, empty,
        Timeline(empty, empty, empty, empty, empty, empty),
    )  # fmt: skip


def test_headline_is_the_cheapest_setting_reaching_the_target_else_the_best_attainment():
    results = [_result("a", 0.995, 9.0), _result("b", 0.991, 7.0), _result("c", 0.98, 3.0)]
    assert headline(results, 0.99).setting == "b"
    assert headline(results, 0.999).setting == "a"  # none reaches it: the highest attainment


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
    # a larger per-pod target runs fewer replicas: when all reach, fewer; when none, more
    assert bracketing("hpa", [1.0, 2.0, 8.0], [reach, reach, reach], 0.99) == 16.0
    assert bracketing("hpa", [1.0, 2.0, 8.0], [miss, miss, miss], 0.99) == 0.5
    assert bracketing("hpa", [1.0, 2.0, 8.0], [reach, reach, miss], 0.99) is None
    # a static fleet: more replicas reach it
    assert bracketing("static", [4.0, 6.0, 13.0], [miss, miss, miss], 0.99) == 17.0
    assert bracketing("static", [4.0, 6.0, 13.0], [reach, reach, reach], 0.99) == 3.0
    assert bracketing("static", [1.0, 2.0], [reach, reach], 0.99) is None  # no smaller fleet
    assert bracketing("static", [4.0, 6.0, 13.0], [miss, miss, reach], 0.99) is None


def test_replayed_hpa_sweep_holds_settings_on_both_sides_of_the_target():
    rng = np.random.default_rng(1)
    n = 30000  # 50 rps of chat: one replica cannot carry it, so a lax enough setting misses the target
    trace = Trace(
        "busy", np.sort(rng.uniform(0, 600, n)), rng.integers(500, 3000, n), rng.integers(50, 400, n)
    )
    report, _ = run(trace, ("hpa",), workers=1)
    attained = [row["attainment"] >= 0.99 for row in report["policies"]["hpa"]["sweep"]]
    assert any(attained) and not all(attained)


def _chat(name: str, rps: float, seconds: float, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    n = int(rps * seconds)
    return Trace(
        name, np.sort(rng.uniform(0, seconds, n)), rng.integers(200, 3000, n), rng.integers(20, 300, n)
    )


TWO_POOLS = ServiceShape("llama-3-70b", (("H100-SXM", None), ("A100-80GB", 1.5)), max_tensor_parallel=8)


def test_a_pinned_configuration_is_the_fleet_simulated_and_priced_by_its_own_pool():
    trace = _chat("chat", 4.0, 300.0, 2)
    free = setup(trace, shape=TWO_POOLS)
    assert len(free.configurations) >= 2 and configuration_of(free.initial) == free.configurations[0]
    for configuration in free.configurations:
        pinned = setup(trace, shape=TWO_POOLS, configuration=configuration)
        assert configuration_of(pinned.initial) == configuration
        assert pinned.sim.gpus_per_replica == configuration[1]
        assert pinned.sim.price_per_gpu_hour == (1.5 if configuration[0] == "A100-80GB" else 4.0)
    with pytest.raises(ValueError, match="L40S TP2"):
        setup(trace, shape=TWO_POOLS, configuration=("L40S", 2))


@pytest.mark.parametrize(
    ("interval_s", "window_s", "observed_s"), [(15, None, 15), (60, None, 60), (15, 60.0, 60), (15, 30.0, 30)]
)
def test_each_observation_covers_the_operator_s_range_and_at_least_an_interval(
    interval_s, window_s, observed_s
):
    policy = SLOPolicySpec(evaluation_interval_seconds=interval_s)
    s = setup(_chat("chat", 4.0, 300.0, 2), policy=policy, window_s=window_s)
    assert (s.sim.interval_s, s.sim.window_s) == (interval_s, observed_s)


def test_plans_drawn_within_a_configuration_never_leave_it():
    trace = _chat("chat", 4.0, 300.0, 3)
    s = setup(trace, shape=TWO_POOLS)
    load = Load(rps=4.0, prompt_tokens=trace.prompt_tokens, output_tokens=trace.output_tokens)
    for configuration in s.configurations:
        result = Pinned(planner.plan, configuration)(s.spec, load, SLOPolicySpec(), 1.0, 1.0)
        assert result.chosen is not None and configuration_of(result.chosen) == configuration
        assert all(configuration_of(c) == configuration for c in result.alternatives)
    nowhere = Pinned(planner.plan, ("L40S", 2))(s.spec, load, SLOPolicySpec(), 1.0, 1.0)
    assert nowhere.chosen is None and nowhere.binding_constraint


def test_over_configurations_each_baseline_reports_its_cheapest_configuration_in_hindsight():
    trace = _chat("chat", 3.0, 300.0, 4)
    report, _ = run_over_configurations(trace, TWO_POOLS, workers=1)
    p, tried = report["policies"], report["configurations"]
    assert len(tried) >= 2 and p["goodput"]["configuration"] in tried
    for name in ("hpa", "keda", "static", "oracle"):
        options = {label: rows[name] for label, rows in tried.items()}
        assert p[name]["configuration"] in options
        reaching = [row["cost"] for row in options.values() if row["attainment"] >= 0.99]
        if reaching:
            assert p[name]["cost"] == min(reaching)

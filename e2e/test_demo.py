"""The demo's own pieces without a cluster: the per-second points, the summary's attainment and the plot."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from e2e import demo, loadgen


def result(start: float, ttft: float, tpot: float, error: str | None = None) -> loadgen.Result:
    return loadgen.Result(start, 8, 4, "127.0.0.2:8000", ttft, tpot, ttft + 3 * tpot, 4, error)


def test_summary_counts_requests_meeting_both_slo_targets(tmp_path: Path) -> None:
    slo_ttft, slo_tpot = demo.SLO["ttftP95Ms"] / 1000, demo.SLO["tpotP95Ms"] / 1000
    run = loadgen.Run()
    run.results = [
        result(0.0, slo_ttft / 2, slo_tpot / 2),
        result(0.5, slo_ttft * 2, slo_tpot / 2),  # misses TTFT
        result(1.0, slo_ttft / 2, slo_tpot * 2),  # misses TPOT
        result(1.5, slo_ttft / 2, slo_tpot / 2, error="HTTP 503"),
    ]
    points = [
        demo.Point(t, 1.0, replicas, replicas, 100.0, 10.0, 0, "")
        for t, replicas in [(1.0, 1), (2.0, 2), (3.0, 2)]
    ]
    setting = {"node_runtime": "containerd://1.6.20", "worker_image": "ghcr.io/goodput/worker:0.1.0-abc"}
    summary = demo.summarise(run, points, ["scaled interactive 1→2: why"], setting)
    assert summary["attainment"] == 0.25 and summary["failed"] == 1 and summary["requests"] == 4
    assert summary["max_replicas"] == 2 and summary["replica_seconds"] == 5.0
    assert (summary["scale_ups"], summary["scale_downs"]) == (1, 0)
    assert summary["node_runtime"] == "containerd://1.6.20" and summary["worker_image"].endswith("-abc")
    assert "Splitwise" in summary["trace"]

    demo.plot([*points, demo.Point(4.0, 0.0, 1, 1, None, None, 0, "")], tmp_path / "demo.png")
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_live_table_shows_load_replicas_latency_against_slo_and_the_decision() -> None:
    run = loadgen.Run()
    run.sent_at = [0.0, 0.1]
    ttft_slo, tpot_slo = demo.SLO["ttftP95Ms"], demo.SLO["tpotP95Ms"]
    point = demo.Point(12.0, 0.2, 3, 2, ttft_slo + 500, 50.0, 0, "scaled interactive 1→3: TTFT p95 over")
    console = Console(width=120, record=True)
    console.print(demo.table(point, run, 10))
    text = console.export_text()
    assert "2/10 requests sent" in text and "2 ready / 3 decided" in text
    assert f"{ttft_slo + 500:.0f} / {ttft_slo:.0f} ms" in text and f"50 / {tpot_slo:.0f} ms" in text
    assert "scaled interactive 1→3" in text


def test_peak_rate_is_the_busiest_window() -> None:
    arrivals = [loadgen.Arrival(t, 8, 4) for t in (0.0, 10.0, 10.5, 11.0, 11.5, 30.0)]
    assert demo.peak_rps(arrivals, 2.0) == 2.0  # four arrivals within 10.0-11.5
    assert demo.peak_rps(arrivals, 40.0) == 6 / 40
    assert demo.peak_rps([], 2.0) == 0.0


def test_changes_count_scale_ups_and_downs() -> None:
    replicas = [1, 1, 3, 3, 2, 1, 2]
    points = [demo.Point(float(i), 0.0, r, r, None, None, 0, "") for i, r in enumerate(replicas)]
    assert demo.changes(points) == (2, 2)

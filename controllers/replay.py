"""Replaying a trace under every policy: simulations side by side in processes, then tables and plots.

The comparison itself (setup, sweeps, report) is pure and lives in `policies.compare`; this module is its
imperative shell. `goodput simulate`'s options and command are in controllers/cli/simulate.py.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from goodput.crds.slopolicy import SLOPolicySpec
from goodput.policies.compare import (
    BRACKET_ROUNDS,
    POLICIES,
    SWEEPS,
    Configuration,
    Job,
    ServiceShape,
    Setup,
    baseline_job,
    bracketing,
    build_report,
    configuration_label,
    configuration_of,
    headline,
    run_job,
    setup,
    static_counts,
    sweep_jobs,
)
from goodput.policies.simulator import SimResult
from goodput.policies.workloads import Trace

Progress = Callable[[int, int], None]  # (simulations done, simulations in all): at the start and after each


def _run_jobs(
    trace: Trace, jobs: list[Job], workers: int, progress: Progress | None = None
) -> list[SimResult]:
    done: dict[int, SimResult] = {}

    def finished(index: int, result: SimResult) -> None:
        done[index] = result
        if progress is not None:
            progress(len(done), len(jobs))

    if progress is not None:
        progress(0, len(jobs))
    if workers <= 1 or len(jobs) <= 1:
        for index, job in enumerate(jobs):
            finished(index, run_job(trace, job))
        return [done[i] for i in range(len(jobs))]
    # the oracle (several simulations) starts first so it does not finish last alone
    order = sorted(range(len(jobs)), key=lambda i: jobs[i][0] is not None)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        futures = {pool.submit(run_job, trace, jobs[i]): i for i in order}
        for future in as_completed(futures):
            finished(futures[future], future.result())
    return [done[i] for i in range(len(jobs))]


def _bracket(trace: Trace, s: Setup, runs: dict[str, list[SimResult]], workers: int) -> None:
    """Extend the HPA, KEDA and static sweeps, a setting per round, until each holds settings on both sides of
    the attainment target (a sweep that stops short of its knee makes any comparison an artifact of the sweep)."""
    knobs = {name: list(SWEEPS[name]) for name in SWEEPS if name in runs}
    if "static" in runs:
        knobs["static"] = [float(n) for n in static_counts(s)]
    for _ in range(BRACKET_ROUNDS):
        more = {
            name: k
            for name, values in knobs.items()
            if (k := bracketing(name, values, runs[name], s.sim.slo.attainment)) is not None
        }
        if not more:
            return
        jobs = [baseline_job(name, k, s) for name, k in more.items()]
        for name, result in zip(more, _run_jobs(trace, jobs, workers), strict=True):
            knobs[name].append(more[name])
            runs[name].append(result)


def run(
    trace: Trace,
    policies: tuple[str, ...] = POLICIES,
    start_delay_s: float | None = None,
    seed: int = 0,
    policy: SLOPolicySpec | None = None,
    workers: int = 2,
    progress: Progress | None = None,
    slo_ms: tuple[float, float] = (1000.0, 100.0),
    shape: ServiceShape = ServiceShape(),
    configuration: Configuration | None = None,
    window_s: float | None = None,
) -> tuple[dict[str, Any], dict[str, list[SimResult]]]:
    """Replay `trace` under each policy (baselines over their sweeps); the report dict and all results.

    Simulations are independent, so `workers` processes run them side by side.
    """
    started = time.perf_counter()
    s = setup(trace, start_delay_s, seed, policy, slo_ms, shape, configuration, window_s)
    jobs = sweep_jobs(s, policies)
    runs: dict[str, list[SimResult]] = {}
    for (name, _), result in zip(
        jobs, _run_jobs(trace, [job for _, job in jobs], workers, progress), strict=True
    ):
        runs.setdefault(name, []).append(result)
    _bracket(trace, s, runs, workers)
    report = build_report(trace, s, runs)
    report["wall_s"] = round(time.perf_counter() - started, 2)
    return report, runs


def run_over_configurations(
    trace: Trace,
    shape: ServiceShape,
    start_delay_s: float | None = None,
    seed: int = 0,
    workers: int = 2,
    slo_ms: tuple[float, float] = (1000.0, 100.0),
    window_s: float | None = None,
) -> tuple[dict[str, Any], dict[str, list[SimResult]]]:
    """Every policy with the same choice of hardware (`shape`'s pools and TP degrees).

    goodput runs the configuration its planner picks for the peak, and keeps it (the simulator does not roll a
    fleet onto other hardware). Each baseline, and the oracle, runs on every configuration the planner finds
    feasible at the peak and reports the one a team would pick in hindsight: the cheapest in dollars that
    reaches the target, else the highest attainment. Every configuration's figures stay in the report.
    """
    started = time.perf_counter()
    s = setup(trace, start_delay_s, seed, slo_ms=slo_ms, shape=shape, window_s=window_s)
    _, runs = run(
        trace,
        ("goodput",),
        start_delay_s,
        seed,
        workers=workers,
        slo_ms=slo_ms,
        shape=shape,
        window_s=window_s,
    )
    baselines = tuple(p for p in POLICIES if p != "goodput")
    tried = {
        configuration_label(c): run(
            trace,
            baselines,
            start_delay_s,
            seed,
            workers=workers,
            slo_ms=slo_ms,
            shape=shape,
            configuration=c,
            window_s=window_s,
        )[1]
        for c in s.configurations
    }
    target = s.sim.slo.attainment

    def hindsight(best: SimResult) -> tuple[bool, float]:
        meets = best.attainment >= target
        return meets, -best.cost if meets else best.attainment

    chosen = {
        name: max(tried, key=lambda tag: hindsight(headline(tried[tag][name], target))) for name in baselines
    }
    runs |= {name: tried[tag][name] for name, tag in chosen.items()}
    report = build_report(trace, s, runs)
    report["policies"]["goodput"]["configuration"] = configuration_label(configuration_of(s.initial))
    for name, best in chosen.items():
        report["policies"][name]["configuration"] = best
    report["configurations"] = {
        name: {policy: headline(results[policy], target).summary() for policy in baselines}
        for name, results in tried.items()
    }
    report["wall_s"] = round(time.perf_counter() - started, 2)
    return report, runs


def table(report: dict[str, Any]) -> str:
    """One row per policy and setting."""
    head = f"{'policy':8} {'setting':22} {'attain':>7} {'TTFT p95':>9} {'TPOT p95':>9} {'GPU-h':>7} {'cost $':>8} {'events':>6}"
    lines = [head, "-" * len(head)]
    for name, entry in report["policies"].items():
        for row in entry.get("sweep", [entry]):
            mark = (
                "*" if row is not entry and row["setting"] == entry["setting"] and "sweep" in entry else " "
            )
            lines.append(
                f"{name:8} {row['setting'] + mark:22} {row['attainment']:7.2%} {row['ttft_p95_ms']:8.0f}m "
                f"{row['tpot_p95_ms']:8.1f}m {row['gpu_hours']:7.2f} {row['cost']:8.2f} {row['scale_events']:6d}"
            )
    lines.append("(* the setting reported for the baseline; ms in TTFT/TPOT columns)")
    return "\n".join(lines)


def plot(report: dict[str, Any], runs: dict[str, list[SimResult]], path: str) -> None:
    """The frontier (GPU-hours against attainment) and, over time, load, replicas and p95 against the SLO."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1, ax2) = plt.subplots(3, 1, figsize=(10, 12))
    for name, results in runs.items():
        ax0.plot([r.gpu_hours for r in results], [100 * r.attainment for r in results], "o-", label=name)
    ax0.axhline(100 * report["setup"]["slo"]["attainment"], color="grey", ls="--", lw=0.8)
    ax0.set_xlabel("GPU-hours")
    ax0.set_ylabel("SLO attainment (%)")
    ax0.set_title(f"{report['workload']['name']}: cost against attainment")
    ax0.legend()
    shown = {name: _pick(results, report["policies"][name]["setting"]) for name, results in runs.items()}
    first = next(iter(shown.values()))
    ax1.plot(first.timeline.time / 60, first.timeline.rps, color="grey", lw=0.7, label="offered rps")
    ax1.set_ylabel("requests/s")
    twin = ax1.twinx()
    for name, r in shown.items():
        twin.step(r.timeline.time / 60, r.timeline.ready, where="post", label=f"{name} ready")
    twin.set_ylabel("ready replicas")
    twin.legend(loc="upper right", fontsize=8)
    for name, r in shown.items():
        ax2.plot(r.timeline.time / 60, r.timeline.ttft_p95_ms, lw=0.8, label=f"{name} TTFT p95")
    ax2.axhline(report["setup"]["slo"]["ttft_p95_ms"], color="red", ls="--", lw=0.8, label="SLO")
    ax2.set_yscale("log")
    ax2.set_xlabel("minutes")
    ax2.set_ylabel("ms (observed per interval)")
    ax2.legend(fontsize=8)
    fig.text(0.01, 0.005, report["workload"]["data"], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pick(results: list[SimResult], setting: str) -> SimResult:
    return next((r for r in results if r.setting == setting), results[0])


def json_ready(report: dict[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats (an unfinished request's p95) with None so the JSON is standard."""

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean(report)

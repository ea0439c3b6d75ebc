"""`make demo`: goodput on a real local cluster, serving a slice of a production trace, in a few minutes.

Brings up the e2e stack (building the binaries the first time, with visible progress), installs goodput
with `kubectl apply -k` (the operator runs from its Deployment under its own ServiceAccount), deploys the
CPU example serving a larger preset (`random:bench-small`) under a fast SLOPolicy, and replays a
time-compressed slice of the Azure LLM code trace (Patel et al., "Splitwise: Efficient Generative LLM
Inference Using Phase Splitting", ISCA 2024; Azure public dataset 2023, CC-BY 4.0) through the OpenAI API.

The load is sized to the machine, not to the trace: one replica's capacity is measured first (a twin pod,
closed loop), and the slice's rate is scaled so that its busiest window asks for PEAK_SHARE times that, so
one replica cannot carry the burst and the quiet minutes after it need only one. A live table shows load,
replicas, client-side TTFT/TPOT p95 against the SLO and the operator's last decision; after the replay the
demo waits for the scale-down. The end prints a summary (with the node's container runtime and the
worker's image), writes out/demo.png (load, replicas ready/decided with each decision, p95 against the
SLO) and out/demo.json, and tears everything down.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kubernetes.client import AppsV1Api, CoreV1Api
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from e2e import build, images, loadgen, service
from e2e import operator as goodput
from e2e.stack import REPO, Stack, running_stack

TRACE_CITATION = "Azure LLM inference trace 2023 (code), Patel et al., Splitwise, ISCA 2024; Azure public dataset, CC-BY 4.0"
NAMESPACE, NAME = "default", "demo"
# bench-small on one CPU thread: its p95 at low load sits well inside this SLO, and a queue of a few
# seconds (a burst one replica cannot carry) breaks it. The same preset and SLO as the e2e load step.
MODEL, PROMPT_CAP, OUTPUT_CAP = "random:bench-small", 256, 8
SLO = {"ttftP95Ms": 2500.0, "tpotP95Ms": 2500.0, "attainment": 0.9}
POLICY = service.FastPolicy(name="demo-fast")
WINDOW_S = 10.0  # the live table's rolling window
PEAK_SHARE = 1.3  # the busiest window asks for this many replicas' worth: two shared cores hold ~1.5
PEAK_WINDOW_S = 20.0
SETTLE_S = (
    180.0  # after the replay, how long to wait for the scale-down (each step waits out the stabilization)
)


@dataclass
class Point:
    """One second of the demo, for the table, the plot and out/demo.json."""

    t: float
    rps: float
    replicas: int
    ready: int
    ttft_p95_ms: float | None
    tpot_p95_ms: float | None
    failed: int
    decision: str


def window(run: loadgen.Run, seconds: float) -> list[loadgen.Result]:
    return [r for r in run.results if r.start_s > run.now() - seconds]


def point(run: loadgen.Run, watcher: service.Watcher) -> Point:
    recent = window(run, WINDOW_S)
    ok = [r for r in recent if r.ok]
    ttft = loadgen.p95([r.ttft_s for r in ok if r.ttft_s is not None])
    tpot = loadgen.p95([r.tpot_s for r in ok if r.tpot_s is not None])
    latest = watcher.latest()
    return Point(
        t=round(run.now(), 1),
        rps=sum(t > run.now() - WINDOW_S for t in run.sent_at) / WINDOW_S,
        replicas=latest.replicas if latest else 0,
        ready=latest.ready if latest else 0,
        ttft_p95_ms=None if ttft is None else ttft * 1000,
        tpot_p95_ms=None if tpot is None else tpot * 1000,
        failed=sum(not r.ok for r in run.results),
        decision=latest.decision if latest else "",
    )


def versus(value: float | None, target: float) -> str:
    if value is None:
        return "–"
    colour = "green" if value <= target else "red"
    return f"[{colour}]{value:.0f}[/] / {target:.0f}"


def table(p: Point, run: loadgen.Run, total: int) -> Table:
    """One row per quantity: fits a narrow terminal, and the decision reads as the operator wrote it."""
    grid = Table(title=f"goodput demo: {NAMESPACE}/{NAME} on the local cluster", title_justify="left")
    grid.add_column("", style="bold", no_wrap=True)
    grid.add_column(f"now (client side, last {WINDOW_S:.0f} s)")
    rows = [
        ("time", f"{p.t:.0f} s, {run.sent}/{total} requests sent, {run.in_flight} open"),
        ("load", f"{p.rps:.1f} rps"),
        ("replicas", f"{p.ready} ready / {p.replicas} decided"),
        ("TTFT p95 / SLO", f"{versus(p.ttft_p95_ms, SLO['ttftP95Ms'])} ms"),
        ("TPOT p95 / SLO", f"{versus(p.tpot_p95_ms, SLO['tpotP95Ms'])} ms"),
        ("failed", str(p.failed)),
        ("last decision", escape(p.decision) or "–"),
    ]
    for key, value in rows:
        grid.add_row(key, value)
    grid.caption = f"load: {TRACE_CITATION}"
    return grid


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p.t for p in points]
    fig, (load, reps, lat) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    load.plot(t, [p.rps for p in points], color="tab:blue")
    load.set_ylabel("requests/s")
    load.set_title("goodput on the local cluster: Azure code trace slice (Splitwise, ISCA 2024; CC-BY 4.0)")
    reps.step(t, [p.replicas for p in points], where="post", label="decided (spec)", color="tab:orange")
    reps.step(t, [p.ready for p in points], where="post", label="ready", color="tab:green", linestyle="--")
    for before, after in itertools.pairwise(points):
        if after.replicas != before.replicas:  # each decision: a line and its new replica count
            colour = "tab:red" if after.replicas > before.replicas else "tab:purple"
            for axis in (load, reps, lat):
                axis.axvline(after.t, color=colour, alpha=0.4, linewidth=1)
            arrow = "↑" if after.replicas > before.replicas else "↓"
            reps.annotate(f"{arrow}{after.replicas}", (after.t, after.replicas), color=colour, fontsize=9)
    reps.set_ylabel("replicas")
    reps.legend(loc="upper left")
    nan = float("nan")
    lat.plot(t, [p.ttft_p95_ms if p.ttft_p95_ms is not None else nan for p in points], label="TTFT p95")
    lat.plot(t, [p.tpot_p95_ms if p.tpot_p95_ms is not None else nan for p in points], label="TPOT p95")
    lat.axhline(SLO["ttftP95Ms"], color="tab:blue", linestyle=":", label="TTFT SLO")
    lat.axhline(SLO["tpotP95Ms"], color="tab:orange", linestyle=":", label="TPOT SLO")
    lat.set_ylabel(f"ms (client, {WINDOW_S:.0f} s window)")
    lat.set_xlabel("seconds")
    lat.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def changes(points: list[Point]) -> tuple[int, int]:
    """How often the decided replicas went up, and down, over the run."""
    pairs = list(itertools.pairwise(points))
    return sum(b.replicas > a.replicas for a, b in pairs), sum(b.replicas < a.replicas for a, b in pairs)


def summarise(
    run: loadgen.Run, points: list[Point], decisions: list[str], setting: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The run's numbers; ``setting`` records where and how it ran (node runtime, image, load sizing)."""
    ok = [r for r in run.results if r.ok]
    met = [
        r
        for r in ok
        if r.ttft_s is not None
        and r.ttft_s * 1000 <= SLO["ttftP95Ms"]
        and (r.tpot_s is None or r.tpot_s * 1000 <= SLO["tpotP95Ms"])
    ]
    replica_seconds = float(np.sum([p.replicas for p in points])) if points else 0.0
    ups, downs = changes(points)
    return {
        **loadgen.summary(run.results),
        "slo": SLO,
        "attainment": len(met) / len(run.results) if run.results else None,
        "max_replicas": max((p.replicas for p in points), default=0),
        "scale_ups": ups,
        "scale_downs": downs,
        "replica_seconds": replica_seconds,
        "duration_s": points[-1].t if points else 0.0,
        **(setting or {}),
        "decisions": decisions,
        "trace": TRACE_CITATION,
    }


def peak_rps(arrivals: list[loadgen.Arrival], window_s: float) -> float:
    """The highest request rate over any ``window_s`` of the arrivals."""
    times = np.array([a.at_s for a in arrivals])
    if times.size == 0:
        return 0.0
    counts = np.searchsorted(times, times + window_s) - np.arange(times.size)
    return float(counts.max()) / window_s


def replica_capacity(stack: Stack, deployment: str) -> float:
    """Requests per second one replica completes, closed loop on a twin pod (no Service routes to it)."""
    warmup, seconds = 5.0, 15.0
    with service.twin(stack, NAMESPACE, deployment) as replica:
        probe = asyncio.run(
            loadgen.saturate(
                lambda: [replica],
                prompt=PROMPT_CAP,
                output=OUTPUT_CAP,
                concurrency=8,
                seconds=warmup + seconds,
            )
        )
    capacity = loadgen.throughput(probe.results, warmup, warmup + seconds)
    if capacity <= 0:
        raise RuntimeError(f"one replica served nothing: {loadgen.summary(probe.results)}")
    return capacity


def where(stack: Stack, deployment: str) -> dict[str, str]:
    """The node's container runtime and kubelet, and the image a worker container actually runs."""
    with stack.api_client() as client:
        core = CoreV1Api(client)
        info = core.read_node(stack.nodes[0]).status.node_info
        selector = AppsV1Api(client).read_namespaced_deployment(deployment, NAMESPACE).spec.selector
        labels = ",".join(f"{k}={v}" for k, v in selector.match_labels.items())
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=labels).items
    running = [c for p in pods for c in p.status.container_statuses or [] if c.state.running]
    if not running:
        raise RuntimeError(f"no running worker container in {NAMESPACE} ({labels})")
    return {
        "node_runtime": info.container_runtime_version,
        "kubelet": info.kubelet_version,
        "worker_image": running[0].image,
        "worker_image_id": running[0].image_id,
    }


def decisions(stack: Any) -> list[str]:
    events = goodput.kubectl(
        stack,
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        f"involvedObject.name={NAME},involvedObject.kind=InferenceService",
        "--sort-by=.lastTimestamp",
        "-o",
        "jsonpath={range .items[*]}{.message}{'\\n'}{end}",
    )
    return [line for line in events.splitlines() if line]


async def replay(
    stack: Any, arrivals: list[loadgen.Arrival], watcher: service.Watcher, console: Console
) -> tuple[loadgen.Run, list[Point]]:
    """Play the arrivals, one point a second; then keep watching until the fleet is back to one replica."""
    _, svc = service.workers(stack, NAMESPACE, NAME)
    run = loadgen.Run()
    points: list[Point] = []
    task = asyncio.create_task(
        loadgen.replay(
            arrivals,
            lambda: stack.service_endpoints(NAMESPACE, svc),
            run=run,
            deadline_s=arrivals[-1].at_s + 60,
        )
    )
    with Live(console=console, refresh_per_second=2) as live:
        settle_until = None
        while True:
            await asyncio.sleep(1.0)
            points.append(point(run, watcher))
            live.update(table(points[-1], run, len(arrivals)))
            if not task.done():
                continue
            settle_until = settle_until or time.monotonic() + SETTLE_S
            scaled = max(p.replicas for p in points) > 1
            if time.monotonic() > settle_until or (scaled and points[-1].replicas == points[-1].ready == 1):
                break
    await task
    return run, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start-s", type=float, default=660.0, help="where the slice starts in the trace")
    parser.add_argument("--duration-s", type=float, default=600.0, help="trace seconds to replay")
    parser.add_argument("--compress", type=float, default=3.0, help="play the slice this many times faster")
    parser.add_argument(
        "--peak-share",
        type=float,
        default=PEAK_SHARE,
        help="the busiest window's load, in replicas' worth (one replica's capacity is measured first)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "out")
    args = parser.parse_args()
    console = Console()
    began = time.monotonic()
    console.rule("goodput demo")
    console.print(
        "binaries and images: building what is missing (the first build takes ~20 minutes on 2 cores)…"
    )
    build.ensure_binaries()
    images.ensure_all()
    with running_stack() as stack:
        console.print(
            f"stack up in {stack.start_seconds:.1f} s: Kubernetes {stack.version}, Prometheus, "
            f"node {stack.nodes[0]} (containerd, kube-proxy)"
        )
        console.out(goodput.install(stack).rstrip())
        console.print(
            f"operator pod {goodput.wait_ready(stack, timeout=180)} running as {goodput.NAMESPACE}/{goodput.NAME}"
        )
        service.apply(stack, POLICY.manifest())
        manifest = service.sized_service(
            NAMESPACE,
            POLICY.name,
            SLO,
            name=NAME,
            source=MODEL,
            prompt_tokens=PROMPT_CAP,
            output_tokens=OUTPUT_CAP,
            expected_rps=0.5,
        )
        service.apply(stack, manifest)
        service.wait_ready(stack, NAMESPACE, NAME, timeout=300)
        console.out(goodput.kubectl(stack, "get", "gpsvc", "-n", NAMESPACE).rstrip())
        deployment, _ = service.workers(stack, NAMESPACE, NAME)
        capacity = replica_capacity(stack, deployment)
        window = (args.start_s, args.duration_s)
        unscaled = loadgen.azure_slice(
            *window, compress=args.compress, max_prompt=PROMPT_CAP, max_output=OUTPUT_CAP
        )
        scale = args.peak_share * capacity / peak_rps(unscaled, PEAK_WINDOW_S)
        arrivals = loadgen.azure_slice(
            *window, compress=args.compress, scale=scale, max_prompt=PROMPT_CAP, max_output=OUTPUT_CAP
        )
        console.print(
            f"one replica serves {capacity:.2f} rps ({MODEL}, prompts ≤{PROMPT_CAP}, outputs ≤{OUTPUT_CAP} "
            f"tokens); load: {len(arrivals)} requests, trace seconds {args.start_s:g}–"
            f"{args.start_s + args.duration_s:g} played {args.compress:g}x faster at {scale:.3g}x rate, "
            f"busiest {PEAK_WINDOW_S:g} s at {peak_rps(arrivals, PEAK_WINDOW_S):.2f} rps ({TRACE_CITATION})"
        )
        setting = where(stack, deployment) | {
            "model": MODEL,
            "replica_capacity_rps": round(capacity, 3),
            "trace_scale": round(scale, 4),
            "peak_rps": round(peak_rps(arrivals, PEAK_WINDOW_S), 3),
        }
        with service.Watcher(stack, NAMESPACE, NAME, deployment) as watcher:
            run, points = asyncio.run(replay(stack, arrivals, watcher, console))
        console.out(goodput.kubectl(stack, "get", "gpsvc", "-n", NAMESPACE).rstrip())
        summary = summarise(run, points, decisions(stack), setting)
        console.print("tearing down…")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(points, args.out / "demo.png")
    record = {"summary": summary, "timeline": [asdict(p) for p in points]}
    (args.out / "demo.json").write_text(json.dumps(record, indent=2))
    console.rule("summary")
    for key, value in summary.items():
        if key != "decisions":
            console.print(f"{key}: {value}")
    console.print("decisions:")
    for line in summary["decisions"]:
        console.print(f"  {escape(line)}")
    console.print(
        f"plot: {args.out / 'demo.png'}; data: {args.out / 'demo.json'}; total {time.monotonic() - began:.0f} s"
    )


if __name__ == "__main__":
    main()

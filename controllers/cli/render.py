"""The CLI's shared formatting: a plan as JSON and as a table, the frontier plot, and the cells of the tables.

JSON output is camelCase throughout, as the API is: a candidate has status.plan's keys, so `goodput plan
--json`, `goodput explain --json` and `kubectl get gpsvc -o json` describe a plan the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from rich.console import Console

from goodput.controllers.status import plan_status
from goodput.policies.display import ms
from goodput.policies.types import Candidate


def console() -> Console:
    return Console(width=max(Console().width, 160))


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def rps_text(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3g} rps"


def age(stamp: str | None) -> str:
    """How long ago an RFC 3339 time was, in its largest unit (5m, 2h, 3d)."""
    if not stamp:
        return "—"
    seconds = max(0.0, time.time() - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def finite(x: float) -> float | None:
    return round(x, 3) if math.isfinite(x) else None


def candidate_json(candidate: Candidate) -> dict[str, Any]:
    """A planner candidate in status.plan's form, non-finite numbers as null, with what only a what-if shows:
    the GPUs it takes, its utilisation and what rules it out."""
    wire = plan_status(candidate)
    for key in ("predictedTtftP95Ms", "predictedTpotP95Ms", "costPerHour"):
        wire[key] = finite(wire[key])
    return {
        **wire,
        "gpus": candidate.replicas * candidate.tensor_parallel,
        "utilisation": finite(candidate.utilisation),
        "rejected": candidate.rejected,
    }


def plan_report(spec: Any, load: Any, profile: Any, result: Any) -> dict[str, Any]:
    """The JSON form of a plan: the chosen configuration, the model's numbers, the load and the alternatives."""
    chosen = candidate_json(result.chosen) if result.chosen is not None else None
    if chosen is not None:
        chosen.pop("rejected")
    return {
        "plan": chosen,
        "bindingConstraint": result.binding_constraint,
        "slo": spec.slo.to_wire(),
        "model": {
            "name": profile.name,
            "params": profile.params,
            "dtype": profile.dtype,
            "layers": profile.layers,
            "kvHeads": profile.kv_heads,
            "headDim": profile.head_dim,
            "weightBytes": profile.weight_bytes,
            "kvBytesPerToken": result.kv_bytes_per_token,
        },
        "load": {
            "rps": load.rps,
            "promptTokensP50": float(np.percentile(load.prompt_tokens, 50)),
            "promptTokensP95": float(np.percentile(load.prompt_tokens, 95)),
            "outputTokensP50": float(np.percentile(load.output_tokens, 50)),
            "outputTokensP95": float(np.percentile(load.output_tokens, 95)),
            "batchFraction": load.batch_fraction,
        },
        "alternatives": [candidate_json(c) for c in result.alternatives],
    }


def _verdict(label: str, candidate: dict[str, Any], plan: dict[str, Any] | None) -> str:
    if label == "plan":
        return "chosen"
    if plan is not None and candidate["costPerHour"] <= plan["costPerHour"] + 1e-9:
        return "same cost, ranked after"
    return "costlier"


def print_plan_table(report: dict[str, Any], alternatives: int) -> None:
    """The plan and its first `alternatives`, one row each, under a line with the model, load and SLO."""
    from rich.table import Table

    out = Console(width=max(Console().width, 150))
    model, load, slo = report["model"], report["load"], report["slo"]
    out.print(
        f"[bold]{model['name']}[/]: {model['params'] / 1e9:.2f} B params, {model['dtype']}, "
        f"KV {model['kvBytesPerToken']:,} bytes/token · load {load['rps']:.2f} rps, prompt p50/p95 "
        f"{load['promptTokensP50']:.0f}/{load['promptTokensP95']:.0f}, output p50/p95 "
        f"{load['outputTokensP50']:.0f}/{load['outputTokensP95']:.0f} · SLO "
        + ", ".join(f"{k} {v}" for k, v in slo.items())
    )
    table = Table(show_lines=False)
    for column in (
        "",
        "accelerator",
        "TP",
        "replicas",
        "max batch",
        "window ms",
        "TTFT p95",
        "TPOT p95",
        "$/h",
        "util",
        "verdict",
    ):
        table.add_column(column, justify="left" if column in ("", "accelerator", "verdict") else "right")
    rows = ([("plan", report["plan"])] if report["plan"] else []) + [
        ("alt", c) for c in report["alternatives"][:alternatives]
    ]
    for label, c in rows:
        table.add_row(
            "[bold green]plan[/]" if label == "plan" else label,
            c["accelerator"],
            str(c["tensorParallel"]),
            " + ".join(str(t["replicas"]) for t in c["tiers"]) if len(c["tiers"]) > 1 else str(c["replicas"]),
            str(c["maxBatch"]),
            f"{c['batchWindowMs']:g}",
            "—" if c["predictedTtftP95Ms"] is None else f"{ms(c['predictedTtftP95Ms'])} ms",
            "—" if c["predictedTpotP95Ms"] is None else f"{ms(c['predictedTpotP95Ms'])} ms",
            "—" if c["costPerHour"] is None else f"{c['costPerHour']:.2f}",
            "—" if c["utilisation"] is None else f"{c['utilisation']:.0%}",
            c.get("rejected") or _verdict(label, c, report["plan"]),
        )
    out.print(table)


def plot_plan(spec: Any, load: Any, result: Any, ttft_factor: float, tpot_factor: float, path: str) -> None:
    """The frontier of the chosen configuration and each alternative with replicas, to a PNG at `path`."""
    from goodput.policies import frontier

    shown = [c for c in (result.chosen, *result.alternatives) if c is not None and c.replicas > 0]
    curves = [
        frontier.frontier(spec, load, c, ttft_factor=ttft_factor, tpot_factor=tpot_factor) for c in shown
    ]
    plot_frontiers(curves, spec, path)


def plot_frontiers(curves: Sequence[Any], spec: Any, path: str) -> None:
    """TTFT and TPOT p95 against throughput per dollar for each candidate, with the SLO lines and each
    candidate's planned operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), sharex=True)
    for index, curve in enumerate(curves):
        colour = f"C{index % 10}"
        x = curve.rps / curve.replica_cost_per_hour
        style = {"color": colour, "linewidth": 2.4 if index == 0 else 1.2}
        left.plot(x, curve.ttft_p95_ms, label=curve.label + (" (plan)" if index == 0 else ""), **style)
        right.plot(x, curve.tpot_p95_ms, **style)
        if curve.planned_rps > 0:
            at = curve.planned_rps / curve.replica_cost_per_hour
            left.plot([at], [np.interp(curve.planned_rps, curve.rps, curve.ttft_p95_ms)], "o", color=colour)
            right.plot([at], [np.interp(curve.planned_rps, curve.rps, curve.tpot_p95_ms)], "o", color=colour)
    slo = spec.slo
    for axis, name, targets in (
        (left, "TTFT", (("p95", slo.ttft_p95_ms), ("p99", slo.ttft_p99_ms))),
        (right, "TPOT", (("p95", slo.tpot_p95_ms), ("p99", slo.tpot_p99_ms))),
    ):
        for (level, target), style in zip(targets, ("--", ":"), strict=True):
            if target:
                axis.axhline(target, color="red", linestyle=style, label=f"SLO {name} {level} {target:g} ms")
        axis.set_yscale("log")
        axis.set_xlabel("throughput per cost (req/s per $/h of a replica)")
        axis.set_ylabel(f"predicted {name} p95 (ms)")
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    figure.suptitle(f"{spec.model.name}: latency–throughput frontier per configuration (dot: planned load)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

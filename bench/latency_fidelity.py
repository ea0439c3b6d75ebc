"""How far the planner's closed-form p95s are from the discrete-event simulation of the same engine.

For each scenario and utilisation (of the busier resource: batch slots or the prefill chunk budget), the
predictor's p95 TTFT and TPOT against the simulation's, averaged over seeds. Prefill-bound scenarios (a large
max batch) are the regime the planner runs in; slot-bound ones (a small max batch) are where the predictor is
known to underestimate queueing, which is why the planner keeps slot occupancy at or below
policies.planner.SLOT_LIMIT.

    python bench/latency_fidelity.py [--json bench/results/latency_fidelity.json] [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from goodput.policies.catalog import accelerator
from goodput.policies.latency import ReplicaPredictor, TokenStats
from goodput.policies.perfmodel import StepModel
from goodput.policies.planner import lognormal_samples
from goodput.policies.profiles import PRESETS
from goodput.policies.replica_sim import simulate_replica


@dataclass(frozen=True)
class Scenario:
    name: str
    model: str
    accelerator: str
    max_batch: int
    window_s: float
    chunk: int
    prompt: tuple[int, int]  # p50, p95
    output: tuple[int, int]


SCENARIOS = (
    Scenario("chat, prefill-bound", "llama-3-8b", "H100-SXM", 256, 0.005, 512, (1000, 4000), (200, 600)),
    Scenario("short answers", "llama-3-8b", "H100-SXM", 256, 0.005, 512, (500, 2000), (50, 150)),
    Scenario("chat, slot-bound", "llama-3-8b", "H100-SXM", 16, 0.005, 512, (1000, 4000), (200, 600)),
    Scenario("summarise, memory-bound", "qwen2.5-14b", "L40S", 64, 0.03, 2048, (3000, 8000), (300, 800)),
)
UTILISATIONS = (0.3, 0.6, 0.9)


def run(s: Scenario, requests: int, seeds: int) -> list[dict[str, object]]:
    prompts = lognormal_samples(*s.prompt)
    outputs = np.random.default_rng(0).permutation(lognormal_samples(*s.output))
    model = StepModel(PRESETS[s.model], accelerator(s.accelerator))
    predictor = ReplicaPredictor(model, TokenStats.from_samples(prompts, outputs), s.chunk, s.max_batch)
    batch = np.array([s.max_batch])
    rows = []
    for u in UTILISATIONS:
        rate = float(predictor.rate_at_utilisation(u, batch)[0])
        p = predictor.predict(np.array([[rate]]), batch, np.array([s.window_s]))
        start = time.perf_counter()
        runs = [
            simulate_replica(model, rate, prompts, outputs, s.max_batch, s.window_s, s.chunk, requests, seed)
            for seed in range(seeds)
        ]
        sim_ttft = float(np.mean([r.ttft_quantile(0.95) for r in runs]))
        sim_tpot = float(np.mean([r.tpot_quantile(0.95) for r in runs]))
        ttft, tpot = float(p.ttft[0, 0, 0]), float(p.tpot[0, 0])
        rows.append(
            {
                "scenario": s.name,
                "utilisation": u,
                "slot_occupancy": round(float(p.slot_occupancy[0, 0]), 3),
                "rps": round(rate, 3),
                "ttft_p95_ms": {"predicted": round(ttft * 1e3, 1), "simulated": round(sim_ttft * 1e3, 1)},
                "tpot_p95_ms": {"predicted": round(tpot * 1e3, 2), "simulated": round(sim_tpot * 1e3, 2)},
                "ttft_error": round(ttft / sim_ttft - 1, 3),
                "tpot_error": round(tpot / sim_tpot - 1, 3),
                "simulation_s": round(time.perf_counter() - start, 1),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", default="bench/results/latency_fidelity.json")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    rows = [row for s in SCENARIOS for row in run(s, args.requests, args.seeds)]
    for r in rows:
        print(
            f"{r['scenario']:26} u={r['utilisation']:.1f} slots {r['slot_occupancy']:.2f}  "
            f"TTFT p95 {r['ttft_p95_ms']['predicted']:9.1f} vs {r['ttft_p95_ms']['simulated']:9.1f} ms "
            f"({r['ttft_error']:+.1%})  TPOT p95 {r['tpot_p95_ms']['predicted']:6.2f} vs "
            f"{r['tpot_p95_ms']['simulated']:6.2f} ms ({r['tpot_error']:+.1%})"
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"requests": args.requests, "seeds": args.seeds, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

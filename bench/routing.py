"""Routing benchmark (issue 19): router overhead against a fast fake upstream (part c).

    python bench/routing.py --json bench/results/routing.json [--streams 1000] [--seconds 10]

Writes {"overhead": {"ttft_added_p50_ms", "ttft_added_p99_ms", "chunks_per_s_per_core", ...}}. Targets: added
TTFT p50 ≤ 1 ms and p99 ≤ 5 ms, ≥ 20,000 streamed chunks/s per router core, at 1,000 concurrent streams.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.router_overhead import measure

TARGETS = {"ttft_added_p50_ms": 1.0, "ttft_added_p99_ms": 5.0, "chunks_per_s_per_core": 20_000}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/routing.json"))
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    overhead = measure(args.streams, args.seconds)
    for key, value in overhead.items():
        target = TARGETS.get(key)
        if target is None:
            print(f"{key}: {value}")
        else:
            met = value >= target if key.startswith("chunks") else value <= target
            print(
                f"{key}: {value} (target {'≥' if key.startswith('chunks') else '≤'} {target}: {'met' if met else 'NOT met'})"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"overhead": overhead}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

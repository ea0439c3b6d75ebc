"""The cost per output token of grammar-constrained decoding (structured outputs), as a ratio to the same
engine decoding without a grammar, in one run.

Each round sends the same seeded batch twice: once with a JSON schema per request (a record of a few
bounded fields, as a client would ask for), then unconstrained with every request's max_tokens set to the
length its constrained answer had, so both runs produce the same number of tokens in the same batch
shapes. Rounds alternate and the median per-token times are compared. Grammar compilation (once per
request) is timed apart. Every constrained answer is checked against its schema.

    python -m bench.constrained_decoding --json bench/results/constrained_decoding.json [--preset tiny] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import torch

from bench import engine_common as common
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.engine import LLMEngine
from goodput.worker_image.grammar import json_schema_grammar
from goodput.worker_image.sampling import SamplingParams


def schema(i: int) -> dict[str, Any]:
    """A record schema that varies with i: bounded strings, integers, an enum, a short array."""
    return {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 4 + i % 8},
            "count": {"type": "integer", "minimum": 0, "maximum": 10 ** (1 + i % 4)},
            "kind": {"enum": ["alpha", "beta", "gamma"][: 1 + i % 3]},
            "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": i % 4},
        },
        "required": ["name", "count", "kind", "tags"],
        "additionalProperties": False,
    }


def run(
    engine: LLMEngine, prompts: list[list[int]], params: list[SamplingParams]
) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    outputs = engine.generate(prompts, params)
    return time.perf_counter() - start, outputs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--preset", default="bench-small", help="random:<preset> model (default bench-small)")
    parser.add_argument("--requests", type=int, default=16, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: stable timings)")
    parser.add_argument("--quick", action="store_true", help="4 requests, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 4, 1
    torch.set_num_threads(args.threads)
    engine = LLMEngine(EngineConfig(model=f"random:{args.preset}", max_model_len=1024, max_num_seqs=64))
    prompts = common.workload(args.preset, args.requests, (16, 64), (1, 1), seed=0).prompts
    schemas = [schema(i) for i in range(args.requests)]

    start = time.perf_counter()
    grammars = [json_schema_grammar(s) for s in schemas]
    for g in grammars:
        engine.grammars.check(g)
    compile_s = (time.perf_counter() - start) / len(
        grammars
    )  # the first includes the tokenizer's one-off setup

    def constrained_params(seed: int) -> list[SamplingParams]:
        return [
            SamplingParams(max_tokens=512, temperature=1.0, seed=seed + i, grammar=g)
            for i, g in enumerate(grammars)
        ]

    engine.generate(prompts[:2], constrained_params(0)[:2])  # warm up both paths once
    constrained_per_token, plain_per_token, tokens, invalid = [], [], 0, 0
    for r in range(args.rounds):
        seconds, outputs = run(engine, prompts, constrained_params(1000 * r))
        lengths = [len(o) for o in outputs]
        for out, s in zip(outputs, schemas, strict=True):
            try:
                jsonschema.validate(json.loads(engine.tokenizer.decode(out)), s)
            except (ValueError, jsonschema.ValidationError):
                invalid += 1
        constrained_per_token.append(seconds / sum(lengths))
        plain = [
            SamplingParams(max_tokens=n, temperature=1.0, seed=1000 * r + i, ignore_eos=True)
            for i, n in enumerate(lengths)
        ]
        seconds, outputs = run(engine, prompts, plain)
        assert [len(o) for o in outputs] == lengths
        plain_per_token.append(seconds / sum(lengths))
        tokens += sum(lengths)
    constrained, unconstrained = statistics.median(constrained_per_token), statistics.median(plain_per_token)
    result = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.constrained_decoding", *sys.argv[1:]]),
        "machine": {
            "python": platform.python_version(),
            "cpus": len(os.sched_getaffinity(0)),
            "torch_threads": args.threads,
            "load_average_1m": os.getloadavg()[0],
        },
        "preset": args.preset,
        "vocab_size": engine.model_config.vocab_size,
        "requests_per_batch": args.requests,
        "rounds": args.rounds,
        "output_tokens_per_mode": tokens,
        "answers_invalid_under_their_schema": invalid,
        "grammar_compile_ms_per_request": round(compile_s * 1000, 3),
        "ms_per_token_constrained": round(constrained * 1000, 4),
        "ms_per_token_unconstrained": round(unconstrained * 1000, 4),
        "ratio_constrained_to_unconstrained": round(constrained / unconstrained, 3),
        "per_round_ms_per_token": {
            "constrained": [round(x * 1000, 4) for x in constrained_per_token],
            "unconstrained": [round(x * 1000, 4) for x in plain_per_token],
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    sys.exit(1 if invalid else 0)


if __name__ == "__main__":
    main()

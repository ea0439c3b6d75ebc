"""`goodput plan`: the cheapest configuration predicted to meet a manifest's SLO, without a cluster (what-if)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from goodput.controllers.cli.flags import non_negative_float, non_negative_int, positive_float
from goodput.controllers.cli.render import plan_report, plot_plan, print_plan_table

EXIT_INVALID = 2  # the manifest does not validate
EXIT_INFEASIBLE = 3  # no plan meets the SLO within the limits


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, help="InferenceService manifest (YAML)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--rps",
        type=non_negative_float,
        help="requests per second to plan for (default: the manifest's hint)",
    )
    load.add_argument("--trace", help="a trace to plan for (Azure LLM CSV or Mooncake JSONL, detected)")
    parser.add_argument(
        "--peak-window", type=positive_float, help="with --trace: plan for the busiest window of this many s"
    )
    parser.add_argument("--policy", help="SLOPolicy manifest (YAML); the built-in default when absent")
    parser.add_argument(
        "--ttft-factor", type=positive_float, default=1.0, help="calibration: observed / predicted TTFT"
    )
    parser.add_argument(
        "--tpot-factor", type=positive_float, default=1.0, help="calibration: observed / predicted TPOT"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--plot", help="write the latency–throughput frontier of each candidate to this PNG")
    parser.add_argument(
        "--alternatives", type=non_negative_int, default=5, help="alternatives shown in the table"
    )


def read_manifest(path: str) -> dict[str, Any] | None:
    from goodput.crds.validation import validate_manifest

    try:
        obj = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        print(f"error: cannot read {path}: {error}", file=sys.stderr)
        return None
    if not isinstance(obj, dict):
        print(f"error: {path}: not a YAML object", file=sys.stderr)
        return None
    errors = validate_manifest(obj)
    if errors:
        print(f"error: {path} is invalid:", file=sys.stderr)
        for error in errors:
            print(f"  {error}", file=sys.stderr)
        return None
    return obj


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from goodput.crds.inferenceservice import InferenceService
    from goodput.crds.slopolicy import SLOPolicy, SLOPolicySpec
    from goodput.policies import planner
    from goodput.policies.profiles import profile_for

    if args.peak_window is not None and not args.trace:
        print("error: --peak-window: applies to a --trace only", file=sys.stderr)
        return EXIT_INVALID
    obj = read_manifest(args.filename)
    if obj is None:
        return EXIT_INVALID
    if obj.get("kind") != "InferenceService":
        print(f"error: {args.filename}: expected an InferenceService, got {obj.get('kind')}", file=sys.stderr)
        return EXIT_INVALID
    spec = InferenceService.model_validate(obj).spec
    policy = SLOPolicySpec()
    if args.policy:
        policy_obj = read_manifest(args.policy)
        if policy_obj is None:
            return EXIT_INVALID
        policy = SLOPolicy.model_validate(policy_obj).spec
    try:
        profile = profile_for(spec.model)
    except (KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID

    hint = planner.load_from_spec(spec)
    if args.trace:
        try:
            load = planner.load_from_trace(
                args.trace, peak_window_s=args.peak_window, batch_fraction=hint.batch_fraction
            )
        except (OSError, ValueError) as error:
            print(f"error: --trace: {error}", file=sys.stderr)
            return EXIT_INVALID
    else:
        load = hint if args.rps is None else replace(hint, rps=args.rps)
    result = planner.plan(spec, load, policy, args.ttft_factor, args.tpot_factor)
    report = plan_report(spec, load, profile, result)

    if args.plot:
        plot_plan(spec, load, result, args.ttft_factor, args.tpot_factor, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_plan_table(report, args.alternatives)
    if result.chosen is None:
        print(f"no feasible plan: {result.binding_constraint}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0

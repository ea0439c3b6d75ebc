"""Reliability report: runs the reliability tests and gathers what they measured into one JSON document.

Faults injected and survived (e2e/test_reliability_faults.py, on a stack of its own, and scale-down under
load from the load-step scenario in e2e/test_scenarios.py), bad inputs tried and
rejected by the real API server (e2e/test_reliability_input.py), bad inputs it accepts but the operator
must refuse naming the field, with no error loop in its log (e2e/test_operator_mistakes.py), least-privilege checks
(e2e/test_reliability_access.py), overload and KV exhaustion of a worker (tests/reliability/), requests sent
and lost. The figures are the tests' own (``record_property`` and the modules' tallies), so the report and
the assertions never disagree; a failed test is reported as such, with its figures when it had any.

    python bench/reliability.py --json bench/results/reliability.json [--no-e2e] [--no-faults]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
OVERLOAD = "tests/reliability/test_overload.py"
# The worker's answers to bad requests (in-process): each must be a 4xx naming the parameter.
WORKER_BAD_INPUT = [
    "tests/worker/test_server_endpoints.py::test_400s_speak_the_clients_terms",
    "tests/worker/test_server_structured.py::test_unsupported_values_are_refused_naming_the_parameter",
    "tests/worker/test_server_structured.py::test_unsupported_chat_values_are_refused",
]
E2E = ["e2e/test_reliability_input.py", "e2e/test_operator_mistakes.py", "e2e/test_reliability_access.py"]
FAULTS = "e2e/test_reliability_faults.py"
# Scale-down under load: the scenario's load step, whose second half removes replicas while requests flow.
LOAD_STEP = "e2e/test_scenarios.py::test_load_step_scales_up_then_down_after_stabilization_without_failures"


class Collector:
    """A pytest plugin: each test's outcome, duration and recorded properties."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(
            report.nodeid, {"outcome": "passed", "duration_s": 0.0, "properties": {}}
        )
        entry["duration_s"] = round(entry["duration_s"] + report.duration, 2)
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else f"error in {report.when}"
        elif report.skipped and report.when in ("setup", "call"):
            entry["outcome"] = "skipped"
        for key, value in report.user_properties if report.when == "call" else ():
            entry["properties"].setdefault(key, []).append(value)


def module_values(attribute: str) -> list[Any]:
    """An attribute of every imported reliability test module (pytest may import a module under two names)."""
    seen: dict[int, Any] = {}
    for name, module in list(sys.modules.items()):
        if "test_reliability" in name and hasattr(module, attribute):
            value = getattr(module, attribute)
            seen[id(value)] = value
    return list(seen.values())


def properties(tests: dict[str, dict[str, Any]], key: str) -> list[Any]:
    return [value for entry in tests.values() for value in entry["properties"].get(key, [])]


def summarise(tests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    outcomes = [t["outcome"] for t in tests.values()]
    tallies = module_values("TALLY")
    bad_input = {
        "tried": sum(t.sent for t in tallies),
        "rejected_by_the_api_server": sum(t.rejected for t in tallies),
        "accepted_and_loaded_by_the_operator_models": sum(t.accepted for t in tallies),
        "by_kind": {k: sum(t.kinds.get(k, 0) for t in tallies) for k in ("InferenceService", "SLOPolicy")},
        "verdicts_agreeing_with_crds_validation": all(
            tests[n]["outcome"] == "passed" for n in tests if "one_verdict" in n
        ),
    }
    reconciled = [reason for values in module_values("RECONCILED") for reason in values]
    faults = properties(tests, "fault")
    fault_tests = {
        n: t
        for n, t in tests.items()
        if (FAULTS in n and not {"impossible", "fuzzed"} & set(n.split("_"))) or n == LOAD_STEP
    }
    load_step = properties(tests, "load_step")
    overload = properties(tests, "overload")
    kv = properties(tests, "kv_exhaustion")
    access = properties(tests, "access")
    sent = sum(o["sent"] for o in overload) + sum(k["requests"] for k in kv)
    sent += sum(f.get("streams", 0) for f in faults)
    lost = sum(o["lost"] for o in overload) + sum(k["lost"] for k in kv)
    lost += sum(f.get("lost_elsewhere", 0) for f in faults)
    sent += sum(step["sent"] for step in load_step)
    lost += sum(step["failed"] + step["sent"] - step["answered"] for step in load_step)
    mistakes = properties(tests, "operator_mistakes")
    served = [m["requests"] for m in mistakes if "requests" in m]
    sent += sum(r["sent"] for r in served)
    lost += sum(r["sent"] - r["answered"] for r in served)
    log_errors = properties(tests, "operator_log_errors")
    watched_s = sum(e["seconds"] for e in log_errors)
    return {
        "tests": {"passed": outcomes.count("passed"), "failed": len(outcomes) - outcomes.count("passed")},
        "faults": {
            "injected": len(fault_tests),
            "survived": sum(t["outcome"] == "passed" for t in fault_tests.values()),
            "details": faults,
            "scale_down_under_load": load_step,
        },
        "bad_input": {
            **bad_input,
            "operator": {
                "impossible_specs": properties(tests, "operator_bad_input"),
                "fuzzed_valid_specs_reconciled": len(reconciled),
                "their_ready_reasons": {r: reconciled.count(r) for r in sorted(set(reconciled))},
                "accepted_but_refused": mistakes,
                "operator_log_errors": {
                    "errors": sum(e["errors"] for e in log_errors),
                    "watched_s": watched_s,
                    "per_minute": round(60 * sum(e["errors"] for e in log_errors) / watched_s, 2)
                    if watched_s
                    else None,
                },
            },
            "worker": {
                "tried": len(worker := properties(tests, "worker_bad_input")),
                "4xx_naming_the_parameter": sum(
                    400 <= w["status"] < 500 and bool(w["param"]) for w in worker
                ),
                "cases": worker,
            },
        },
        "least_privilege": access,
        "requests": {
            "sent": sent,
            "lost": lost,
            "cut_by_an_injected_worker_kill": sum(f.get("cut_on_the_killed_worker", 0) for f in faults),
            "refused_with_429_and_retry_after": sum(o["refused_429"] for o in overload),
        },
        "overload": overload,
        "kv_exhaustion": kv,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--no-e2e", action="store_true", help="only the in-process overload tests")
    parser.add_argument(
        "--no-faults", action="store_true", help="skip the fault injections (the slowest part)"
    )
    args = parser.parse_args()
    paths = [OVERLOAD, *WORKER_BAD_INPUT] + (
        [] if args.no_e2e else E2E + ([] if args.no_faults else [FAULTS, LOAD_STEP])
    )
    collector = Collector()
    began = time.monotonic()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), *paths], plugins=[collector])
    report = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/reliability.py", *sys.argv[1:]]),
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
        "pytest_exit_code": int(code),
        "wall_s": round(time.monotonic() - began, 1),
        **summarise(collector.tests),
        "per_test": collector.tests,
    }
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    sys.exit(int(code))


if __name__ == "__main__":
    main()

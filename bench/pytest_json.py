"""Run pytest and keep its outcome as JSON, rewritten after every test: a run stopped by its time limit
still says which tests passed, failed or were skipped, and why (the GPU check's correctness stage).

    python bench/pytest_json.py --json $OUT/gpu_tests.json -- tests/worker/test_engine_gpu.py --timeout=60
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest


class Recorder:
    """A pytest plugin: one entry per test with its outcome, seconds and (when not passed) the reason."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tests: list[dict[str, Any]] = []
        self.exit_status: int | None = None
        self.write()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        failed_outside_call = report.when != "call" and report.outcome != "passed"
        if report.when == "call" or failed_outside_call:
            entry: dict[str, Any] = {
                "test": report.nodeid,
                "outcome": report.outcome if report.when == "call" or report.skipped else "error",
                "phase": report.when,
                "seconds": round(report.duration, 3),
            }
            if not report.passed:
                entry["reason"] = report.longreprtext[-2000:]
            self.tests.append(entry)
            self.write()

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.exit_status = int(exitstatus)
        self.write()

    def write(self) -> None:
        counts: dict[str, int] = {}
        for t in self.tests:
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps(
                {
                    "complete": self.exit_status is not None,
                    "exit_status": self.exit_status,
                    "counts": counts,
                    "tests": self.tests,
                },
                indent=2,
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("pytest_args", nargs="+", help="after --: what pytest gets")
    args = parser.parse_args()
    return int(
        pytest.main(["-v", "-p", "no:cacheprovider", *args.pytest_args], plugins=[Recorder(args.json)])
    )


if __name__ == "__main__":
    sys.exit(main())

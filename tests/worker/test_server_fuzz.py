"""Schemathesis fuzzes the worker from its own OpenAPI document: no 5xx, answers as documented, no leaked KV."""

import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from goodput.worker_image.config import EngineConfig
from goodput.worker_image.server import ServeOptions, WorkerState, serve_in_thread

MODEL = "random:tiny"


@pytest.fixture(scope="module")
def worker() -> Iterator[tuple[str, WorkerState]]:
    config = EngineConfig(model=MODEL, max_model_len=128, max_num_seqs=8)
    with serve_in_thread(config, ServeOptions(host="127.0.0.1", port=0)) as running:
        yield running


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_fuzzed_requests_are_answered_as_documented(
    worker: tuple[str, WorkerState], mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(worker[0] + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/models"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
            continue  # nothing to break in a request without parameters or body

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, timeout=60)

        call()


def test_no_kv_blocks_leak_after_fuzzing(worker: tuple[str, WorkerState]) -> None:
    """Runs after the fuzzing above (file order): every request finished or aborted, every block free."""
    runner = worker[1].runner
    assert runner is not None
    deadline = time.monotonic() + 30
    while (stats := runner.engine.stats()).num_free_blocks != stats.num_total_blocks or runner.num_in_flight:
        assert time.monotonic() < deadline, stats
        time.sleep(0.05)
    assert stats.num_running == 0 and stats.num_waiting == 0

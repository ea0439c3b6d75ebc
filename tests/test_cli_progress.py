"""Progress of long commands: `goodput simulate` counts finished simulations, in order, whatever the workers."""

import numpy as np
import pytest

from goodput.controllers.replay import run
from goodput.policies.workloads import Trace


@pytest.mark.parametrize("workers", [1, 2])
def test_simulate_reports_each_finished_simulation(workers: int) -> None:
    rng = np.random.default_rng(1)
    n = 300
    trace = Trace(
        "short", np.sort(rng.uniform(0, 120, n)), rng.integers(100, 2000, n), rng.integers(2, 40, n)
    )
    calls: list[tuple[int, int]] = []
    report, runs = run(
        trace, ("static",), workers=workers, progress=lambda done, total: calls.append((done, total))
    )
    total = len(runs["static"])
    assert total == len(report["policies"]["static"]["sweep"]) >= 5
    assert calls == [(done, total) for done in range(total + 1)]

"""`goodput simulate`: progress counts finished simulations, in order, whatever the workers; bad options are refused."""

import numpy as np
import pytest

from goodput.controllers.cli import main
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


def test_simulate_refuses_a_window_shorter_than_the_interval() -> None:
    with pytest.raises(SystemExit, match="--window: 5 s is shorter than the 15 s control interval"):
        main(["simulate", "--trace", "synthetic:diurnal", "--window", "5"])

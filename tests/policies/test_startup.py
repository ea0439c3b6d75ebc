"""The worker start model: each phase adds up, weights scale with bytes and split over TP ranks."""

import pytest

from goodput.policies.profiles import PRESETS
from goodput.policies.startup import StartModel


def test_delay_adds_the_phases_and_reads_weights_at_disk_bandwidth():
    model = StartModel(schedule_s=1.0, process_s=2.0, disk_bytes_per_s=1e9, warm_up_s=3.0)
    llama = PRESETS["llama-3-8b"]
    assert model.delay_s(llama) == pytest.approx(6.0 + llama.weight_bytes / 1e9)
    assert model.delay_s(llama, tensor_parallel=2) == pytest.approx(6.0 + llama.weight_bytes / 2e9)


def test_default_start_of_an_8b_model_is_under_a_minute():
    assert 20.0 < StartModel().delay_s(PRESETS["llama-3-8b"]) < 60.0

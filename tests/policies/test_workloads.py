"""Trace loading, rate scaling and the synthetic diurnal generator."""

import numpy as np
import pytest

from goodput.policies.workloads import (
    AZURE_CODE_TRACE,
    MOONCAKE_CONVERSATION_TRACE,
    Trace,
    diurnal,
    load_csv,
    load_trace,
    resolve,
    scale_rate,
)


def _small(n: int = 400, seed: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 600, n))
    return Trace("small", t, rng.integers(10, 4000, n), rng.integers(1, 200, n))


def test_csv_round_trip(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:04.0319600,3180,8\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
        "2023-11-16 18:17:05.0000000,0,0\n"
    )
    tr = load_csv(path)
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 0.052, 1.02004], abs=1e-4)
    assert tr.prompt_tokens.tolist() == [4808, 3180, 1]  # sorted by time; zero tokens clamp to 1
    assert tr.output_tokens.tolist() == [10, 8, 1]


def test_azure_code_trace_shape():
    tr = load_csv()
    assert len(tr) == 8819
    assert 3400 < tr.duration_s < 3600
    assert np.all(np.diff(tr.arrival_s) >= 0)


def test_scale_rate_keeps_bursts():
    tr = _small()
    for k in (0.5, 2.0, 3.5):
        s = scale_rate(tr, k, seed=1)
        assert len(s) == pytest.approx(k * len(tr), rel=0.1)
        assert np.all(np.diff(s.arrival_s) >= 0)
        # copies land within the jitter after their originals: per-minute counts scale by k
        ratio = (
            np.histogram(s.arrival_s, bins=10, range=(0, 600))[0]
            / np.histogram(tr.arrival_s, bins=10, range=(0, 600))[0]
        )
        assert np.all(np.abs(ratio - k) < 0.5 * k + 0.5)
    with pytest.raises(ValueError):
        scale_rate(tr, 0)


def test_diurnal_is_seeded_and_has_its_peak_to_trough():
    src = _small()
    a = diurnal(src, hours=2, mean_rps=5, bursts_per_hour=0, seed=3)
    b = diurnal(src, hours=2, mean_rps=5, bursts_per_hour=0, seed=3)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert len(a) == pytest.approx(5 * 7200, rel=0.05)
    rate = a.rate_per_window(600)
    assert rate.max() / rate.min() == pytest.approx(4.0, rel=0.35)  # 10-minute windows blur the extremes
    # token lengths come from the source trace, as pairs
    pairs = set(zip(src.prompt_tokens.tolist(), src.output_tokens.tolist(), strict=True))
    assert set(zip(a.prompt_tokens.tolist(), a.output_tokens.tolist(), strict=True)) <= pairs


def test_diurnal_bursts_raise_the_rate():
    src = _small()
    calm = diurnal(src, hours=1, mean_rps=5, bursts_per_hour=0, seed=0)
    bursty = diurnal(src, hours=1, mean_rps=5, bursts_per_hour=6, burst_factor=3.0, seed=0)
    assert len(bursty) > len(calm)
    assert bursty.rate_per_window(15).max() > 1.5 * calm.rate_per_window(15).max()


def test_resolve_rejects_unknown_synthetic():
    with pytest.raises(ValueError):
        resolve("synthetic:weekly")


def test_mooncake_jsonl_is_detected_and_read_in_seconds(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"timestamp": 1500, "input_length": 7000, "output_length": 300, "hash_ids": [0, 1]}\n'
        '{"timestamp": 0, "input_length": 2000, "output_length": 0, "hash_ids": [0]}\n'
    )
    tr = load_trace(path)
    assert list(tr.arrival_s) == [0.0, 1.5]
    assert list(tr.prompt_tokens) == [2000, 7000] and list(tr.output_tokens) == [1, 300]


def test_vendored_traces_name_their_source():
    assert "Splitwise" in load_trace(AZURE_CODE_TRACE).source
    mooncake = load_trace(MOONCAKE_CONVERSATION_TRACE)
    assert "Mooncake" in mooncake.source and len(mooncake) == 12031
    assert "Mooncake" in scale_rate(mooncake, 2.0).source


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        (
            "bad.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,10,2\nnot-a-time,1,1\n",
            ":3:",
        ),
        ("bad.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,ten,2\n", ":2:"),
        ("bad.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n{"timestamp": 1}\n', ":2:"),
        ("bad.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n{oops\n', ":2:"),
        ("other.csv", "time,prompt,output\n1,2,3\n", ":1:"),
        (
            "neg.csv",
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03,-5,2\n",
            ":2:.*ContextTokens",
        ),
        ("nat.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nNaT,5,2\n", ":2:.*TIMESTAMP"),
        ("nan.jsonl", '{"timestamp": NaN, "input_length": 1, "output_length": 1}\n', ":1:.*timestamp"),
        ("half.jsonl", '{"timestamp": 0, "input_length": 1.5, "output_length": 1}\n', ":1:.*input_length"),
        ("neg.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": -2}\n', ":1:.*output_length"),
    ],
)
def test_malformed_rows_name_their_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=where):
        load_trace(path)

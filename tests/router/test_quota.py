"""Token buckets as pure functions of time: what a tenant is admitted, and when it may retry."""

from __future__ import annotations

import pytest

from goodput.router.errors import RouterError
from goodput.router.quota import Quotas, QuotaSpec


def admitted(quotas: Quotas, tokens: int, seconds: float, every_s: float) -> int:
    """Requests of `tokens` admitted for one tenant trying every `every_s` for `seconds`."""
    count = 0
    for i in range(int(seconds / every_s)):
        try:
            quotas.admit("t", tokens, i * every_s)
        except RouterError as error:
            assert error.status == 429
            continue
        quotas.release("t")
        count += 1
    return count


def test_requests_larger_than_the_bucket_still_pay_in_full() -> None:
    """100 tokens/s with a bucket of 100: 500-token requests get one in five seconds, not one a second."""
    quotas = Quotas(default=QuotaSpec(tokens_per_s=100))
    assert admitted(quotas, 500, seconds=60, every_s=0.5) == pytest.approx(60 * 100 / 500, abs=1)


def test_small_requests_get_the_rate_plus_one_burst() -> None:
    quotas = Quotas(default=QuotaSpec(tokens_per_s=100, burst_tokens=300))
    assert admitted(quotas, 50, seconds=10, every_s=0.05) == pytest.approx((10 * 100 + 300) / 50, abs=1)


def test_retry_after_says_when_a_large_request_fits() -> None:
    quotas = Quotas(default=QuotaSpec(tokens_per_s=100))
    quotas.admit("t", 500, 0.0)  # the bucket (100) was full: admitted, 400 in debt
    with pytest.raises(RouterError) as refused:
        quotas.admit("t", 500, 1.0)
    assert refused.value.headers["Retry-After"] == "4"  # debt 300 left + a full bucket of 100, at 100/s


def test_router_pods_share_a_quota() -> None:
    """Two router pods, a tenant's requests spread evenly over them: together they admit the quota."""
    quota = Quotas(default=QuotaSpec(tokens_per_s=100, max_concurrent=3))
    pods = [quota.shared(2), quota.shared(2)]
    assert pods[0].default == QuotaSpec(tokens_per_s=50, max_concurrent=2)
    count = 0
    for i in range(200):  # 50-token requests every 0.05 s for 10 s, alternating pods
        try:
            pods[i % 2].admit("t", 50, i * 0.05)
        except RouterError:
            continue
        pods[i % 2].release("t")
        count += 1
    assert 10 * 100 / 50 - 1 <= count <= (10 * 100 + 2 * 50) / 50  # unshared, the two would admit 40

"""Rate limits counted in the real Redis: shared by every gateway instance, failing open."""

import uuid

import pytest

from mailstack_gateway.auth import Principal, Scope
from mailstack_gateway.observability import RATE_LIMIT_UNAVAILABLE
from mailstack_gateway.ratelimit import Limit, RateLimiter, RateLimitExceededError, redis_storage

pytestmark = pytest.mark.integration


def _principal(per_minute: int = 3) -> Principal:
    # A credential no other test uses, so counters never collide and nothing needs flushing.
    return Principal(
        "acme", frozenset({Scope.SEND}), f"key:{uuid.uuid4().hex}", per_minute, per_minute
    )


def _limiter(url: str) -> RateLimiter:
    return RateLimiter(redis_storage(url, 0.5), send_per_minute=100, read_per_minute=100)


async def test_two_gateway_instances_share_one_count(redis_url: str) -> None:
    first, second = _limiter(redis_url), _limiter(redis_url)
    principal = _principal(per_minute=3)

    quotas = [
        await first.check(principal, Limit.SEND),
        await second.check(principal, Limit.SEND),
        await first.check(principal, Limit.SEND),
    ]
    with pytest.raises(RateLimitExceededError) as refused:
        await second.check(principal, Limit.SEND)

    assert [quota.remaining for quota in quotas if quota is not None] == [2, 1, 0]
    assert refused.value.quota.headers()["Retry-After"]
    # Reading has a count of its own.
    assert await first.check(principal, Limit.READ) is not None


async def test_redis_down_lets_requests_through_and_counts_them() -> None:
    limiter = RateLimiter(
        redis_storage("redis://127.0.0.1:9/0", 0.2), send_per_minute=1, read_per_minute=1
    )
    principal = _principal(per_minute=1)
    before = RATE_LIMIT_UNAVAILABLE._value.get()

    results = [await limiter.check(principal, Limit.SEND) for _ in range(5)]

    assert results == [None] * 5
    assert RATE_LIMIT_UNAVAILABLE._value.get() - before == 5

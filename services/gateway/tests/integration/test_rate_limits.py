"""Rate limits counted in the real Redis: shared by every gateway instance, failing open."""

import uuid

import pytest
from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage

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


class CountingStorage(RedisStorage):
    """The real Redis storage, counting the calls that reach Redis."""

    def __init__(self, url: str) -> None:
        super().__init__(f"async+{url}", implementation="redispy", wrap_exceptions=True)
        self.calls: list[str] = []

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        self.calls.append("incr")
        return await super().incr(key, expiry, amount)

    async def get(self, key: str) -> int:
        self.calls.append("get")
        return await super().get(key)

    async def get_expiry(self, key: str) -> float:
        self.calls.append("get_expiry")
        return await super().get_expiry(key)


async def test_a_request_costs_one_redis_call_once_the_window_is_known(redis_url: str) -> None:
    opener = CountingStorage(redis_url)
    other = CountingStorage(redis_url)
    first = RateLimiter(opener, send_per_minute=100, read_per_minute=100)
    second = RateLimiter(other, send_per_minute=100, read_per_minute=100)
    principal = _principal(per_minute=10)

    opened = [await first.check(principal, Limit.SEND) for _ in range(3)]
    joined = [await second.check(principal, Limit.SEND) for _ in range(3)]

    assert opener.calls == ["incr"] * 3
    # The window another instance opened: its end is asked for once.
    assert other.calls == ["incr", "get_expiry", "incr", "incr"]
    quotas = [quota for quota in [*opened, *joined] if quota is not None]
    assert [quota.remaining for quota in quotas] == [9, 8, 7, 6, 5, 4]
    assert all(58 <= quota.reset_seconds <= 60 for quota in quotas)


async def test_a_window_that_ended_opens_a_new_one_with_the_full_limit(redis_url: str) -> None:
    storage = CountingStorage(redis_url)
    limiter = RateLimiter(storage, send_per_minute=100, read_per_minute=100)
    principal = _principal(per_minute=2)
    await limiter.check(principal, Limit.SEND)
    await limiter.check(principal, Limit.SEND)
    with pytest.raises(RateLimitExceededError):
        await limiter.check(principal, Limit.SEND)

    # The counter expires (as Redis expires it at the window's end).
    await storage.clear(RateLimitItemPerMinute(2).key_for(principal.credential_id, "send"))

    quota = await limiter.check(principal, Limit.SEND)
    assert quota is not None
    assert (quota.remaining, quota.reset_seconds) == (1, 60)

"""Waits for tests: poll a condition until it holds, or fail with what it last saw.

`eventually(stub.messages, 10)` returns the first truthy value the condition gives;
`eventually(fetch, 10, until=lambda body: body["status"] == "SENT")` the first value that
passes `until`. When the timeout passes first it raises `ConditionNotMetError` (an
`AssertionError`, so the test fails) saying what the condition last returned, or the last
exception it raised of the kinds named in `ignoring`. Any other exception fails at once: a wait
never hides a broken condition behind a timeout, and it never falls through.
"""

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_base,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")

DEFAULT_INTERVAL_S = 0.05


class ConditionNotMetError(AssertionError):
    """A condition did not hold within its timeout; the message says what it last saw."""


def eventually(
    condition: Callable[[], T],
    seconds: float,
    *,
    interval: float = DEFAULT_INTERVAL_S,
    until: Callable[[T], object] = bool,
    ignoring: tuple[type[Exception], ...] = (),
    what: str | None = None,
) -> T:
    """Call `condition` every `interval` seconds until what it returns passes `until`; return
    that value."""
    retrying = Retrying(
        stop=stop_after_delay(seconds),
        wait=wait_fixed(interval),
        retry=_retry_on(until, ignoring),
        retry_error_callback=_give_up(condition, seconds, what),
        reraise=True,
    )
    return retrying(condition)


async def eventually_async(
    condition: Callable[[], T] | Callable[[], Awaitable[T]],
    seconds: float,
    *,
    interval: float = DEFAULT_INTERVAL_S,
    until: Callable[[T], object] = bool,
    ignoring: tuple[type[Exception], ...] = (),
    what: str | None = None,
) -> T:
    """`eventually` for a coroutine function or a plain one, sleeping with asyncio in between
    (so the code under test runs on the same loop while the test waits)."""
    retrying = AsyncRetrying(
        stop=stop_after_delay(seconds),
        wait=wait_fixed(interval),
        retry=_retry_on(until, ignoring),
        retry_error_callback=_give_up(condition, seconds, what),
        reraise=True,
    )

    async def attempt() -> T:
        value = condition()
        if inspect.isawaitable(value):
            awaited: T = await value
            return awaited
        return value

    return await retrying(attempt)


def _retry_on(until: Callable[[T], object], ignoring: tuple[type[Exception], ...]) -> retry_base:
    missed = retry_if_result(lambda value: not until(value))
    return missed | retry_if_exception_type(ignoring) if ignoring else missed


def _give_up(
    condition: Callable[..., object], seconds: float, what: str | None
) -> Callable[[RetryCallState], object]:
    name = what or getattr(condition, "__qualname__", repr(condition))

    def give_up(state: RetryCallState) -> object:
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        outcome = state.outcome
        assert outcome is not None
        seen = (
            f"last raised {outcome.exception()!r}"
            if outcome.failed
            else f"last returned {outcome.result()!r}"
        )
        message = f"{name}: not true within {seconds} s ({state.attempt_number} attempts); {seen}"
        raise ConditionNotMetError(message) from outcome.exception() if outcome.failed else None

    return give_up

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
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, Retrying, stop_after_delay, wait_fixed
from tenacity import retry_if_exception_type as raised
from tenacity import retry_if_result as returned

T = TypeVar("T")


class ConditionNotMetError(AssertionError):
    """A condition did not hold within its timeout; the message says what it last saw."""


def _policy(
    condition: Callable[..., object],
    seconds: float,
    interval: float,
    until: Callable[[Any], object],
    ignoring: tuple[type[Exception], ...],
    what: str | None,
) -> dict[str, Any]:
    """tenacity's settings for a wait, whose give-up raises ConditionNotMetError."""
    name = what or getattr(condition, "__qualname__", repr(condition))

    def give_up(state: RetryCallState) -> object:
        __tracebackhide__ = True  # pytest: show the test's line, not this one
        outcome = state.outcome
        assert outcome is not None
        error = outcome.exception() if outcome.failed else None
        seen = f"last raised {error!r}" if error else f"last returned {outcome.result()!r}"
        tries = f"{state.attempt_number} attempts"
        raise ConditionNotMetError(
            f"{name}: not true within {seconds} s ({tries}); {seen}"
        ) from error

    missed = returned(lambda value: not until(value))
    return {
        "stop": stop_after_delay(seconds),
        "wait": wait_fixed(interval),
        "retry": missed | raised(ignoring) if ignoring else missed,
        "retry_error_callback": give_up,
        "reraise": True,
    }


def eventually(
    condition: Callable[[], T],
    seconds: float,
    *,
    interval: float = 0.05,
    until: Callable[[T], object] = bool,
    ignoring: tuple[type[Exception], ...] = (),
    what: str | None = None,
) -> T:
    """Call `condition` every `interval` seconds until what it returns passes `until`; return
    that value."""
    return Retrying(**_policy(condition, seconds, interval, until, ignoring, what))(condition)


async def eventually_async(
    condition: Callable[[], T] | Callable[[], Awaitable[T]],
    seconds: float,
    *,
    interval: float = 0.05,
    until: Callable[[T], object] = bool,
    ignoring: tuple[type[Exception], ...] = (),
    what: str | None = None,
) -> T:
    """`eventually` for a coroutine function or a plain one, sleeping with asyncio in between
    (so the code under test runs on the same loop while the test waits)."""

    async def attempt() -> T:
        value = condition()
        return await value if inspect.isawaitable(value) else value

    policy = _policy(condition, seconds, interval, until, ignoring, what)
    result: T = await AsyncRetrying(**policy)(attempt)
    return result

"""`eventually`: returns what the condition gave once it holds, fails with what it last saw."""

import asyncio
import itertools

import pytest

from mailstack_testing.waiting import ConditionNotMetError, eventually, eventually_async


def test_returns_the_first_value_that_holds() -> None:
    counter = itertools.count()

    assert eventually(lambda: next(counter) >= 3 and "ready", 5, interval=0) == "ready"


def test_until_judges_the_value_and_the_value_is_returned() -> None:
    counter = itertools.count()

    assert eventually(lambda: next(counter), 5, interval=0, until=lambda n: n == 4) == 4


def test_fails_with_what_the_condition_last_returned() -> None:
    with pytest.raises(ConditionNotMetError, match=r"the queue empty: .*last returned \{'n': 2\}"):
        eventually(
            lambda: {"n": 2},
            0.05,
            interval=0.01,
            until=lambda d: d["n"] == 0,
            what="the queue empty",
        )


def test_fails_with_the_last_ignored_exception() -> None:
    def refused() -> None:
        raise ConnectionRefusedError("port 1")

    with pytest.raises(ConditionNotMetError, match="last raised ConnectionRefusedError") as raised:
        eventually(refused, 0.05, interval=0.01, ignoring=(ConnectionError,))
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


def test_an_exception_it_does_not_ignore_fails_at_once() -> None:
    calls = []

    def broken() -> bool:
        calls.append(1)
        raise KeyError("status")

    with pytest.raises(KeyError):
        eventually(broken, 5, interval=0)
    assert calls == [1]


def test_a_failed_assertion_in_the_condition_is_not_retried() -> None:
    def answer() -> int:
        raise AssertionError("500 is neither 202 nor 503")

    with pytest.raises(AssertionError, match="neither") as raised:
        eventually(answer, 5, interval=0)
    assert not isinstance(raised.value, ConditionNotMetError)


async def test_async_waits_for_a_coroutine_while_the_loop_runs_other_tasks() -> None:
    done = asyncio.Event()

    async def is_done() -> bool:
        return done.is_set()

    asyncio.get_running_loop().call_later(0.02, done.set)

    assert await eventually_async(is_done, 5, interval=0.005) is True


async def test_async_takes_a_plain_function_and_fails_with_its_last_value() -> None:
    with pytest.raises(ConditionNotMetError, match="last returned \\[\\]"):
        await eventually_async(list, 0.05, interval=0.01)

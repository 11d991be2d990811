"""OnFirstUse: nothing is made until asked for, then made once, even by threads racing."""

import threading
from concurrent.futures import ThreadPoolExecutor

from mailstack_core.lazy import OnFirstUse


def test_nothing_is_made_until_the_first_call() -> None:
    calls: list[int] = []
    value = OnFirstUse(lambda: calls.append(1) or "client")

    assert calls == []
    assert value() == "client"
    assert calls == [1]
    assert value() == "client"
    assert calls == [1]


def test_threads_asking_together_get_one_value_made_once() -> None:
    calls: list[int] = []
    inside = threading.Event()
    release = threading.Event()

    def make() -> object:
        calls.append(1)
        inside.set()
        release.wait(5)  # every other thread asks while the first is still making it
        return object()

    value = OnFirstUse(make)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(value) for _ in range(8)]
        assert inside.wait(5)
        release.set()
        results = {id(future.result(5)) for future in futures}

    assert len(results) == 1
    assert calls == [1]

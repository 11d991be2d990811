"""/healthz: alive always; with deep=1, what the load balancer asks (database and schema)."""

import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from mailstack_gateway import api, main


class Probe:
    """A schema check that answers what it is told, and counts the times it was asked."""

    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def client_for(probe: Probe) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.schema_check = probe
    api.install(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


async def get(probe: Probe, path: str) -> httpx.Response:
    async for client in client_for(probe):
        return await client.get(path)
    raise AssertionError("no client")


async def test_plain_healthz_says_ok_without_asking_the_database() -> None:
    probe = Probe(OperationalError("SELECT 1", {}, Exception("down")))
    response = await get(probe, "/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert probe.calls == 0


async def test_deep_healthz_is_ok_when_the_schema_serves_this_code() -> None:
    probe = Probe(answer=True)
    response = await get(probe, "/healthz?deep=1")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert probe.calls == 1


@pytest.mark.parametrize(
    "answer",
    [False, OperationalError("SELECT 1", {}, Exception("connection refused")), TimeoutError()],
    ids=["schema behind", "database down", "timeout"],
)
async def test_deep_healthz_is_503_and_says_nothing_more(answer: bool | Exception) -> None:
    response = await get(Probe(answer), "/healthz?deep=1")
    assert (response.status_code, response.json()) == (503, {"status": "unavailable"})


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, unfrozen_heap: None) -> list[dict[str, Any]]:
    """`main.run()` with uvicorn's run replaced: what it was given (and the frozen heap's size
    then) appended to the list; the heap unfrozen afterwards (`unfrozen_heap`)."""
    runs: list[dict[str, Any]] = []

    def record(app: Any, **options: Any) -> None:
        runs.append(options | {"frozen": gc.get_freeze_count()})

    monkeypatch.setattr(main.uvicorn, "run", record)
    monkeypatch.setattr(main, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:9/db")
    monkeypatch.setenv("EMAIL_QUEUE_URL", "http://127.0.0.1:9/queue")
    monkeypatch.setenv("ATTACHMENTS_BUCKET", "mailstack-attachments")
    return runs


def test_keep_alive_outlasts_a_load_balancers_idle_timeout(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn's default (5 s) is shorter than the ALB's 60 s idle timeout: sporadic 502s."""
    main.run()
    assert served[-1]["timeout_keep_alive"] == 75
    monkeypatch.setenv("GATEWAY_KEEP_ALIVE_SECONDS", "120")
    main.run()
    assert served[-1]["timeout_keep_alive"] == 120


def test_the_heap_built_at_start_up_is_frozen_before_serving(
    served: list[dict[str, Any]],
) -> None:
    """Full collections then skip the start-up objects (mailstack_core.heap): no ~75 ms pauses."""
    assert gc.get_freeze_count() == 0
    main.run()
    assert served[-1]["frozen"] > 10_000

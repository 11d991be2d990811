"""The CLI against a fake gateway: an httpx MockTransport answering from a table of routes."""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mailstack_cli import main

URL = "http://gateway.test"
KEY = "ms_0123456789abcdef_secret"
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeGateway:
    """Answers `(method, path)` from `routes`; records every request."""

    routes: dict[tuple[str, str], Answer | list[Answer]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def answer(self, method: str, path: str, status: int = 200, body: Any = None) -> None:
        self.routes[(method, path)] = httpx.Response(status, json=body)

    def answers(self, method: str, path: str, bodies: list[Any]) -> None:
        """Successive answers; the last one repeats."""
        self.routes[(method, path)] = [httpx.Response(200, json=body) for body in bodies]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json={"error": "not_found", "message": "no route"})
        if isinstance(route, list):
            route = route.pop(0) if len(route) > 1 else route[0]
        return route(request) if callable(route) else route

    def last_json(self) -> Any:
        return json.loads(self.requests[-1].content)


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGateway]:
    fake = FakeGateway()
    monkeypatch.setattr(main, "TRANSPORT", httpx.MockTransport(fake.handle))
    monkeypatch.setattr(main, "sleep", lambda _: None)
    return fake


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Callable[..., Any]:
    """`run("list", "--json")` with the gateway and key in the environment; the working
    directory is an empty temporary folder (no stack.env of the developer's is read)."""
    for name in ("MAILSTACK_URL", "MAILSTACK_API_KEY", "GATEWAY_URL", "API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MAILSTACK_STACK_ENV_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()

    def invoke(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
        environment = {"MAILSTACK_URL": URL, "MAILSTACK_API_KEY": KEY} if env is None else env
        return CliRunner().invoke(main.app, list(args), env=environment, input=stdin)

    return invoke

"""Real stub servers on free 127.0.0.1 ports, one per provider, reset before every test."""

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from mailstack_stubs.__main__ import StubServer
from mailstack_stubs.app import create_app
from mailstack_stubs.behaviour import StubState
from mailstack_stubs.control import StubControl
from mailstack_testing.waiting import eventually

API_KEY = "test-key-123"
SEND_PATHS = {"elasticemail": "/v4/emails/transactional", "sendgrid": "/v3/mail/send"}


def elasticemail_body(**content: Any) -> dict[str, Any]:
    return {
        "Recipients": {"To": ["alex@example.com"]},
        "Content": {
            "From": "Shop <orders@example.com>",
            "Subject": "Your order",
            "Body": [{"ContentType": "HTML", "Content": "<p>Thanks</p>", "Charset": "utf-8"}],
        }
        | content,
    }


def sendgrid_body(**fields: Any) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": "alex@example.com", "name": "Alex"}]}],
        "from": {"email": "orders@example.com", "name": "Shop"},
        "subject": "Your order",
        "content": [
            {"type": "text/plain", "value": "Thanks"},
            {"type": "text/html", "value": "<p>Thanks</p>"},
        ],
    } | fields


def auth_headers(provider: str, key: str = API_KEY) -> dict[str, str]:
    if provider == "elasticemail":
        return {"X-ElasticEmail-ApiKey": key}
    return {"Authorization": f"Bearer {key}"}


@dataclass
class RunningStub:
    provider: str
    base_url: str
    control: StubControl

    def valid_body(self) -> dict[str, Any]:
        return elasticemail_body() if self.provider == "elasticemail" else sendgrid_body()

    def auth(self, key: str = API_KEY) -> dict[str, str]:
        return auth_headers(self.provider, key)

    def send(
        self,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        timeout_s: float = 10.0,
    ) -> httpx.Response:
        """POST to the send path with the right key; a valid body unless one is given."""
        if body is None and content is None:
            body = self.valid_body()
        request_headers = self.auth() if headers is None else headers
        return httpx.post(
            self.base_url + SEND_PATHS[self.provider],
            json=body if content is None else None,
            content=content,
            headers=request_headers,
            timeout=timeout_s,
        )


@dataclass
class ServerThread:
    server: uvicorn.Server
    thread: threading.Thread
    base_url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "stub server did not stop"


def start_server(provider: str, **app_settings: Any) -> ServerThread:
    """A stub on a free port; `app_settings` go to create_app (events_url, ...)."""
    # The socket is bound here and handed to uvicorn, so no other process can take the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    state = StubState()
    config = uvicorn.Config(
        create_app(provider, API_KEY, state, **app_settings), log_level="warning"
    )
    server = StubServer(config, state)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    running = ServerThread(server, thread, f"http://127.0.0.1:{port}")
    eventually(lambda: server.started, 10, interval=0.01, what=f"{provider} stub started")
    with StubControl(running.base_url) as control:
        assert control.health()["provider"] == provider
    return running


@pytest.fixture(scope="session")
def start_stub() -> Callable[..., ServerThread]:
    """start_server, for test modules (which cannot import this conftest)."""
    return start_server


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, ServerThread]]:
    started = {provider: start_server(provider) for provider in SEND_PATHS}
    yield started
    for server in started.values():
        server.stop()


def _running(servers: dict[str, ServerThread], provider: str) -> Iterator[RunningStub]:
    with StubControl(servers[provider].base_url) as control:
        control.reset()
        yield RunningStub(provider, servers[provider].base_url, control)
        # Never leave a request held for the next test.
        control.reset()


@pytest.fixture
def elasticemail(servers: dict[str, ServerThread]) -> Iterator[RunningStub]:
    yield from _running(servers, "elasticemail")


@pytest.fixture
def sendgrid(servers: dict[str, ServerThread]) -> Iterator[RunningStub]:
    yield from _running(servers, "sendgrid")


@pytest.fixture(params=list(SEND_PATHS))
def stub(request: pytest.FixtureRequest, servers: dict[str, ServerThread]) -> Iterator[RunningStub]:
    yield from _running(servers, request.param)

"""Real HTTP servers for tests. RecordingServer records every request it gets and answers 200:
where a test points a service's telemetry (an OTLP traces endpoint, a Sentry DSN) to see what it
sends. WebhookReceiver is a user's webhook endpoint that verifies signatures.

    with RecordingServer() as server:
        ... OTEL_EXPORTER_OTLP_ENDPOINT=server.url ...
        eventually(lambda: server.requests_to("/v1/traces"), 10)
"""

import gzip
import json
import threading
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailstack_stack.config import LOCALHOST


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-case
    body: bytes  # decompressed when the request said gzip or deflate


def sentry_events(server: "RecordingServer") -> list[dict[str, Any]]:
    """The error events in the Sentry envelopes the server received (a DSN pointed at it:
    `http://key@127.0.0.1:<port>/<project>`). An envelope is newline-separated JSON: its
    header, then a header and a payload per item."""
    events = []
    for request in server.requests_to("/api/"):
        lines = request.body.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                events.append(json.loads(payload))
    return events


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class _LocalServer:
    """A threaded HTTP server on 127.0.0.1 (a free port), from `start()` or `with` until
    `stop()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer((LOCALHOST, 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class RecordingServer(_LocalServer):
    """Listens on 127.0.0.1 (a free port) from `start()` or `with` until `stop()`."""

    def __init__(self, response_body: bytes = b"", content_type: str = "application/json"):
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                body = _decoded(raw, headers.get("content-encoding", ""))
                with recorder._lock:
                    recorder._requests.append(
                        RecordedRequest(self.command, self.path, headers, body)
                    )
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(response_body)))
                self.end_headers()
                self.wfile.write(response_body)

            def log_message(self, format: str, *args: object) -> None:
                return None  # the test reads the recorded requests, not a log

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return self.base_url

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The requests received so far whose path starts with `path`."""
        with self._lock:
            return [request for request in self._requests if request.path.startswith(path)]


@dataclass(frozen=True)
class ReceivedWebhook:
    """One request to a WebhookReceiver, and whether its signature verified."""

    headers: dict[str, str]  # names lower-case
    body: bytes
    verified: bool

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def payload(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


class WebhookReceiver(_LocalServer):
    """A user's webhook endpoint for tests: verifies each request's signature with the Standard
    Webhooks library, as a receiver should, and answers 204, or 401 to a request that does not
    verify. Between `hold()` and `release()` it answers nothing (each request is recorded on
    arrival): a delivery is surely under way while the test does something to the sender."""

    def __init__(self, path: str = "/hook") -> None:
        self.path = path
        self.secret: str | None = None
        self._answering = threading.Event()
        self._answering.set()
        self._received: list[ReceivedWebhook] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (a test kills it): not a delivery, nothing to
                    # verify or answer, so not recorded.
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                verified = receiver.verifies(body, headers)
                with receiver._lock:
                    receiver._received.append(ReceivedWebhook(headers, body, verified))
                # Held at most a minute: a test that forgets to release still ends.
                receiver._answering.wait(60)
                self.send_response(204 if verified else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def hold(self) -> None:
        """Keep every request waiting for its answer until `release()`."""
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    def verifies(self, body: bytes, headers: dict[str, str]) -> bool:
        if self.secret is None:
            return False
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    def received(self) -> list[ReceivedWebhook]:
        with self._lock:
            return list(self._received)

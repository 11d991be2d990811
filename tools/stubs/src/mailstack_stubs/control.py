"""A typed, synchronous client for a running stub's `/_stub` control API, for tests."""

import time
from types import TracebackType
from typing import Any, Self, TypedDict

import httpx

from mailstack_stubs.behaviour import ModeName


class BehaviourView(TypedDict):
    mode: ModeName
    status: int | None
    delay_ms: int
    held_requests: int


class RecordedSend(TypedDict):
    received_at: str
    body: Any
    headers: dict[str, str]
    status: int
    replay: bool
    message_id: str | None


class Health(TypedDict):
    status: str
    provider: str


class StubControl:
    """Drives one stub, e.g. `StubControl("http://127.0.0.1:8101").set_behaviour("hang")`.

    Every method raises `httpx.HTTPStatusError` when the stub refuses the call.
    """

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def set_behaviour(
        self, mode: ModeName, status: int | None = None, delay_ms: int | None = None
    ) -> None:
        """Replace the whole behaviour; `status` only with `error` (default 500)."""
        body: dict[str, Any] = {"mode": mode}
        if status is not None:
            body["status"] = status
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        self._http.put("/_stub/behaviour", json=body).raise_for_status()

    def behaviour(self) -> BehaviourView:
        response = self._http.get("/_stub/behaviour").raise_for_status()
        view: BehaviourView = response.json()
        return view

    def messages(self) -> list[RecordedSend]:
        """Every send request answered so far, in the order they were answered."""
        response = self._http.get("/_stub/messages").raise_for_status()
        sends: list[RecordedSend] = response.json()
        return sends

    def clear(self) -> None:
        self._http.delete("/_stub/messages").raise_for_status()

    def reset(self) -> None:
        """Mode ok, no delay, no recorded sends or idempotency keys; held requests answered."""
        self._http.post("/_stub/reset").raise_for_status()

    def post_event(
        self, message_id: str, event: str, recipient: str | None = None
    ) -> dict[str, Any]:
        """Have the stub post `event` for a recorded message (the same one again if asked
        again); what it prepared, with its event id."""
        body = {"message_id": message_id, "event": event}
        if recipient is not None:
            body["recipient"] = recipient
        response = self._http.post("/_stub/events", json=body).raise_for_status()
        prepared: dict[str, Any] = response.json()
        return prepared

    def events(self) -> list[dict[str, Any]]:
        """Every event the stub posted so far, with the answer it got (or its error)."""
        response = self._http.get("/_stub/events").raise_for_status()
        posted: list[dict[str, Any]] = response.json()
        return posted

    def health(self) -> Health:
        response = self._http.get("/_stub/health").raise_for_status()
        health: Health = response.json()
        return health

    def wait_for_held_requests(self, count: int = 1, timeout_s: float = 10.0) -> None:
        """Block until `count` send requests are held by `hang`: proof they reached the stub."""
        deadline = time.monotonic() + timeout_s
        while (held := self.behaviour()["held_requests"]) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{held} of {count} requests held after {timeout_s} s")
            time.sleep(0.02)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

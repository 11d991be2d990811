"""The state one stub server shares between its send route and its control API."""

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

DEFAULT_ERROR_STATUS = 500
# Answered to requests still held by `hang` when the server shuts down, so a SIGTERM never
# waits on a client that will not come back.
SHUTDOWN_STATUS = 503


ModeName = Literal["ok", "error", "hang", "reject"]


class Mode(StrEnum):
    OK = "ok"
    ERROR = "error"
    HANG = "hang"
    REJECT = "reject"


@dataclass(frozen=True)
class Behaviour:
    mode: Mode = Mode.OK
    status: int | None = None
    delay_ms: int = 0

    @property
    def error_status(self) -> int:
        return self.status if self.status is not None else DEFAULT_ERROR_STATUS

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "status": self.status, "delay_ms": self.delay_ms}


@dataclass(frozen=True)
class RecordedSend:
    received_at: datetime
    body: Any
    headers: dict[str, str]
    status: int
    replay: bool = False
    message_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "received_at": self.received_at.isoformat(),
            "body": self.body,
            "headers": self.headers,
            "status": self.status,
            "replay": self.replay,
            "message_id": self.message_id,
        }


@dataclass(frozen=True)
class StoredResponse:
    """A first answer kept under its idempotency key, with the body it was given for."""

    body_fingerprint: str
    status: int
    content: bytes
    headers: dict[str, str]
    message_id: str | None


def fingerprint(body: Any) -> str:
    # Key order and whitespace do not make two JSON bodies different requests.
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class StubState:
    """Behaviour, recorded sends and idempotency keys of one stub; lives in one event loop."""

    _behaviour: Behaviour = field(default_factory=Behaviour)
    _sends: list[RecordedSend] = field(default_factory=list)
    _stored: dict[str, StoredResponse] = field(default_factory=dict)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _held: int = 0
    _closing: bool = False

    @property
    def behaviour(self) -> Behaviour:
        return self._behaviour

    @property
    def held_requests(self) -> int:
        return self._held

    def set_behaviour(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self._wake_held()

    def reset(self) -> None:
        self._sends.clear()
        self._stored.clear()
        self.set_behaviour(Behaviour())

    def close(self) -> None:
        self._closing = True
        self._wake_held()

    def _wake_held(self) -> None:
        # Each change gets a fresh event: everyone waiting on the old one wakes and re-reads
        # the behaviour, and later waiters block on the new one.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_turn(self) -> Behaviour:
        """Hold the request while the mode is `hang`, apply any delay, return how to answer."""
        while self._behaviour.mode is Mode.HANG:
            if self._closing:
                return Behaviour(mode=Mode.ERROR, status=SHUTDOWN_STATUS)
            changed = self._changed
            self._held += 1
            try:
                await changed.wait()
            finally:
                self._held -= 1
        behaviour = self._behaviour
        if behaviour.delay_ms:
            await asyncio.sleep(behaviour.delay_ms / 1000)
        return behaviour

    def record(self, send: RecordedSend) -> None:
        self._sends.append(send)

    def sends(self) -> list[RecordedSend]:
        return list(self._sends)

    def clear_sends(self) -> None:
        self._sends.clear()

    def stored_response(self, key: str) -> StoredResponse | None:
        return self._stored.get(key)

    def store_response(self, key: str, response: StoredResponse) -> None:
        self._stored[key] = response

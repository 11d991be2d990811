"""The send route both stubs share: hold the request per behaviour, answer it, record it."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol

from fastapi import APIRouter, Request, Response
from starlette.datastructures import Headers

from mailstack_stubs.behaviour import Behaviour, RecordedSend, StubState
from mailstack_stubs.payload import MalformedBodyError, decode_json, recorded_headers

logger = logging.getLogger("mailstack_stubs")


@dataclass(frozen=True)
class SendRequest:
    headers: Headers
    body: Any
    malformed: bool
    size: int


@dataclass(frozen=True)
class Answer:
    response: Response
    replay: bool = False
    message_id: str | None = None


class ProviderWire(Protocol):
    """How one provider answers a send once the stub's behaviour lets it answer."""

    name: str

    def answer(self, behaviour: Behaviour, request: SendRequest) -> Answer: ...


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def add_send_route(
    router: APIRouter,
    path: str,
    wire: ProviderWire,
    state: StubState,
    on_accepted: Callable[[RecordedSend], None] | None = None,
) -> None:
    """The provider's send route; `on_accepted` is told of each accepted send (not a replay)."""

    async def send(request: Request) -> Response:
        received_at = datetime.now(UTC)
        raw = await request.body()
        try:
            body, malformed = decode_json(raw, request.headers), False
        except MalformedBodyError:
            body, malformed = None, True
        behaviour = await state.wait_for_turn()
        answer = wire.answer(behaviour, SendRequest(request.headers, body, malformed, len(raw)))
        recorded = RecordedSend(
            received_at=received_at,
            body=body,
            headers=recorded_headers(request.headers),
            status=answer.response.status_code,
            replay=answer.replay,
            message_id=answer.message_id,
        )
        state.record(recorded)
        if on_accepted is not None and 200 <= recorded.status < 300 and not recorded.replay:
            on_accepted(recorded)
        logger.info(
            "stub.send provider=%s status=%d replay=%s message_id=%s mode=%s",
            wire.name,
            answer.response.status_code,
            answer.replay,
            answer.message_id,
            behaviour.mode.value,
        )
        return answer.response

    router.add_api_route(path, send, methods=["POST"], name=f"{wire.name}_send")

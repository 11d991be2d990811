"""The `/_stub` control API: set the behaviour, read and clear recorded sends, reset, health."""

import logging
from typing import Any, Self, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mailstack_stubs.behaviour import Behaviour, Mode, ModeName, StubState
from mailstack_stubs.events import EventEmitter, EventName, UnknownMessageError

logger = logging.getLogger("mailstack_stubs")


class BehaviourUpdate(BaseModel):
    """A whole behaviour: fields left out go back to their defaults."""

    model_config = ConfigDict(extra="forbid")

    mode: ModeName
    status: int | None = Field(default=None, ge=400, le=599, strict=True)
    delay_ms: int | None = Field(default=None, ge=0, le=600_000, strict=True)

    @model_validator(mode="after")
    def status_only_for_errors(self) -> Self:
        # A status with another mode would be silently ignored; refusing it catches the typo.
        if self.status is not None and self.mode != Mode.ERROR.value:
            raise ValueError("status applies only to mode 'error'")
        return self

    def to_behaviour(self) -> Behaviour:
        return Behaviour(mode=Mode(self.mode), status=self.status, delay_ms=self.delay_ms or 0)


class EventRequest(BaseModel):
    """POST /_stub/events: post `event` for a recorded message (to its first recipient unless
    `recipient` names another); the same request again posts the same provider event."""

    model_config = ConfigDict(extra="forbid")

    message_id: str = Field(min_length=1)
    event: EventName
    recipient: str | None = None


Body = TypeVar("Body", bound=BaseModel)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses `model` itself."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _parse(model: type[Body], request: Request) -> Body | JSONResponse:
    """The body as `model`, or the 422 to answer. Parsed here rather than by FastAPI so that
    `curl -d '{"mode":"hang"}'`, which sends no JSON content type, works too."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as error:
        detail = error.errors(include_url=False, include_context=False, include_input=False)
        return JSONResponse({"detail": detail}, status_code=422)


def build_router(provider: str, state: StubState, emitter: EventEmitter) -> APIRouter:
    router = APIRouter(prefix="/_stub", tags=["stub control"])

    @router.put("/behaviour", status_code=204, openapi_extra=_json_body(BehaviourUpdate))
    async def put_behaviour(request: Request) -> Response:
        update = await _parse(BehaviourUpdate, request)
        if isinstance(update, JSONResponse):
            return update
        state.set_behaviour(update.to_behaviour())
        logger.info(
            "stub.behaviour provider=%s mode=%s status=%s delay_ms=%s",
            provider,
            update.mode,
            update.status,
            update.delay_ms,
        )
        return Response(status_code=204)

    @router.get("/behaviour")
    async def get_behaviour() -> dict[str, Any]:
        return state.behaviour.to_json() | {"held_requests": state.held_requests}

    @router.get("/messages")
    async def get_messages() -> list[dict[str, Any]]:
        return [send.to_json() for send in state.sends()]

    @router.delete("/messages", status_code=204)
    async def delete_messages() -> Response:
        state.clear_sends()
        return Response(status_code=204)

    @router.post("/events", status_code=202, openapi_extra=_json_body(EventRequest))
    async def post_event(request: Request) -> JSONResponse:
        asked = await _parse(EventRequest, request)
        if isinstance(asked, JSONResponse):
            return asked
        try:
            prepared = emitter.trigger(
                state.sends(), asked.message_id, asked.event, asked.recipient
            )
        except UnknownMessageError as error:
            return JSONResponse({"detail": str(error)}, status_code=404)
        body = {
            "event_id": prepared.event_id,
            "message_id": prepared.message_id,
            "event": prepared.event,
            "recipient": prepared.recipient,
            "will_post": emitter.url is not None,
        }
        return JSONResponse(body, status_code=202)

    @router.get("/events")
    async def get_events() -> list[dict[str, Any]]:
        """Every event posted so far (in the order their answers came) and the answer."""
        return [posted.to_json() for posted in emitter.posted()]

    @router.post("/reset", status_code=204)
    async def reset() -> Response:
        state.reset()
        emitter.reset()
        logger.info("stub.reset provider=%s", provider)
        return Response(status_code=204)

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "provider": provider}

    return router

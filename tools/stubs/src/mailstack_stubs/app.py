"""Builds one stub server: the provider's send route plus the control API on shared state."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal, get_args

from fastapi import APIRouter, FastAPI

from mailstack_stubs import elasticemail, events, sendgrid, stub_api
from mailstack_stubs.behaviour import StubState
from mailstack_stubs.sending import ProviderWire, add_send_route

Provider = Literal["elasticemail", "sendgrid"]
PROVIDERS: tuple[str, ...] = get_args(Provider)


def create_app(
    provider: str,
    api_key: str,
    state: StubState | None = None,
    events_url: str | None = None,
    events_private_key: str | None = None,
) -> FastAPI:
    """The stub for `provider` accepting `api_key`; pass `state` to reach it from outside.
    With `events_url` it posts events there (mailstack_stubs.events); SendGrid's are signed
    with `events_private_key` (PEM or base64 DER of an EC P-256 key)."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}, expected one of {PROVIDERS}")
    if not api_key:
        raise ValueError("api_key must not be empty")
    stub_state = state if state is not None else StubState()
    wire: ProviderWire
    event_wire: events.EventWire
    if provider == elasticemail.NAME:
        wire, path = elasticemail.ElasticEmailWire(api_key, stub_state), elasticemail.SEND_PATH
        event_wire = events.ElasticEmailEvents()
    else:
        wire, path = sendgrid.SendGridWire(api_key), sendgrid.SEND_PATH
        key = events.load_private_key(events_private_key) if events_private_key else None
        event_wire = events.SendGridEvents(key)
    emitter = events.EventEmitter(event_wire, events_url or None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        stub_state.close()
        await emitter.close()

    app = FastAPI(
        title=f"mailstack {provider} stub",
        lifespan=lifespan,
        docs_url="/_stub/docs",
        redoc_url=None,
        openapi_url="/_stub/openapi.json",
    )
    send_router = APIRouter()
    add_send_route(send_router, path, wire, stub_state, emitter.after_send)
    app.include_router(send_router)
    app.include_router(stub_api.build_router(provider, stub_state, emitter))
    app.state.events = emitter
    return app

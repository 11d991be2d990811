"""Builds one stub server: the provider's send route plus the control API on shared state."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal, get_args

from fastapi import APIRouter, FastAPI

from mailstack_stubs import elasticemail, sendgrid, stub_api
from mailstack_stubs.behaviour import StubState
from mailstack_stubs.sending import ProviderWire, add_send_route

Provider = Literal["elasticemail", "sendgrid"]
PROVIDERS: tuple[str, ...] = get_args(Provider)


def create_app(provider: str, api_key: str, state: StubState | None = None) -> FastAPI:
    """The stub for `provider` accepting `api_key`; pass `state` to reach it from outside."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}, expected one of {PROVIDERS}")
    if not api_key:
        raise ValueError("api_key must not be empty")
    stub_state = state if state is not None else StubState()
    wire: ProviderWire
    if provider == elasticemail.NAME:
        wire, path = elasticemail.ElasticEmailWire(api_key, stub_state), elasticemail.SEND_PATH
    else:
        wire, path = sendgrid.SendGridWire(api_key), sendgrid.SEND_PATH

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        stub_state.close()

    app = FastAPI(
        title=f"mailstack {provider} stub",
        lifespan=lifespan,
        docs_url="/_stub/docs",
        redoc_url=None,
        openapi_url="/_stub/openapi.json",
    )
    send_router = APIRouter()
    add_send_route(send_router, path, wire, stub_state)
    app.include_router(send_router)
    app.include_router(stub_api.build_router(provider, stub_state))
    return app

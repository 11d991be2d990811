"""How both adapters classify what went wrong: the failover table of PROVIDERS.md."""

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest

from mailstack_processor.providers.base import (
    ProviderError,
    ProviderMisconfiguredError,
    ProviderRejectedError,
    ProviderUnavailableError,
)

PROVIDERS = ["elasticemail", "sendgrid"]


def _error_body(provider: str, message: str) -> dict[str, Any]:
    if provider == "elasticemail":
        return {"Error": message}
    return {"errors": [{"message": message, "field": None, "help": None}]}


async def _failure(provider_http: Any, make: Any, provider: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await provider_http.sender(provider).send(make.email())
    return caught.value


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (408, ProviderUnavailableError),
        (429, ProviderUnavailableError),
        (500, ProviderUnavailableError),
        (502, ProviderUnavailableError),
        (503, ProviderUnavailableError),
        (504, ProviderUnavailableError),
        (401, ProviderMisconfiguredError),
        (403, ProviderMisconfiguredError),
        (400, ProviderRejectedError),
        (413, ProviderRejectedError),
    ],
)
async def test_classifies_each_http_status(
    make: Any, provider_http: Any, provider: str, status: int, error_type: type[ProviderError]
) -> None:
    provider_http.respond = lambda _: httpx.Response(status, json=_error_body(provider, "nope"))

    error = await _failure(provider_http, make, provider)

    assert type(error) is error_type
    assert error.provider == provider
    assert error.http_status == status
    assert error.outcome_unknown is False
    assert error.reason == "nope"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_html_413_is_a_rejection_with_the_page_as_reason(
    make: Any, provider_http: Any, provider: str
) -> None:
    page = "<html><body><h1>413 Request Entity Too Large</h1></body></html>"
    provider_http.respond = lambda _: httpx.Response(
        413, text=page, headers={"content-type": "text/html"}
    )

    error = await _failure(provider_http, make, provider)

    assert isinstance(error, ProviderRejectedError)
    assert "413 Request Entity Too Large" in error.reason


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_error_without_a_body_still_has_a_reason(
    make: Any, provider_http: Any, provider: str
) -> None:
    provider_http.respond = lambda _: httpx.Response(503)

    error = await _failure(provider_http, make, provider)

    assert isinstance(error, ProviderUnavailableError)
    assert error.reason == "HTTP 503"


async def test_reads_the_reason_from_an_elasticemail_error_body(
    make: Any, provider_http: Any
) -> None:
    provider_http.respond = lambda _: httpx.Response(
        400, json={"Error": "Recipient alex@example is invalid"}
    )

    error = await _failure(provider_http, make, "elasticemail")

    assert error.reason == "Recipient alex@example is invalid"


async def test_reads_every_reason_with_its_field_from_a_sendgrid_error_body(
    make: Any, provider_http: Any
) -> None:
    provider_http.respond = lambda _: httpx.Response(
        400,
        json={
            "errors": [
                {"message": "The from email does not contain a valid address.", "field": "from"},
                {"message": "Bad Request", "field": None, "help": None},
            ]
        },
    )

    error = await _failure(provider_http, make, "sendgrid")

    assert error.reason == "from: The from email does not contain a valid address.; Bad Request"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_keeps_the_retry_after_hint_of_a_429(
    make: Any, provider_http: Any, provider: str
) -> None:
    provider_http.respond = lambda _: httpx.Response(
        429, json=_error_body(provider, "slow down"), headers={"Retry-After": "30"}
    )

    error = await _failure(provider_http, make, provider)

    assert isinstance(error, ProviderUnavailableError)
    assert error.retry_after_seconds == 30.0


async def test_takes_the_hint_from_sendgrids_rate_limit_reset_header(
    make: Any, provider_http: Any
) -> None:
    reset = time.time() + 40
    provider_http.respond = lambda _: httpx.Response(
        429,
        json=_error_body("sendgrid", "too many requests"),
        headers={
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(reset)),
        },
    )

    error = await _failure(provider_http, make, "sendgrid")

    assert isinstance(error, ProviderUnavailableError)
    assert error.retry_after_seconds is not None
    assert 30 <= error.retry_after_seconds <= 41


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_connect_error_is_transient_and_certainly_not_sent(
    make: Any, provider_http: Any, provider: str
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"

    with pytest.raises(ProviderError) as caught:
        await provider_http.sender(provider, base_url=closed).send(make.email())
    error = caught.value

    assert isinstance(error, ProviderUnavailableError)
    assert error.outcome_unknown is False
    assert error.http_status is None


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_read_timeout_is_transient_with_an_unknown_outcome(
    make: Any, provider_http: Any, provider: str
) -> None:
    async def answer_late(_: Any) -> httpx.Response:
        await asyncio.sleep(1)
        return httpx.Response(200)

    provider_http.respond = answer_late

    with pytest.raises(ProviderError) as caught:
        await provider_http.sender(provider, timeout_seconds=0.2).send(make.email())
    error = caught.value

    assert isinstance(error, ProviderUnavailableError)
    assert error.outcome_unknown is True


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_hanging_provider_is_cut_off_at_the_timeout(
    make: Any, provider_http: Any, provider: str
) -> None:
    async def hang(_: Any) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200)

    provider_http.respond = hang
    sender = provider_http.sender(provider, timeout_seconds=0.2)
    started = time.monotonic()

    with pytest.raises(ProviderUnavailableError) as caught:
        await sender.send(make.email())

    assert time.monotonic() - started < 2.0
    assert caught.value.outcome_unknown is True
    assert caught.value.provider == provider


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_dropped_connection_is_transient_with_an_unknown_outcome(
    make: Any, provider_http: Any, provider: str
) -> None:
    provider_http.respond = lambda _: provider_http.DROP

    error = await _failure(provider_http, make, provider)

    assert isinstance(error, ProviderUnavailableError)
    assert error.outcome_unknown is True
    assert not isinstance(error.__cause__, ProviderError)  # the transport's own error, wrapped

"""What both HTTP adapters share: one bounded POST (aiohttp), and the table that classifies its
outcome."""

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry import propagate, trace

from mailstack_processor.providers.base import (
    OutgoingEmail,
    ProviderError,
    ProviderMisconfiguredError,
    ProviderRejectedError,
    ProviderUnavailableError,
    SendReceipt,
)

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The provider deadline covers the upload too: an email with attachments (up to 10 MiB, 13 MiB
# as base64) gets one more second per this many bytes, so a big upload is not cut as a timeout.
UPLOAD_BYTES_PER_SECOND = 4 * 1024 * 1024
CONFIGURATION_STATUSES = frozenset({401, 403})
PERMANENT_STATUSES = frozenset({400, 413, 422})
MAX_REASON_CHARS = 500

_tracer = trace.get_tracer(__name__)


def classify_status(provider: str, status: int, reason: str) -> ProviderError:
    """The failover table of PROVIDERS.md, for a non-success HTTP answer."""
    reason = reason[:MAX_REASON_CHARS] or f"HTTP {status}"
    if status in PERMANENT_STATUSES:
        return ProviderRejectedError(provider, reason, status)
    if status in CONFIGURATION_STATUSES:
        return ProviderMisconfiguredError(provider, reason, status)
    if status in TRANSIENT_STATUSES or status >= 500:
        return ProviderUnavailableError(provider, reason, status)
    # 404, 405, ...: the endpoint itself is wrong, which is our configuration.
    return ProviderMisconfiguredError(provider, reason, status)


@dataclass(frozen=True)
class ProviderResponse:
    """A provider's answer, read in full."""

    status_code: int
    # Case-insensitive, as HTTP header names are.
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


def retry_after(response: ProviderResponse) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def provider_session(max_connections: int) -> aiohttp.ClientSession:
    """The HTTP client of every provider call, to open with `async with` (it owns the
    connection pool). No cookies kept, no redirects followed (see `post_json`)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _encode(body: dict[str, Any]) -> bytes:
    # Compact UTF-8 JSON, no NaN: the bytes the providers have always been sent.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def post_json(
    session: aiohttp.ClientSession,
    provider: str,
    url: str,
    *,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_seconds: float,
) -> ProviderResponse:
    """POST with a hard deadline on the whole call; translate every transport failure. The
    call is a client span (`POST`) of the current trace, whose context the request carries."""
    headers = {**headers, "Content-Type": "application/json"}
    with _tracer.start_as_current_span(
        "POST",
        kind=trace.SpanKind.CLIENT,
        attributes={"http.request.method": "POST", "url.full": url},
    ) as span:
        propagate.inject(headers)
        try:
            async with asyncio.timeout(timeout_seconds):
                async with session.post(
                    url,
                    data=_encode(body),
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(
                        total=None, connect=timeout_seconds, sock_read=timeout_seconds
                    ),
                ) as response:
                    answer = ProviderResponse(
                        response.status, response.headers, await response.read()
                    )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            # Nothing reached the provider: the email was certainly not accepted.
            raise ProviderUnavailableError(provider, f"connect failed: {error!r}") from error
        except TimeoutError as error:  # aiohttp's read timeouts are TimeoutErrors too
            raise ProviderUnavailableError(
                provider, f"no answer within {timeout_seconds:g} s", outcome_unknown=True
            ) from error
        except aiohttp.ClientError as error:
            raise ProviderUnavailableError(
                provider, f"transport error: {error!r}", outcome_unknown=True
            ) from error
        span.set_attribute("http.response.status_code", answer.status_code)
        if answer.status_code >= 400:
            span.set_status(trace.StatusCode.ERROR, f"HTTP {answer.status_code}")
        return answer


class HttpSender(ABC):
    """One provider's HTTP send: build the body and headers, POST with the deadline, read the
    receipt of a success, classify anything else. Subclasses say what differs."""

    name: str
    path: str
    success_status: int

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, api_key: str, timeout_seconds: float
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + self.path
        self._api_key = api_key
        self._timeout = timeout_seconds

    @abstractmethod
    def request(self, email: OutgoingEmail) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON body and the headers of the send request."""

    @abstractmethod
    def receipt(self, response: ProviderResponse) -> SendReceipt:
        """What a successful answer says."""

    @abstractmethod
    def error_reason(self, response: ProviderResponse) -> str:
        """The provider's own words for a failure."""

    def retry_after(self, response: ProviderResponse) -> float | None:
        return retry_after(response)

    def deadline_seconds(self, email: OutgoingEmail) -> float:
        return self._timeout + email.attachment_bytes / UPLOAD_BYTES_PER_SECOND

    async def send(self, email: OutgoingEmail) -> SendReceipt:
        body, headers = self.request(email)
        response = await post_json(
            self._session,
            self.name,
            self._url,
            body=body,
            headers=headers,
            timeout_seconds=self.deadline_seconds(email),
        )
        if response.status_code == self.success_status:
            return self.receipt(response)
        error = classify_status(self.name, response.status_code, self.error_reason(response))
        error.retry_after_seconds = self.retry_after(response)
        raise error

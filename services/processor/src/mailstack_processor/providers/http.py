"""What both HTTP adapters share: one bounded POST, and the table that classifies its outcome."""

import asyncio
from abc import ABC, abstractmethod
from typing import Any

import httpx

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


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def post_json(
    client: httpx.AsyncClient,
    provider: str,
    url: str,
    *,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_seconds: float,
) -> httpx.Response:
    """POST with a hard deadline on the whole call; translate every httpx failure."""
    try:
        async with asyncio.timeout(timeout_seconds):
            return await client.post(url, json=body, headers=headers, timeout=timeout_seconds)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
        # Nothing reached the provider: the email was certainly not accepted.
        raise ProviderUnavailableError(provider, f"connect failed: {error!r}") from error
    except (TimeoutError, httpx.TimeoutException) as error:
        raise ProviderUnavailableError(
            provider, f"no answer within {timeout_seconds:g} s", outcome_unknown=True
        ) from error
    except httpx.HTTPError as error:
        raise ProviderUnavailableError(
            provider, f"transport error: {error!r}", outcome_unknown=True
        ) from error


class HttpSender(ABC):
    """One provider's HTTP send: build the body and headers, POST with the deadline, read the
    receipt of a success, classify anything else. Subclasses say what differs."""

    name: str
    path: str
    success_status: int

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, api_key: str, timeout_seconds: float
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + self.path
        self._api_key = api_key
        self._timeout = timeout_seconds

    @abstractmethod
    def request(self, email: OutgoingEmail) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON body and the headers of the send request."""

    @abstractmethod
    def receipt(self, response: httpx.Response) -> SendReceipt:
        """What a successful answer says."""

    @abstractmethod
    def error_reason(self, response: httpx.Response) -> str:
        """The provider's own words for a failure."""

    def retry_after(self, response: httpx.Response) -> float | None:
        return retry_after(response)

    def deadline_seconds(self, email: OutgoingEmail) -> float:
        return self._timeout + email.attachment_bytes / UPLOAD_BYTES_PER_SECOND

    async def send(self, email: OutgoingEmail) -> SendReceipt:
        body, headers = self.request(email)
        response = await post_json(
            self._client,
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

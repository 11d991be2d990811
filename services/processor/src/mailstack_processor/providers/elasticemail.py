"""ElasticEmail API v4 adapter: POST /v4/emails/transactional with X-ElasticEmail-ApiKey."""

from typing import Any

import httpx

from mailstack_processor.providers.base import OutgoingEmail, SendReceipt
from mailstack_processor.providers.http import classify_status, post_json, retry_after

NAME = "elasticemail"
PATH = "/v4/emails/transactional"


def build_request(email: OutgoingEmail) -> dict[str, Any]:
    """The v4 transactional body (PascalCase fields)."""
    recipients: dict[str, list[str]] = {"To": [mailbox.email for mailbox in email.to]}
    if email.cc:
        recipients["CC"] = [mailbox.email for mailbox in email.cc]
    if email.bcc:
        recipients["BCC"] = [mailbox.email for mailbox in email.bcc]
    body: list[dict[str, str]] = []
    if email.html is not None:
        body.append({"ContentType": "HTML", "Content": email.html, "Charset": "utf-8"})
    if email.text is not None:
        body.append({"ContentType": "PlainText", "Content": email.text, "Charset": "utf-8"})
    content: dict[str, Any] = {
        "From": email.sender.formatted(),
        "Subject": email.subject,
        "Body": body,
        "Headers": {"X-Mailstack-Email-Id": str(email.id)},
    }
    if email.reply_to is not None:
        content["ReplyTo"] = email.reply_to.formatted()
    return {"Recipients": recipients, "Content": content}


def error_reason(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text
    if isinstance(payload, dict) and isinstance(payload.get("Error"), str):
        return str(payload["Error"])
    return response.text


class ElasticEmailSender:
    name = NAME

    def __init__(
        self, client: httpx.AsyncClient, base_url: str, api_key: str, timeout_seconds: float
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + PATH
        self._api_key = api_key
        self._timeout = timeout_seconds

    async def send(self, email: OutgoingEmail) -> SendReceipt:
        response = await post_json(
            self._client,
            NAME,
            self._url,
            body=build_request(email),
            # The same key on every attempt: ElasticEmail replays instead of sending twice.
            headers={"X-ElasticEmail-ApiKey": self._api_key, "Idempotency-Key": str(email.id)},
            timeout_seconds=self._timeout,
        )
        if response.status_code == httpx.codes.OK:
            try:
                payload = response.json()
                message_id = str(payload["MessageID"])
                transaction_id = str(payload["TransactionID"])
            except (ValueError, KeyError, TypeError):
                # Accepted but unreadable: record it as sent with the raw answer, never resend.
                return SendReceipt(NAME, message_id=response.text[:200], http_status=200)
            return SendReceipt(NAME, message_id, transaction_id, http_status=200)
        error = classify_status(NAME, response.status_code, error_reason(response))
        error.retry_after_seconds = retry_after(response)
        raise error

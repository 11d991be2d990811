"""ElasticEmail API v4 adapter: POST /v4/emails/transactional with X-ElasticEmail-ApiKey."""

from typing import Any

import httpx

from mailstack_processor.providers.base import OutgoingEmail, SendReceipt
from mailstack_processor.providers.http import HttpSender

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


class ElasticEmailSender(HttpSender):
    name = NAME
    path = PATH
    success_status = httpx.codes.OK

    def request(self, email: OutgoingEmail) -> tuple[dict[str, Any], dict[str, str]]:
        # The same key on every attempt: ElasticEmail replays instead of sending twice.
        headers = {"X-ElasticEmail-ApiKey": self._api_key, "Idempotency-Key": str(email.id)}
        return build_request(email), headers

    def receipt(self, response: httpx.Response) -> SendReceipt:
        try:
            payload = response.json()
            message_id = str(payload["MessageID"])
            transaction_id = str(payload["TransactionID"])
        except (ValueError, KeyError, TypeError):
            # Accepted but unreadable: record it as sent with the raw answer, never resend.
            return SendReceipt(NAME, message_id=response.text[:200], http_status=200)
        return SendReceipt(NAME, message_id, transaction_id, http_status=200)

    def error_reason(self, response: httpx.Response) -> str:
        return error_reason(response)

"""SendGrid API v3 adapter: POST /v3/mail/send with a Bearer key; 202 + X-Message-Id is success."""

import base64
import time
from typing import Any

from mailstack_processor.providers.base import Attachment, Mailbox, OutgoingEmail, SendReceipt
from mailstack_processor.providers.http import HttpSender, ProviderResponse, retry_after

NAME = "sendgrid"
PATH = "/v3/mail/send"


def _mailbox(mailbox: Mailbox) -> dict[str, str]:
    return (
        {"email": mailbox.email, "name": mailbox.name} if mailbox.name else {"email": mailbox.email}
    )


def _attachment(attachment: Attachment) -> dict[str, str]:
    entry = {
        "content": base64.b64encode(attachment.content).decode("ascii"),
        "type": attachment.content_type,
        "filename": attachment.filename,
        "disposition": attachment.disposition,
    }
    if attachment.content_id is not None:
        entry["content_id"] = attachment.content_id
    return entry


def build_request(email: OutgoingEmail) -> dict[str, Any]:
    """The v3 mail/send body (snake_case; text/plain must precede text/html). Tags are
    categories; metadata and the email's id are custom args, which SendGrid's events repeat."""
    personalization: dict[str, Any] = {
        "to": [_mailbox(m) for m in email.to],
        # Per personalization, where the API (and its OpenAPI file) takes an object.
        "custom_args": {**email.metadata, "mailstack_email_id": str(email.id)},
    }
    if email.cc:
        personalization["cc"] = [_mailbox(m) for m in email.cc]
    if email.bcc:
        personalization["bcc"] = [_mailbox(m) for m in email.bcc]
    content = []
    if email.text is not None:
        content.append({"type": "text/plain", "value": email.text})
    if email.html is not None:
        content.append({"type": "text/html", "value": email.html})
    body: dict[str, Any] = {
        "personalizations": [personalization],
        "from": _mailbox(email.sender),
        "subject": email.subject,
        "content": content,
    }
    if email.reply_to is not None:
        body["reply_to"] = _mailbox(email.reply_to)
    if email.headers:
        body["headers"] = dict(email.headers)
    if email.tags:
        body["categories"] = list(email.tags)
    if email.attachments:
        body["attachments"] = [_attachment(attachment) for attachment in email.attachments]
    return body


def rate_limit_reset(response: ProviderResponse) -> float | None:
    """SendGrid's 429 says when the window resets (epoch seconds) instead of Retry-After."""
    try:
        reset = float(response.headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None
    return max(0.0, reset - time.time())


def error_reason(response: ProviderResponse) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text  # 413 may come back as an HTML page
    if isinstance(payload, dict) and isinstance(payload.get("errors"), list):
        messages = [
            f"{item.get('field')}: {item.get('message')}"
            if item.get("field")
            else item.get("message")
            for item in payload["errors"]
            if isinstance(item, dict)
        ]
        return "; ".join(str(message) for message in messages)
    return response.text


class SendGridSender(HttpSender):
    name = NAME
    path = PATH
    success_status = 202

    def request(self, email: OutgoingEmail) -> tuple[dict[str, Any], dict[str, str]]:
        return build_request(email), {"Authorization": f"Bearer {self._api_key}"}

    def receipt(self, response: ProviderResponse) -> SendReceipt:
        return SendReceipt(NAME, response.headers.get("x-message-id") or "", http_status=202)

    def error_reason(self, response: ProviderResponse) -> str:
        return error_reason(response)

    def retry_after(self, response: ProviderResponse) -> float | None:
        return retry_after(response) or rate_limit_reset(response)

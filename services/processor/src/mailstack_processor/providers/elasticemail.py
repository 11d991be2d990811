"""ElasticEmail API v4 adapter: POST /v4/emails/transactional with X-ElasticEmail-ApiKey.

Mailstack's fields in ElasticEmail's terms: custom headers are `Content.Headers`; attachments are
`Content.Attachments` (v4 takes no disposition or Content-ID, so an inline image arrives as an
ordinary attachment); the first tag is the `Options.ChannelName` its reports group by (one
channel per email); and the tags, the metadata and the email's id travel as JSON in
`Content.Postback`, the value ElasticEmail repeats in its notifications (SendGrid's custom args).
"""

import base64
import json
from typing import Any

from mailstack_processor.providers.base import OutgoingEmail, SendReceipt
from mailstack_processor.providers.http import HttpSender, ProviderResponse

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
        "Headers": {**email.headers, "X-Mailstack-Email-Id": str(email.id)},
    }
    if email.reply_to is not None:
        content["ReplyTo"] = email.reply_to.formatted()
    if email.attachments:
        content["Attachments"] = [
            {
                "BinaryContent": base64.b64encode(attachment.content).decode("ascii"),
                "Name": attachment.filename,
                "ContentType": attachment.content_type,
            }
            for attachment in email.attachments
        ]
    request: dict[str, Any] = {"Recipients": recipients, "Content": content}
    # Always: its notifications carry the email's id back (the gateway matches events by it).
    content["Postback"] = postback(email)
    if email.tags:
        request["Options"] = {"ChannelName": email.tags[0]}
    return request


def postback(email: OutgoingEmail) -> str:
    """What ElasticEmail's notifications carry back for this email, as compact JSON."""
    carried = {
        "mailstack_email_id": str(email.id),
        "tags": list(email.tags),
        "metadata": dict(email.metadata),
    }
    return json.dumps(carried, separators=(",", ":"), ensure_ascii=False)


def error_reason(response: ProviderResponse) -> str:
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
    success_status = 200

    def request(self, email: OutgoingEmail) -> tuple[dict[str, Any], dict[str, str]]:
        # The same key on every attempt: ElasticEmail replays instead of sending twice.
        headers = {"X-ElasticEmail-ApiKey": self._api_key, "Idempotency-Key": str(email.id)}
        return build_request(email), headers

    def receipt(self, response: ProviderResponse) -> SendReceipt:
        try:
            payload = response.json()
            message_id = str(payload["MessageID"])
            transaction_id = str(payload["TransactionID"])
        except (ValueError, KeyError, TypeError):
            # Accepted but unreadable: record it as sent with the raw answer, never resend.
            return SendReceipt(NAME, message_id=response.text[:200], http_status=200)
        return SendReceipt(NAME, message_id, transaction_id, http_status=200)

    def error_reason(self, response: ProviderResponse) -> str:
        return error_reason(response)

"""What the contract tests do through the API: submit, wait for an outcome, read history, DLQ."""

import json
from typing import Any

import httpx

from mailstack_testing.waiting import eventually

# What providers' events move a SENT email to (the stubs post them after each send, as the real
# services do): it was sent all the same.
DELIVERY_STATUSES = frozenset(
    {"DEFERRED", "DELIVERED", "OPENED", "CLICKED", "UNSUBSCRIBED", "BOUNCED", "COMPLAINED"}
)
SENT_OR_LATER = frozenset({"SENT"}) | DELIVERY_STATUSES
PROVIDER_EVENT = "provider_event"
# Stack env for a stack whose ElasticEmail stub posts no events: for fault tests where an event
# could move an email past SENT while its own outcome is interrupted, a path they do not test.
NO_ELASTICEMAIL_EVENTS = {"elasticemail-stub": {"STUB_EVENTS_URL": ""}}


def gateway_client(stack: Any) -> httpx.Client:
    """A client of the stack's gateway, with its development key (every scope)."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    return httpx.Client(base_url=stack.gateway_url, timeout=10, headers=headers)


def an_email(**overrides: Any) -> dict[str, Any]:
    email: dict[str, Any] = {
        "from": {"email": "app@example.com", "name": "Example App"},
        "to": [{"email": "user@example.com", "name": "A User"}],
        "subject": "Your receipt",
        "text": "Thanks for your order.",
        "html": "<p>Thanks for your order.</p>",
    }
    email.update(overrides)
    return email


def submit(gateway: httpx.Client, email: dict[str, Any] | None = None) -> str:
    response = gateway.post("/v1/emails", json=email or an_email())
    assert response.status_code == 202, response.text
    email_id: str = response.json()["id"]
    return email_id


def outcome_committed(email: dict[str, Any]) -> bool:
    """Whether the processor's outcome for the email is committed (see `wait_for_final`)."""
    status = email["status"]
    return status == "FAILED" or (status in SENT_OR_LATER and email["provider"] is not None)


def wait_for_final(gateway: httpx.Client, email_id: str, timeout: float = 60) -> dict[str, Any]:
    """Poll until the processor's outcome is committed: SENT (the status perhaps moved on by a
    provider's event) or FAILED; fail the test with its last state otherwise.

    A provider's delivery event can arrive before the processor commits SENT: the status is then
    DELIVERED while the provider is not yet recorded. Only the processor sets the provider (with
    SENT, or with FAILED), so an email past SENT counts as final once its provider is known."""

    def email() -> dict[str, Any]:
        response = gateway.get(f"/v1/emails/{email_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return eventually(
        email,
        timeout,
        interval=0.2,
        until=outcome_committed,
        what=f"email {email_id} SENT (or later) or FAILED",
    )


def history(
    gateway: httpx.Client, email_id: str, provider_events: bool = False
) -> list[dict[str, Any]]:
    """The email's history; without the rows of providers' events unless `provider_events`
    (they arrive in the background, before or after the processor's own SENT row)."""
    response = gateway.get(f"/v1/emails/{email_id}/history")
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["history"]
    if provider_events:
        return entries
    return [entry for entry in entries if entry["detail"].get("outcome") != PROVIDER_EVENT]


def steps(entries: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(entry["status"], entry["provider"]) for entry in entries]


def wait_for_dead_letter(sqs: Any, dlq_url: str, needle: str, timeout: float = 60) -> str:
    """Wait until a message containing `needle` is in the DLQ; return its body."""

    def dead_letters() -> list[str]:
        response = sqs.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
        )
        return [message["Body"] for message in response.get("Messages", [])]

    bodies = eventually(
        dead_letters,
        timeout,
        interval=0,  # each receive long-polls for a second
        until=lambda bodies: any(needle in body for body in bodies),
        what=f"a message containing {needle!r} in the DLQ",
    )
    return next(body for body in bodies if needle in body)


def sends_for(stub: Any, email_id: str) -> list[dict[str, Any]]:
    """The send requests a stub received for one email (its id travels in a header/custom arg)."""
    return [message for message in stub.messages() if email_id in json.dumps(message["body"])]

"""The `mailstack` command, run as an operator runs it (its console script, a subprocess),
against a running stack: it needs nothing but the gateway's URL and a key."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from email_flows import SENT_OR_LATER, gateway_client, sends_for, submit, wait_for_final
from mailstack_stack.profiles import CONTRACT_TESTS, profile_env
from mailstack_stubs.control import StubControl
from mailstack_testing.aws import localstack_clients
from mailstack_testing.waiting import eventually

MAILSTACK = Path(sys.executable).with_name("mailstack")
AFTER_SENT = {"SENT", "DEFERRED", "DELIVERED", "OPENED", "CLICKED"}
EMPTY_QUEUE = {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def mailstack(stack: Any, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command with the stack's gateway and a key in the environment (its stdout is a
    pipe: JSON unless --table)."""
    env = os.environ | {
        "MAILSTACK_URL": stack.gateway_url,
        "MAILSTACK_API_KEY": key or stack.api_key,
    }
    return subprocess.run(
        [str(MAILSTACK), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_an_email_is_sent_and_followed_to_sent_from_the_command_line(
    stack: Any, gateway: httpx.Client
) -> None:
    tag = f"cli-{uuid.uuid4().hex[:8]}"
    accepted = succeeded(
        mailstack(
            stack, "send", "--from", "Example <app@example.com>", "--to", "user@example.com",
            "--subject", "From the CLI", "--text", "Hi", "--tag", tag,
        )
    )  # fmt: skip
    email_id = accepted["id"]
    assert accepted["status"] == "QUEUED"
    # Waited for through the API: each run of the command costs an interpreter's start.
    assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER

    statuses = [
        entry["status"] for entry in succeeded(mailstack(stack, "history", email_id))["history"]
    ]
    assert statuses[0] == "QUEUED"
    assert "SENT" in statuses
    # The stubs' delivery events may have moved it on since (DELIVERED).
    assert succeeded(mailstack(stack, "get", email_id))["status"] in AFTER_SENT
    listed = succeeded(mailstack(stack, "list", "--tag", tag, "--json"))
    assert [item["id"] for item in listed["items"]] == [email_id]
    assert listed["items"][0]["status"] in AFTER_SENT


def test_the_gateway_s_validation_errors_all_reach_the_terminal(stack: Any) -> None:
    result = mailstack(stack, "send", "--from", "app@example.com", "--text", "no recipient")
    assert result.returncode == 1
    assert "HTTP 422" in result.stderr
    assert "to:" in result.stderr
    assert "subject:" in result.stderr


def test_an_operator_manages_keys_and_reads_the_breakers(stack: Any) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = succeeded(
        mailstack(stack, "keys", "create", "--name", name, "--scope", "emails:read")
    )
    assert created["scopes"] == ["emails:read"]
    assert created["revoked_at"] is None
    # The new key is taken (no 401), and lacks what it was not given.
    refused = mailstack(stack, "breakers", key=created["key"])
    assert refused.returncode == 1
    assert "insufficient_scope" in refused.stderr

    listed = succeeded(mailstack(stack, "keys", "list", "--tenant", created["tenant"]))
    assert name in [item["name"] for item in listed["items"] if item["id"] == created["id"]]
    revoked = succeeded(mailstack(stack, "keys", "revoke", created["id"]))
    assert revoked["id"] == created["id"]
    assert revoked["revoked_at"] is not None

    breakers = succeeded(mailstack(stack, "breakers"))
    states = {item["state"] for item in breakers["items"]}
    assert states <= {"closed", "failing", "open", "half-open"}


def test_redrive_returns_a_dead_letter_to_the_queue_and_the_processor_consumes_it(
    stack_factory: Any,
) -> None:
    """On a stack of its own: a redrive empties the whole DLQ, which other tests read."""
    own = stack_factory(profile_env(CONTRACT_TESTS))
    with gateway_client(own) as gateway:
        email_id = submit(gateway)
        assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER
    sqs = localstack_clients(own.aws_endpoint_url)[0]
    body = json.dumps({"version": 1, "type": "email.queued", "email_id": email_id})
    sqs.send_message(QueueUrl=own.email_dlq_url, MessageBody=body)

    report = succeeded(mailstack(own, "redrive", "--timeout", "30"))
    assert report["started"]["messages_to_move"] == 1
    assert (report["redrive"]["status"], report["redrive"]["messages_moved"]) == ("COMPLETED", 1)

    def depth(url: str) -> dict[str, str]:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(EMPTY_QUEUE))
        return {name: attributes["Attributes"][name] for name in EMPTY_QUEUE}

    # The processor received the moved message and deleted it: the email was final already.
    eventually(
        lambda: depth(own.email_queue_url),
        30,
        interval=0.2,
        until=lambda found: found == EMPTY_QUEUE,
        what="the redriven message consumed",
    )
    assert depth(own.email_dlq_url) == EMPTY_QUEUE
    assert len(sends_for(StubControl(own.elasticemail_stub_url), email_id)) == 1

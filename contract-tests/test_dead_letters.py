"""An email whose message is dead-lettered while it is still open ends FAILED, never stuck."""

from typing import Any

import pytest

from conftest import MAX_ATTEMPTS
from email_flows import gateway_client, history, submit, wait_for_final
from mailstack_stubs.control import StubControl

pytestmark = pytest.mark.e2e


def test_an_email_whose_message_is_dead_lettered_before_it_gives_up_ends_failed(
    stack_factory: Any,
) -> None:
    # A processor that would try more often than the queue lets a message be received: the
    # redrive policy takes the message while the email still waits for a retry.
    stack = stack_factory(
        {
            "processor": {
                "MAX_ATTEMPTS": str(MAX_ATTEMPTS + 5),
                "RETRY_BACKOFF_BASE_SECONDS": "0.2",
                "RETRY_BACKOFF_MAX_SECONDS": "1",
                "RECEIVE_WAIT_SECONDS": "1",
                "DEAD_LETTER_RECHECK_SECONDS": "60",
                "BREAKER_FAILURE_THRESHOLD": "1000",
            }
        }
    )
    StubControl(stack.elasticemail_stub_url).set_behaviour("error", status=503)
    StubControl(stack.sendgrid_stub_url).set_behaviour("error", status=503)
    with gateway_client(stack) as gateway:
        email_id = submit(gateway)
        email = wait_for_final(gateway, email_id, timeout=120)

        assert email["status"] == "FAILED"
        assert "503" in email["last_error"]
        entries = history(gateway, email_id)
        assert entries[-1]["status"] == "FAILED"
        assert entries[-1]["detail"]["outcome"] == "dead_lettered"
        attempts = [entry for entry in entries if entry["status"] == "PROCESSING"]
        assert len(attempts) == MAX_ATTEMPTS

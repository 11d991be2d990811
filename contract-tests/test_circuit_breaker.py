"""A dead primary costs a few timeouts, not one per email, until a probe shows it is back."""

import time
from typing import Any

import pytest

from email_flows import gateway_client, history, sends_for, steps, submit, wait_for_final
from mailstack_stubs.control import StubControl

pytestmark = pytest.mark.e2e

COOLDOWN_SECONDS = 4


@pytest.fixture
def breaker_stack(stack_factory: Any) -> Any:
    return stack_factory(
        {
            "processor": {
                "BREAKER_FAILURE_THRESHOLD": "2",
                "BREAKER_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS),
                "RECEIVE_WAIT_SECONDS": "1",
            }
        }
    )


def test_skips_a_hanging_primary_once_its_circuit_opens_and_probes_it_after_the_cooldown(
    breaker_stack: Any,
) -> None:
    elasticemail = StubControl(breaker_stack.elasticemail_stub_url)
    sendgrid = StubControl(breaker_stack.sendgrid_stub_url)
    with gateway_client(breaker_stack) as gateway:
        elasticemail.set_behaviour("hang")
        for _ in range(2):  # two timeouts open the circuit
            email_id = submit(gateway)
            assert wait_for_final(gateway, email_id)["provider"] == "sendgrid"
            assert ("FAILED", "elasticemail") in steps(history(gateway, email_id))

        skipped = submit(gateway)
        assert wait_for_final(gateway, skipped)["provider"] == "sendgrid"
        entries = history(gateway, skipped)
        assert steps(entries) == [("QUEUED", None), ("PROCESSING", None), ("SENT", "sendgrid")]
        assert entries[-1]["detail"]["skipped"] == ["elasticemail"]
        assert sends_for(elasticemail, skipped) == []

        elasticemail.reset()  # the primary recovers
        time.sleep(COOLDOWN_SECONDS + 1)
        probe = submit(gateway)
        assert wait_for_final(gateway, probe)["provider"] == "elasticemail"
        after = submit(gateway)
        assert wait_for_final(gateway, after)["provider"] == "elasticemail"
        assert sends_for(sendgrid, after) == []

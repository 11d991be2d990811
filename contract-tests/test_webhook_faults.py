"""The webhook dispatcher killed (SIGKILL) mid-delivery: every event still reaches the
receiver, verified, each with its stable id; those that were in flight arrive twice."""

import os
import signal
from collections import defaultdict
from typing import Any

import pytest

from email_flows import SENT_OR_LATER, gateway_client, submit, wait_for_final
from mailstack_stack.stack import DISPATCHER
from mailstack_testing.recording import WebhookReceiver
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.e2e

EMAILS = 3
TYPES = ("email.queued", "email.processing", "email.sent")
# A lease short enough for the test to see it lapse (it must outlive two attempt timeouts).
DISPATCHER_ENV = {"WEBHOOK_LEASE_SECONDS": "5", "WEBHOOK_TIMEOUT_SECONDS": "2"}


def _exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_every_event_arrives_after_the_dispatcher_is_killed_mid_delivery(
    stack_factory: Any,
) -> None:
    stack = stack_factory({DISPATCHER: DISPATCHER_ENV})
    with WebhookReceiver() as receiver, gateway_client(stack) as gateway:
        created = gateway.post("/v1/webhooks", json={"url": receiver.url, "events": list(TYPES)})
        assert created.status_code == 201, created.text
        receiver.secret = created.json()["secret"]
        # No answer until the dispatcher is dead: a delivery is surely under way when it dies.
        receiver.hold()

        ids = [submit(gateway) for _ in range(EMAILS)]
        [interrupted, *_] = eventually(receiver.received, 30, what="a delivery under way")
        pid = stack.pid(DISPATCHER)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: _exited(pid), 10, interval=0.1, what=f"dispatcher {pid} exited")
        receiver.release()
        stack.start_component(DISPATCHER)
        for email_id in ids:
            assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER

        wanted = {(email_id, kind) for email_id in ids for kind in TYPES}

        def arrived() -> set[tuple[str, str]]:
            return {
                (hook.payload["data"]["email_id"], hook.payload["type"])
                for hook in receiver.received()
                if hook.verified
            }

        eventually(arrived, 60, interval=0.2, until=lambda got: wanted <= got, what="all events")
        # The delivery the kill interrupted was never recorded: once its lease lapses, it comes
        # again, with the same id.
        received = eventually(
            receiver.received,
            60,
            interval=0.2,
            until=lambda hooks: [hook.id for hook in hooks].count(interrupted.id) >= 2,
            what=f"the interrupted event {interrupted.id} delivered again",
        )

    assert all(hook.verified for hook in received)
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for hook in received:
        bodies[hook.id].add(hook.body)
    # One id per event, each always with the same body, however often it came.
    assert all(len(versions) == 1 for versions in bodies.values())
    assert len(bodies) == len(wanted)
    assert len(received) > len(bodies)

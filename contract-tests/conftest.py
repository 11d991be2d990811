"""Black-box fixtures: a running stack reached only through HTTP and the AWS API.

The stack is the session's private one (`--stack=host|docker|auto`) or one that is already
running (`--stack=external`, URLs from the environment or `.stack/stack.env`). Against an
external stack a test is skipped, with the reason, only when what it needs was not given: a
stub's control API, the AWS endpoint and queues, the database, or processor settings it relies
on (the stack's STACK_PROFILE; `make up PROFILE=contract-tests` gives the suite's own).
"""

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from email_flows import gateway_client
from mailstack_stack.profiles import CONTRACT_TESTS, profile_env
from mailstack_stubs.control import StubControl
from mailstack_testing.aws import localstack_clients
from mailstack_testing.external import ExternalStack

RESOURCES = Path(__file__).resolve().parents[1] / "config" / "resources.json"
MAX_ATTEMPTS = int(json.loads(RESOURCES.read_text())["email_queue"]["max_receive_count"])

# Tests whose verdict depends on the processor settings of the shared stack (the contract-tests
# profile), with why; against an external stack started without that profile they are skipped.
NEEDS_CONTRACT_SETTINGS = {
    "test_delivery.py::test_fails_after_the_last_attempt_when_both_providers_are_down": (
        "five attempts need a short retry backoff (the default RETRY_BACKOFF_BASE_SECONDS=10 "
        "puts the last one ~150 s away), a breaker threshold above the attempts (default 3 "
        "skips both providers from the third), and no dead-letter watcher (EMAIL_DLQ_URL "
        "unset; it hides the dead letter the test looks for)"
    ),
    "test_redelivery.py::test_a_poison_message_ends_in_the_dead_letter_queue": (
        "it reads the dead-letter queue, which needs a processor without the dead-letter "
        "watcher (EMAIL_DLQ_URL unset): the watcher hides each dead letter for 12 h"
    ),
    "test_redelivery.py::test_a_message_for_an_unknown_email_ends_in_the_dead_letter_queue": (
        "it reads the dead-letter queue, which needs a processor without the dead-letter "
        "watcher (EMAIL_DLQ_URL unset): the watcher hides each dead letter for 12 h"
    ),
}


@pytest.fixture(scope="session")
def running_stack_env() -> dict[str, dict[str, str]]:
    """The contract-tests profile: short retry backoff, no DLQ watcher, no breaker carry-over."""
    return profile_env(CONTRACT_TESTS)


@pytest.fixture(scope="session")
def stack(running_stack: Any) -> Any:
    return running_stack


@pytest.fixture(autouse=True)
def _external_stack_has_the_settings_the_test_relies_on(
    request: pytest.FixtureRequest, running_stack_env: dict[str, dict[str, str]]
) -> None:
    if "stack" not in request.fixturenames:
        return
    stack = request.getfixturevalue("stack")
    if not isinstance(stack, ExternalStack):
        return
    reason = NEEDS_CONTRACT_SETTINGS.get(request.node.nodeid.split("/")[-1])
    if reason and profile_env(stack.profile) != running_stack_env:
        pytest.skip(
            f"--stack=external: the stack runs profile {stack.profile!r}, not "
            f"{CONTRACT_TESTS!r} (start it with `make up PROFILE={CONTRACT_TESTS}`): {reason}"
        )


@pytest.fixture(scope="session")
def api_key(stack: Any) -> str:
    """The stack's development key: tenant `dev`, every scope (`make up` writes it)."""
    key: str = stack.api_key
    return key


@pytest.fixture(scope="session")
def gateway(stack: Any, api_key: str) -> Iterator[httpx.Client]:
    with gateway_client(stack) as client:
        yield client


@pytest.fixture(scope="session")
def elasticemail(stack: Any) -> StubControl:
    return StubControl(stack.elasticemail_stub_url)


@pytest.fixture(scope="session")
def sendgrid(stack: Any) -> StubControl:
    return StubControl(stack.sendgrid_stub_url)


@pytest.fixture(autouse=True)
def _fresh_stubs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with both providers healthy and no recorded sends, and leaves them so.

    On an external stack only the stubs given are reset (a test that drives a missing one is
    skipped when it asks for it); they may serve others too, and are reset all the same, since
    a test cannot judge a provider whose behaviour someone else set."""
    if "gateway" not in request.fixturenames:
        yield
        return
    stack = request.getfixturevalue("stack")
    with contextlib.ExitStack() as opened:
        if isinstance(stack, ExternalStack):
            keys = ("ELASTICEMAIL_STUB_URL", "SENDGRID_STUB_URL")
            urls = [url for url in (stack.get(key) for key in keys) if url]
            stubs = [opened.enter_context(StubControl(url)) for url in urls]
        else:
            stubs = [request.getfixturevalue("elasticemail"), request.getfixturevalue("sendgrid")]
        for stub in stubs:
            stub.reset()
        yield
        for stub in stubs:
            stub.reset()


@pytest.fixture(scope="session")
def sqs(stack: Any) -> Any:
    return localstack_clients(stack.aws_endpoint_url)[0]

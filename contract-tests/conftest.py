"""Black-box fixtures: a running stack reached only through HTTP and the AWS API."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from mailstack_stubs.control import StubControl

RESOURCES = Path(__file__).resolve().parents[1] / "config" / "resources.json"
MAX_ATTEMPTS = int(json.loads(RESOURCES.read_text())["email_queue"]["max_receive_count"])


@pytest.fixture(scope="session")
def running_stack_env() -> dict[str, dict[str, str]]:
    """Short retry backoff so the all-providers-down path ends in seconds, not minutes."""
    return {
        "processor": {
            "RETRY_BACKOFF_BASE_SECONDS": "0.2",
            "RETRY_BACKOFF_MAX_SECONDS": "2",
            "MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "RECEIVE_WAIT_SECONDS": "1",
            # The dead-letter watcher would hide DLQ messages from the tests that look for
            # them; it has its own test on its own stack.
            "EMAIL_DLQ_URL": "",
            # The breaker has its own test on its own stack; here it must not carry one
            # test's provider failures into the next.
            "BREAKER_FAILURE_THRESHOLD": "1000",
        }
    }


@pytest.fixture(scope="session")
def stack(running_stack: Any) -> Any:
    return running_stack


@pytest.fixture(scope="session")
def gateway(stack: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def elasticemail(stack: Any) -> StubControl:
    return StubControl(stack.elasticemail_stub_url)


@pytest.fixture(scope="session")
def sendgrid(stack: Any) -> StubControl:
    return StubControl(stack.sendgrid_stub_url)


@pytest.fixture(autouse=True)
def _fresh_stubs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test starts with both providers healthy and no recorded sends, and leaves them so."""
    if "gateway" not in request.fixturenames:
        yield
        return
    stubs = [request.getfixturevalue("elasticemail"), request.getfixturevalue("sendgrid")]
    for stub in stubs:
        stub.reset()
    yield
    for stub in stubs:
        stub.reset()


@pytest.fixture(scope="session")
def sqs(stack: Any) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )

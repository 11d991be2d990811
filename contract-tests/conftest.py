"""Black-box fixtures: a running stack reached only through HTTP and the AWS API."""

from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest

from mailstack_stubs.control import StubControl


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

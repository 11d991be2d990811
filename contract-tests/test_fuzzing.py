"""Property-based requests from the gateway's own OpenAPI document (schemathesis): no input
gives a server error, and every answer is one the document describes."""

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

# Bounded so that `make test` stays fast; each run draws new examples.
EXAMPLES_PER_OPERATION = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="session")
def gateway_schema(stack: Any, api_key: str) -> Any:
    """The document as the running gateway serves it (to the admin scope)."""
    response = httpx.get(
        f"{stack.gateway_url}/openapi.json",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return schemathesis.openapi.from_dict(response.json())


# Every operation of the document (a test below checks that none is missing).
OPERATIONS = [
    ("POST", "/v1/emails"),
    ("POST", "/submitEmail"),
    ("POST", "/v1/emails/batch"),
    ("POST", "/v1/emails/{email_id}/cancel"),
    ("GET", "/v1/emails/{email_id}"),
    ("GET", "/v1/emails/{email_id}/history"),
    ("GET", "/v1/emails"),
    ("GET", "/v1/suppressions"),
    ("POST", "/v1/suppressions"),
    ("DELETE", "/v1/suppressions/{email}"),
    ("POST", "/v1/provider-events/sendgrid"),
    ("GET", "/v1/provider-events/elasticemail"),
    ("POST", "/v1/provider-events/elasticemail"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/{webhook_id}"),
    ("DELETE", "/v1/webhooks/{webhook_id}"),
    ("POST", "/v1/webhooks/{webhook_id}/enable"),
    ("POST", "/v1/webhooks/{webhook_id}/test"),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"),
    ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"),
    ("POST", "/v1/admin/keys"),
    ("GET", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys/{key_id}/revoke"),
    ("GET", "/v1/admin/breakers"),
    ("GET", "/v1/admin/dead-letters"),
]
# Documented, and not fuzzed here, with why.
NOT_FUZZED = {
    ("POST", "/v1/admin/dead-letters/redrive"): (
        "it moves the whole dead-letter queue of the shared stack, which other tests read; "
        "test_cli.py redrives on a stack of its own, the gateway's integration tests check "
        "its answers"
    ),
}


def test_every_documented_operation_is_fuzzed(gateway_schema: Any) -> None:
    documented = {
        (operation.ok().method.upper(), operation.ok().path)
        for operation in gateway_schema.get_all_operations()
    }
    assert documented == set(OPERATIONS) | set(NOT_FUZZED)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_input_breaks_the_gateway_or_its_documented_answers(
    gateway_schema: Any, stack: Any, api_key: str, method: str, path: str
) -> None:
    operation = gateway_schema[path][method]

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy())
    def call(case: Any) -> None:
        case.call_and_validate(
            base_url=stack.gateway_url,
            headers={"Authorization": f"Bearer {api_key}"},
            checks=CHECKS,
            timeout=10,
        )

    call()

"""The OpenAPI document the composed app serves (built by main.create_app; nothing connects)."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mailstack_gateway.main import create_app
from mailstack_gateway.settings import GatewaySettings


@pytest.fixture
def app() -> FastAPI:
    settings = GatewaySettings(
        database_url="postgresql://mailstack:unused@127.0.0.1:9/mailstack",
        email_queue_url="http://127.0.0.1:9/000000000000/emails",
        attachments_bucket="mailstack-attachments",
        aws_endpoint_url="http://127.0.0.1:9",
    )
    return create_app(settings, run_relay=False)


@pytest.fixture
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/metrics", "/readyz"])
async def test_operational_endpoints_of_the_composed_app_need_a_credential(
    app: FastAPI, path: str
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        response = await client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/healthz")).status_code == 200


def test_every_operation_but_healthz_declares_bearer_security(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    unsecured = [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") != [{"bearer": []}]
        and not path.startswith("/v1/provider-events/")
    ]
    assert unsecured == ["GET /healthz"]


def test_provider_event_routes_declare_the_providers_own_proof(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    sendgrid = document["paths"]["/v1/provider-events/sendgrid"]["post"]["security"]
    assert sendgrid == [{"sendgridSignature": []}]
    assert schemes["sendgridSignature"]["name"] == "X-Twilio-Email-Event-Webhook-Signature"
    for method in ("get", "post"):
        operation = document["paths"]["/v1/provider-events/elasticemail"][method]
        assert operation["security"] == [{"elasticemailSecret": []}]
    assert schemes["elasticemailSecret"] == {**schemes["elasticemailSecret"], "in": "query"}


@pytest.mark.parametrize("path", ["/v1/emails", "/submitEmail"])
def test_openapi_documents_email_create_as_the_submit_request_body(
    document: dict[str, Any], path: str
) -> None:
    request_body = document["paths"][path]["post"]["requestBody"]
    schema = request_body["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/EmailCreate"}


def test_openapi_email_create_schema_uses_the_api_field_names(document: dict[str, Any]) -> None:
    schema = document["components"]["schemas"]["EmailCreate"]

    assert {"from", "to", "cc", "bcc", "reply_to", "subject", "text", "html"} <= set(
        schema["properties"]
    )
    assert "sender" not in schema["properties"]
    assert set(schema["required"]) == {"from", "to", "subject"}
    assert schema["additionalProperties"] is False


def test_openapi_resolves_every_reference_of_email_create(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    refs: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(components["EmailCreate"])

    assert refs, "EmailCreate should refer to the Address schema"
    for ref in refs:
        assert ref.removeprefix("#/components/schemas/") in components, ref


def _examples(property_schema: dict[str, Any]) -> list[Any]:
    """The examples of a property, also when it is optional (`anyOf` with null)."""
    found = list(property_schema.get("examples", []))
    for option in property_schema.get("anyOf", []):
        found += option.get("examples", [])
    return found


def test_openapi_describes_every_new_email_field_with_examples(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    email = schemas["EmailCreate"]["properties"]
    for name in ("headers", "tags", "metadata", "attachments"):
        assert email[name]["description"], name
        assert _examples(email[name]), name
    attachment = schemas["AttachmentCreate"]["properties"]
    for name in ("filename", "content", "content_type", "disposition", "content_id"):
        assert _examples(attachment[name]), name
    assert attachment["content"]["contentEncoding"] == "base64"
    assert set(schemas["EmailPublic"]["properties"]) >= {
        "headers",
        "tags",
        "metadata",
        "attachments",
    }
    (tag,) = [p for p in document["paths"]["/v1/emails"]["get"]["parameters"] if p["name"] == "tag"]
    assert tag["description"]
    assert tag["schema"]["examples"] == ["welcome"]


def test_openapi_documents_the_error_answers_of_submit(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/emails"]["post"]["responses"]
    assert {"202", "409", "413", "422", "503"} <= set(responses)


@pytest.mark.parametrize("path", ["/v1/emails", "/v1/emails/batch"])
def test_openapi_documents_the_409_of_a_key_in_flight_with_its_retry_after(
    document: dict[str, Any], path: str
) -> None:
    conflict = document["paths"][path]["post"]["responses"]["409"]
    assert "Idempotency-Key" in conflict["description"]
    assert "Retry-After" in conflict["headers"]
    schema = conflict["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Problem"}


@pytest.mark.parametrize(
    ("jwt", "problem"),
    [
        ({"jwt_issuer": "https://idp.example.com/"}, "JWT_AUDIENCE"),
        ({"jwt_issuer": "https://idp.example.com/", "jwt_audience": "a"}, "exactly one"),
        (
            {
                "jwt_issuer": "https://idp.example.com/",
                "jwt_audience": "a",
                "jwt_jwks_url": "https://idp.example.com/jwks.json",
                "jwt_algorithms": "HS256",
            },
            "asymmetric",
        ),
    ],
)
def test_an_incomplete_or_symmetric_jwt_configuration_stops_the_gateway_at_start(
    jwt: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        create_app(
            GatewaySettings(
                database_url="postgresql://mailstack:unused@127.0.0.1:9/mailstack",
                email_queue_url="http://127.0.0.1:9/000000000000/emails",
                attachments_bucket="mailstack-attachments",
                **jwt,  # type: ignore[arg-type]
            ),
            run_relay=False,
        )


def test_openapi_documents_the_batch_endpoint_and_its_request_body(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/v1/emails/batch"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    batch = document["components"]["schemas"]["EmailBatchCreate"]
    emails = batch["properties"]["emails"]

    assert schema == {"$ref": "#/components/schemas/EmailBatchCreate"}
    assert (emails["minItems"], emails["maxItems"]) == (1, 100)
    assert emails["items"] == {"$ref": "#/components/schemas/EmailCreate"}
    assert "emails[3].to[0].email" in emails["description"]
    assert len(emails["examples"][0]) == 2
    assert {"202", "413", "422", "429", "503"} <= set(operation["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"])
    accepted = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert accepted == {"$ref": "#/components/schemas/EmailBatchAccepted"}


def test_openapi_describes_send_at_with_an_example(document: dict[str, Any]) -> None:
    send_at = document["components"]["schemas"]["EmailCreate"]["properties"]["send_at"]
    status = document["components"]["schemas"]["EmailAccepted"]["properties"]["status"]

    assert "RFC 3339" in send_at["description"]
    assert send_at["examples"] == ["2026-12-24T09:00:00+01:00"]
    assert {"type": "string", "format": "date-time"} in send_at["anyOf"]
    assert set(status["enum"]) == {"QUEUED", "SCHEDULED"}


def test_openapi_documents_cancel_and_its_conflict(document: dict[str, Any]) -> None:
    operation = document["paths"]["/v1/emails/{email_id}/cancel"]["post"]
    responses = operation["responses"]

    assert {"200", "404", "409", "429"} <= set(responses)
    conflict = responses["409"]["content"]["application/json"]["schema"]
    assert conflict == {"$ref": "#/components/schemas/NotCancelable"}
    assert "SCHEDULED" in operation["summary"]


def test_openapi_documents_the_operator_endpoints(document: dict[str, Any]) -> None:
    paths = document["paths"]
    operations = {
        ("post", "/v1/admin/keys"): {"201", "401", "403", "422"},
        ("get", "/v1/admin/keys"): {"200", "401", "403"},
        ("post", "/v1/admin/keys/{key_id}/revoke"): {"200", "401", "403", "404"},
        ("get", "/v1/admin/breakers"): {"200", "401", "403"},
        ("get", "/v1/admin/dead-letters"): {"200", "401", "403", "503"},
        ("post", "/v1/admin/dead-letters/redrive"): {"202", "401", "403", "409", "503"},
    }
    for (method, path), statuses in operations.items():
        operation = paths[path][method]
        assert statuses <= set(operation["responses"]), (method, path)
        assert operation["tags"] == ["operations"]
        assert "admin scope" in operation["summary"]
    create = paths["/v1/admin/keys"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"] == {"$ref": "#/components/schemas/KeyCreate"}
    scopes = document["components"]["schemas"]["KeyCreate"]["properties"]["scopes"]
    assert scopes["default"] == ["emails:send", "emails:read"]

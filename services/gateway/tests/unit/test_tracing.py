"""Request spans of the composed app (main.create_app): one per request with a tracer provider,
none of the machinery without one; probes and scrapes make no spans."""

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mailstack_core.telemetry import TelemetrySettings, configure_telemetry
from mailstack_gateway.main import SERVICE_NAME, create_app
from mailstack_gateway.settings import GatewaySettings

SETTINGS = GatewaySettings(
    database_url="postgresql://mailstack:unused@127.0.0.1:9/mailstack",
    email_queue_url="http://127.0.0.1:9/000000000000/emails",
    attachments_bucket="mailstack-attachments",
    aws_endpoint_url="http://127.0.0.1:9",
)


async def test_each_request_but_the_probes_is_a_server_span_named_by_its_route() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(SETTINGS, run_relay=False, tracer_provider=provider)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        assert (await client.get("/healthz")).status_code == 200
        # No credentials: answered 401 before anything connects.
        response = await client.get("/v1/emails/0d6f5c0e-1e1b-4c1c-8a6a-1b2c3d4e5f60")
        assert response.status_code == 401

    [span] = exporter.get_finished_spans()
    assert span.name == "GET /v1/emails/{email_id}"
    assert span.attributes is not None
    assert span.attributes["http.status_code"] == 401
    assert span.attributes["http.route"] == "/v1/emails/{email_id}"
    provider.shutdown()


def test_without_an_otlp_endpoint_nothing_is_traced_or_reported() -> None:
    telemetry = configure_telemetry(TelemetrySettings(), SERVICE_NAME)

    assert telemetry.tracer_provider is None
    assert not telemetry.reports_errors
    app = create_app(SETTINGS, run_relay=False, tracer_provider=telemetry.tracer_provider)
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)

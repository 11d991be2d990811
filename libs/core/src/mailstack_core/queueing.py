"""Publishing `EmailQueuedMessage`s to SQS in batches: what the gateway's outbox and the retry
job both do, through a boto3 SQS client. Each message carries the W3C trace context of the
email's trace (`traceparent`, `tracestate`) as message attributes, so its delivery continues it."""

import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace

from mailstack_core.messages import EmailQueuedMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient

# The message attributes that carry the trace context; the consumer asks for exactly these.
TRACE_ATTRIBUTES = ("traceparent", "tracestate")

# W3C trace-context headers by name, as `opentelemetry.propagate.inject` writes them.
TraceCarrier = Mapping[str, str]

# The most entries SQS takes in one SendMessageBatch, DeleteMessageBatch or ReceiveMessage.
SQS_BATCH_LIMIT = 10


def current_trace_carrier() -> dict[str, str]:
    """The active span's trace context (empty when there is none, as when tracing is off)."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:  # spares the propagators' work
        propagate.inject(carrier)
    return carrier


def trace_attributes(carrier: TraceCarrier) -> dict[str, Any]:
    """SQS message attributes for the trace-context headers of `carrier`."""
    return {
        name: {"DataType": "String", "StringValue": carrier[name]}
        for name in TRACE_ATTRIBUTES
        if carrier.get(name)
    }


def _entry(entry_id: str, email_id: uuid.UUID, carrier: TraceCarrier) -> Any:
    entry: dict[str, Any] = {
        "Id": entry_id,
        "MessageBody": EmailQueuedMessage(email_id=email_id).to_json(),
    }
    attributes = trace_attributes(carrier)
    if attributes:
        entry["MessageAttributes"] = attributes
    return entry


def publish_queued(
    client: "SQSClient",
    queue_url: str,
    email_ids: Sequence[uuid.UUID],
    trace_carriers: Mapping[uuid.UUID, TraceCarrier] | None = None,
) -> set[uuid.UUID]:
    """One message per email, ten per call; return the ids SQS refused. An email's message
    carries the trace context `trace_carriers` holds for it, else the caller's own."""
    failed: set[uuid.UUID] = set()
    carriers = trace_carriers or {}
    current = current_trace_carrier()
    for start in range(0, len(email_ids), SQS_BATCH_LIMIT):
        chunk = email_ids[start : start + SQS_BATCH_LIMIT]
        by_entry = {str(index): email_id for index, email_id in enumerate(chunk)}
        response = client.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                _entry(entry, email_id, carriers.get(email_id) or current)
                for entry, email_id in by_entry.items()
            ],
        )
        failed |= {by_entry[item["Id"]] for item in response.get("Failed", [])}
    return failed

"""SQLAlchemy 2 table definitions for the tables the services share (the migrations own the DDL)."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, JSONB, UUID

from mailstack_core.status import EmailStatus

# A tenant id: a lower-case slug (the check on `tenants.id`; APIs validate with it too).
TENANT_ID_PATTERN = "^[a-z0-9][a-z0-9-]{0,62}$"

metadata = MetaData()

_STATUS_VALUES = ", ".join(f"'{status.value}'" for status in EmailStatus)

# A client of the service: every email and every credential belongs to exactly one tenant.
tenants = Table(
    "tenants",
    metadata,
    Column("id", Text, primary_key=True),
    # Per-minute rate limits for this tenant's keys; NULL means the gateway's default.
    Column("send_per_minute", Integer),
    Column("read_per_minute", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"id ~ '{TENANT_ID_PATTERN}'", name="tenants_id_slug"),
    CheckConstraint("send_per_minute IS NULL OR send_per_minute > 0", name="tenants_send_limit"),
    CheckConstraint("read_per_minute IS NULL OR read_per_minute > 0", name="tenants_read_limit"),
)

# API keys: only a SHA-256 of the secret part is kept; the key id is the lookup handle.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("secret_sha256", BYTEA, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    # Written in batches by the gateway, never once per request.
    Column("last_used_at", DateTime(timezone=True)),
    Index("api_keys_tenant_id_idx", "tenant_id"),
)

# Owned by the gateway (inserts) and the processor (status updates).
emails = Table(
    "emails",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id"), nullable=False),
    Column("sender_email", Text, nullable=False),
    Column("sender_name", Text),
    Column("to_recipients", JSONB, nullable=False),
    Column("cc_recipients", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("bcc_recipients", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("reply_to", JSONB),
    Column("subject", Text, nullable=False),
    Column("text_body", Text),
    Column("html_body", Text),
    Column("status", Text, nullable=False),
    Column("provider", Text),
    Column("provider_message_id", Text),
    Column("provider_transaction_id", Text),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    # The request body exactly as the client sent it, for audit and support.
    Column("request_body", Text, nullable=False),
    # What the client asked for beyond the message itself (migration 0006): extra mail headers,
    # tags (for filtering and the providers' categories) and metadata (string pairs the
    # providers carry into their events).
    Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Each attachment's name, type, size, SHA-256 and S3 key; never its bytes (they are in S3).
    Column("attachments", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # While PROCESSING, the claim is valid until this time; a crashed processor's claim lapses.
    Column("lease_expires_at", DateTime(timezone=True)),
    # When the client asked for it to be sent; SCHEDULED until then (NULL: at once).
    Column("send_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"status IN ({_STATUS_VALUES})", name="emails_status_known"),
    CheckConstraint("text_body IS NOT NULL OR html_body IS NOT NULL", name="emails_has_body"),
    Index("emails_created_at_id_idx", "created_at", "id"),
    Index("emails_status_created_at_idx", "status", "created_at"),
    # A tenant's list, newest first, with or without a status filter.
    Index("emails_tenant_created_at_id_idx", "tenant_id", "created_at", "id"),
    Index("emails_tenant_status_created_at_idx", "tenant_id", "status", "created_at"),
    # The reconciler's search for stranded emails.
    Index("emails_queued_updated_at_idx", "updated_at", postgresql_where=text("status = 'QUEUED'")),
    # GET /v1/emails?tag=...: `tags @> ARRAY[...]`.
    Index("emails_tags_idx", "tags", postgresql_using="gin"),
    Index(
        "emails_processing_lease_idx",
        "lease_expires_at",
        postgresql_where=text("status = 'PROCESSING'"),
    ),
    # The scheduler's search for due emails.
    Index("emails_scheduled_send_at_idx", "send_at", postgresql_where=text("status = 'SCHEDULED'")),
    # Matching a provider's event to its email (migration 0011).
    Index(
        "emails_provider_message_id_idx",
        "provider_message_id",
        postgresql_where=text("provider_message_id IS NOT NULL"),
    ),
)

# A client's idempotency key for a POST, and the email its first request created; kept 24 h.
# Claimed before the request is handled: until its emails commit, `email_id` is NULL (the request
# is in flight) and `expires_at` is the claim's short lease.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("key", Text, primary_key=True),
    Column("request_sha256", BYTEA, nullable=False),
    # NULL: the request is still in flight.
    Column("email_id", UUID(as_uuid=True), ForeignKey("emails.id", ondelete="CASCADE")),
    # Every email the request created (or, in flight, will create), in order (`email_id` is the
    # first); NULL: taken before 0007.
    Column("email_ids", ARRAY(UUID(as_uuid=True))),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("length(key) BETWEEN 1 AND 255", name="idempotency_keys_key_length"),
    CheckConstraint(
        "email_id IS NOT NULL OR email_ids IS NOT NULL",
        name="idempotency_keys_claim_names_its_emails",
    ),
    Index("idempotency_keys_expires_at_idx", "expires_at"),
)

# Transactional outbox: a row means "accepted, not yet published to the queue".
email_outbox = Table(
    "email_outbox",
    metadata,
    Column(
        "email_id",
        UUID(as_uuid=True),
        ForeignKey("emails.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Index("email_outbox_next_attempt_at_idx", "next_attempt_at"),
)

# Append-only audit trail; the database refuses UPDATE, and DELETE inside the retention window.
email_history = Table(
    "email_history",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "email_id",
        UUID(as_uuid=True),
        ForeignKey("emails.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("status", Text, nullable=False),
    Column("provider", Text),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()),
    # A provider event's own id (SendGrid's sg_event_id; a digest of ElasticEmail's
    # notification): the same event delivered twice is one row (migration 0011).
    Column("provider_event_id", Text),
    CheckConstraint(f"status IN ({_STATUS_VALUES})", name="email_history_status_known"),
    Index("email_history_email_id_id_idx", "email_id", "id"),
    # The console's last hour of sends (migration 0009): `at` grows with the physical order.
    Index("email_history_at_brin_idx", "at", postgresql_using="brin"),
    Index(
        "email_history_provider_event_idx",
        "provider",
        "provider_event_id",
        unique=True,
        postgresql_where=text("provider_event_id IS NOT NULL"),
    ),
)

# Addresses a tenant's emails are no longer sent to (migration 0011): added by a hard bounce or
# a complaint (in the transaction that records the event) or through the API. Stored lower-case.
suppressions = Table(
    "suppressions",
    metadata,
    Column("tenant_id", Text, ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("email", Text, primary_key=True),
    # hard_bounce, complaint or manual; `detail` says more (the provider, its words).
    Column("reason", Text, nullable=False),
    Column("detail", Text),
    # The email whose event added it, if one did (kept when that email is archived).
    Column("email_id", UUID(as_uuid=True)),
    Column("provider", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("email = lower(email)", name="suppressions_email_lower"),
    CheckConstraint(
        "reason IN ('hard_bounce', 'complaint', 'manual')", name="suppressions_reason_known"
    ),
    Index("suppressions_tenant_created_at_idx", "tenant_id", "created_at", "email"),
)

# One row: how long history must be kept before the retention job may delete it.
retention_policy = Table(
    "retention_policy",
    metadata,
    Column("singleton", Integer, primary_key=True, server_default=text("1")),
    Column("history_retention_days", Integer, nullable=False, server_default=text("183")),
    CheckConstraint("singleton = 1", name="retention_policy_single_row"),
    CheckConstraint("history_retention_days >= 1", name="retention_policy_positive"),
)

# One row per provider: the circuit breaker shared by every processor instance.
provider_breakers = Table(
    "provider_breakers",
    metadata,
    Column("provider", Text, primary_key=True),
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    # While in the future the provider is skipped; after it, the next call is a probe.
    Column("opened_until", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The web console's signed-in browsers (migration 0009), owned by the gateway: the cookie holds
# a random session id, this table only its SHA-256. Revoking or deleting the key ends them.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_sha256", BYTEA, primary_key=True),
    Column("key_id", Text, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", Text, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("console_sessions_expires_at_idx", "expires_at"),
    Index("console_sessions_key_id_idx", "key_id"),
)

# A tenant's webhook endpoint (migration 0010): where its emails' events are posted, signed with
# `secret` (Standard Webhooks, `whsec_...`), shown once at creation and never again.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", Text, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    # Event types (`email.sent`, ...) or '*' for all of them.
    Column("events", ARRAY(Text), nullable=False),
    Column("secret", Text, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    # Why the dispatcher disabled it (it failed for WEBHOOK_DISABLE_AFTER_SECONDS).
    Column("disabled_reason", Text),
    # The first failure since the last success; NULL while it answers.
    Column("first_failure_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("cardinality(events) > 0", name="webhook_endpoints_has_events"),
    Index("webhook_endpoints_tenant_id_idx", "tenant_id"),
)

# The webhook outbox: one row per event and endpoint, written by a trigger on email_history in
# the history row's own transaction (or by POST /v1/webhooks/{id}/test); the dispatcher claims
# due rows, posts them and records each attempt. `id` is the stable `webhook-id`.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column(
        "endpoint_id",
        UUID(as_uuid=True),
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The email and the history row it announces (NULL for a test event).
    Column("email_id", UUID(as_uuid=True)),
    Column("history_id", BigInteger),
    Column("type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # When it is due; while a dispatcher holds it, the end of that dispatcher's lease.
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text),
    Column("delivered_at", DateTime(timezone=True)),
    # Not delivered within WEBHOOK_MAX_EVENT_AGE_SECONDS: no more attempts (a replay restarts it).
    Column("gave_up_at", DateTime(timezone=True)),
    UniqueConstraint("endpoint_id", "history_id", name="webhook_events_endpoint_history"),
    Index(
        "webhook_events_due_idx",
        "next_attempt_at",
        postgresql_where=text("delivered_at IS NULL AND gave_up_at IS NULL"),
    ),
    Index("webhook_events_endpoint_id_idx", "endpoint_id", "created_at"),
)

# Every attempt to deliver an event: GET /v1/webhooks/{id}/deliveries.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", Text, ForeignKey("webhook_events.id", ondelete="CASCADE"), nullable=False),
    Column(
        "endpoint_id",
        UUID(as_uuid=True),
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    # The endpoint's HTTP status; NULL when no answer came (refused, timeout, blocked address).
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
    Index("webhook_deliveries_endpoint_id_idx", "endpoint_id", "id"),
    Index("webhook_deliveries_event_id_idx", "event_id"),
)

"""The gateway's settings: everything it reads from the environment, and nothing else."""

from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mailstack_core.telemetry import TelemetrySettings


class GatewaySettings(BaseSettings, TelemetrySettings):
    """Required values have no default, so a missing one stops the process at start. Traces,
    error reports and Datadog log ids: TelemetrySettings."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str
    # Read replicas (RDS) for the read-only endpoints; the primary when unset.
    database_read_url: str | None = None
    email_queue_url: str
    # The email queue's dead-letter queue: `POST /v1/admin/dead-letters/redrive` moves its
    # messages back. Without it, the dead-letter endpoints answer 503.
    email_dlq_url: str | None = None
    # Where accepted emails' attachments are put (config/resources.json: attachments_bucket).
    attachments_bucket: str
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=1, le=65535)
    # How long an idle client connection stays open: longer than a load balancer's idle
    # timeout (the ALB's is 60 s), so the balancer, never the gateway, closes it; otherwise a
    # request can race the close and get a 502.
    gateway_keep_alive_seconds: int = Field(default=75, ge=1)
    # A request body (POST /v1/emails) beyond this is refused with 413: up to 10 MiB of
    # attachments, base64-encoded, and the rest of the email.
    max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    # Connections kept open; requests beyond them wait (up to the timeout) rather than open and
    # close a connection each, which costs more than the statement.
    database_pool_size: int = Field(default=20, ge=1)
    database_timeout_seconds: float = Field(default=3.0, gt=0)
    # Group commit (group_commit.py): requests without an Idempotency-Key that arrive while
    # another write is under way are written together, up to this many emails a statement, by
    # at most this many statements at once. 1 email writes each request alone.
    intake_group_max_emails: int = Field(default=100, ge=1)
    intake_group_writers: int = Field(default=2, ge=1)

    # The relay publishes what the inline publish did not, once this grace period has passed.
    outbox_grace_seconds: float = Field(default=5.0, ge=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    outbox_max_backoff_seconds: float = Field(default=60.0, gt=0)
    # An email QUEUED (or PROCESSING with a lapsed claim) this long with no sign of life is
    # presumed to have lost its queue message, and is published again.
    stranded_after_seconds: float = Field(default=900.0, gt=0)
    stranded_check_seconds: float = Field(default=30.0, gt=0)
    # How often the scheduler looks for SCHEDULED emails that are due: never more than once a
    # second, so a due email is queued within about this long after its `send_at`.
    scheduler_poll_seconds: float = Field(default=1.0, ge=1.0)

    # Rate limits (per credential, per minute) are counted in Redis, shared by every instance.
    # Without REDIS_URL they are counted in this process only (development and tests).
    redis_url: str | None = None
    redis_timeout_seconds: float = Field(default=0.25, gt=0)
    rate_limit_send_per_minute: int = Field(default=600, ge=1)
    rate_limit_read_per_minute: int = Field(default=1200, ge=1)

    # A verified API key is trusted this long before it is read again (revocation delay).
    auth_cache_seconds: float = Field(default=10.0, ge=0)
    api_key_last_used_flush_seconds: float = Field(default=60.0, gt=0)

    # JWT bearer tokens (OIDC client credentials): off unless an issuer is configured.
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = ["RS256", "ES256"]
    jwt_tenant_claim: str = "tenant"
    jwt_scope_claim: str = "scope"
    jwt_jwks_cache_seconds: float = Field(default=300.0, gt=0)

    # The web console (/console): how long a sign-in lasts, and whether its cookies are Secure
    # (unset: when the request came over HTTPS, or a proxy's X-Forwarded-Proto says so; set it
    # to true behind a TLS-terminating load balancer that does not send that header).
    console_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    console_secure_cookies: bool | None = None
    # Webhook endpoints (mailstack_core.webhooks): hosts that may be registered with http://
    # (comma-separated; none in production), and CIDRs a URL may resolve to although they are
    # private or loopback (the local stack and the tests: 127.0.0.0/8). The dispatcher reads
    # the same two settings.
    webhook_http_hosts: Annotated[list[str], NoDecode] = []
    webhook_allowed_networks: str = ""
    # Provider events in (POST /v1/provider-events/...): each provider's route refuses every
    # request (401) until its key or secret is set. SendGrid's Event Webhook verification key,
    # base64 DER as its mail settings show it, or PEM.
    sendgrid_event_webhook_public_key: str | None = None
    # The `secret` query parameter of the notification URL configured at ElasticEmail.
    elasticemail_notification_secret: SecretStr | None = None
    # A signed SendGrid request whose timestamp is further than this from now is refused.
    provider_event_max_age_seconds: float = Field(default=300.0, gt=0)

    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|console)$")

    @model_validator(mode="before")
    @classmethod
    def _split_algorithms(cls, values: dict[str, object]) -> dict[str, object]:
        for key in ("jwt_algorithms", "JWT_ALGORITHMS", "webhook_http_hosts", "WEBHOOK_HTTP_HOSTS"):
            raw = values.get(key)
            if isinstance(raw, str):
                values[key] = [part.strip() for part in raw.split(",") if part.strip()]
        return values

    @model_validator(mode="after")
    def _jwt_is_complete(self) -> "GatewaySettings":
        if self.jwt_issuer is None:
            return self
        # The key source and the algorithms are checked by credentials.JwtVerifier, at start.
        if not self.jwt_audience:
            raise ValueError("JWT_ISSUER needs JWT_AUDIENCE")
        return self

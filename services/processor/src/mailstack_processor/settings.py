"""The processor's settings: everything it reads from the environment, and nothing else."""

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailstack_core.telemetry import TelemetrySettings

KNOWN_PROVIDERS = ("elasticemail", "sendgrid")


class ProcessorSettings(BaseSettings, TelemetrySettings):
    """Required values have no default, so a missing one stops the process at start. Traces,
    error reports and Datadog log ids: TelemetrySettings."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str
    email_queue_url: str
    # Where the gateway put accepted emails' attachments (resources.json: attachments_bucket).
    attachments_bucket: str
    # When set, emails whose message was dead-lettered before they reached SENT/FAILED are
    # marked FAILED, so no email is left QUEUED with no message to carry it.
    email_dlq_url: str | None = None
    dead_letter_recheck_seconds: int = Field(default=43_200, ge=1, le=43_200)
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"

    elasticemail_base_url: str = "https://api.elasticemail.com"
    elasticemail_api_key: SecretStr
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_api_key: SecretStr
    # Comma-separated, first is the primary.
    provider_order: str = "elasticemail,sendgrid"
    provider_timeout_seconds: float = Field(default=3.0, gt=0, le=30)

    # Consecutive transient/configuration failures that open a provider's circuit, and for how
    # long it then stays open before a probe.
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_cooldown_seconds: int = Field(default=30, ge=1)
    # How stale this processor's view of another processor's breaker transition may be.
    breaker_cache_seconds: float = Field(default=1.0, ge=0, le=10)

    max_concurrency: int = Field(default=20, ge=1, le=500)
    # Connections kept open (default: one per concurrent delivery; one of them SQLAlchemy's, the
    # rest the hot statements' psycopg pool), and how many more SQLAlchemy may open under load.
    # A deployment sizes both so every task fits the database's limit.
    database_pool_size: int | None = Field(default=None, ge=1)
    database_max_overflow: int = Field(default=10, ge=0)
    # Each long poll's wait. Short, so a stop lets the poll in progress end instead of
    # abandoning it (SQS would still hand an abandoned poll messages, hidden for the visibility
    # timeout): a stop waits for it up to 3.5 s. Empty receives cost one request per 3 s.
    receive_wait_seconds: int = Field(default=3, ge=0, le=20)
    # How long a delete or visibility change waits for others to share its SQS batch call
    # (10 entries at most; a full batch goes at once). A delete waits off its delivery's slot;
    # a visibility change (a retry) holds the slot until its batch is sent.
    sqs_batch_window_seconds: float = Field(default=0.05, ge=0, le=1)
    # Handling may take every provider's timeout plus database time; the claim outlives that.
    claim_lease_seconds: int = Field(default=30, ge=5)
    # Matches the queue's maxReceiveCount: the last receive marks the email FAILED.
    max_attempts: int = Field(default=5, ge=1)
    retry_backoff_base_seconds: float = Field(default=10.0, ge=0)
    retry_backoff_max_seconds: float = Field(default=300.0, ge=0, le=43_200)
    poison_backoff_seconds: int = Field(default=1, ge=0)
    shutdown_grace_seconds: float = Field(default=25.0, gt=0)

    processor_health_host: str = "127.0.0.1"
    processor_health_port: int = Field(default=9101, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|console)$")

    @field_validator("provider_order")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in KNOWN_PROVIDERS]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(f"must list distinct providers from {KNOWN_PROVIDERS}, got {value!r}")
        return ",".join(names)

    @property
    def providers(self) -> list[str]:
        return self.provider_order.split(",")

"""What each scheduled job reads from its environment, and nothing else."""

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class JobSettings(BaseSettings):
    """The database and AWS settings both jobs share.

    On AWS the database URL comes from a Secrets Manager secret (`DATABASE_URL_SECRET_ARN`), so
    no password sits in the Lambda's environment; locally and in tests `DATABASE_URL` is given
    directly. One of the two is required.
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: SecretStr | None = None
    database_url_secret_arn: str | None = None
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    database_timeout_seconds: float = Field(default=10.0, gt=0)

    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|console)$")

    @model_validator(mode="after")
    def _database_url_is_configured(self) -> "JobSettings":
        if self.database_url is None and not self.database_url_secret_arn:
            raise ValueError("set DATABASE_URL or DATABASE_URL_SECRET_ARN")
        return self


class CleanupSettings(JobSettings):
    """The archive-and-delete job."""

    archive_bucket: str
    # Never shorter than retention_policy.history_retention_days in the database: the larger wins.
    retention_days: int = Field(default=183, ge=1)
    cleanup_batch_size: int = Field(default=500, ge=1, le=10_000)
    # A run stops starting new batches when less than this is left of the Lambda's time.
    cleanup_stop_margin_seconds: float = Field(default=60.0, ge=0)
    # Webhook events delivered or given up this long ago are deleted with their attempts
    # (GET /v1/webhooks/{id}/deliveries lists no older ones).
    webhook_event_retention_days: int = Field(default=30, ge=1)


class RetrySettings(JobSettings):
    """The job that re-queues emails whose last failure was transient."""

    email_queue_url: str
    retry_job_max_rounds: int = Field(default=3, ge=0)
    # Round n waits base * 2^(n-1) after the email's last failure.
    retry_job_backoff_base_seconds: float = Field(default=900.0, ge=0)
    retry_job_batch_size: int = Field(default=100, ge=1, le=1_000)
    # The gateway's relay publishes a re-queued email only if this job has not after this long.
    retry_job_outbox_grace_seconds: float = Field(default=60.0, ge=0)

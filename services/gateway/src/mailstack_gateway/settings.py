"""The gateway's settings: everything it reads from the environment, and nothing else."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Required values have no default, so a missing one stops the process at start."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str
    # Read replicas (RDS) for the read-only endpoints; the primary when unset.
    database_read_url: str | None = None
    email_queue_url: str
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"

    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=1, le=65535)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    database_pool_size: int = Field(default=10, ge=1)
    database_timeout_seconds: float = Field(default=3.0, gt=0)

    # The relay publishes what the inline publish did not, once this grace period has passed.
    outbox_grace_seconds: float = Field(default=5.0, ge=0)
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    outbox_max_backoff_seconds: float = Field(default=60.0, gt=0)

    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|console)$")

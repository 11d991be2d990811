"""The dispatcher's settings: everything it reads from the environment, and nothing else."""

from typing import Annotated

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mailstack_core.telemetry import TelemetrySettings

DAY = 86_400


class DispatcherSettings(BaseSettings, TelemetrySettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str
    database_pool_size: int = Field(default=5, ge=1)
    database_max_overflow: int = Field(default=5, ge=0)

    # The same two settings as the gateway's (mailstack_core.webhooks): hosts reachable over
    # http://, and CIDRs that may be called although private or loopback.
    webhook_http_hosts: Annotated[list[str], NoDecode] = []
    webhook_allowed_networks: str = ""

    # How often it looks for due events when it found none the last time.
    dispatcher_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    # Deliveries under way at once.
    dispatcher_concurrency: int = Field(default=20, ge=1, le=500)
    # One attempt's deadline (connect, send, answer); a claim outlives it by far, so another
    # dispatcher takes the event only when this one died.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_lease_seconds: float = Field(default=60.0, ge=5)
    # Retries: base * 2^(attempt-1), at most max, each with jitter (the first within 10 s).
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0, le=10)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    # An event not delivered this long after it was created gets no more attempts (24 h at
    # least); an endpoint failing this long without a success is disabled.
    webhook_max_event_age_seconds: float = Field(default=3 * DAY, ge=DAY)
    webhook_disable_after_seconds: float = Field(default=3 * DAY, gt=0)
    # How often the backlog gauges are refreshed.
    dispatcher_stats_seconds: float = Field(default=15.0, gt=0)
    shutdown_grace_seconds: float = Field(default=20.0, gt=0)

    dispatcher_health_host: str = "127.0.0.1"
    dispatcher_health_port: int = Field(default=9102, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: str = Field(default="json", pattern="^(json|console)$")

    @model_validator(mode="before")
    @classmethod
    def _split_hosts(cls, values: dict[str, object]) -> dict[str, object]:
        for key in ("webhook_http_hosts", "WEBHOOK_HTTP_HOSTS"):
            raw = values.get(key)
            if isinstance(raw, str):
                values[key] = [part.strip() for part in raw.split(",") if part.strip()]
        return values

    @model_validator(mode="after")
    def _lease_outlives_attempt(self) -> "DispatcherSettings":
        if self.webhook_lease_seconds <= self.webhook_timeout_seconds * 2:
            raise ValueError("WEBHOOK_LEASE_SECONDS must exceed twice WEBHOOK_TIMEOUT_SECONDS")
        return self

"""A stack this run did not start: its URLs, from the environment or a stack.env file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mailstack_stack.profiles import DEFAULT, PROFILE_KEY
from mailstack_stack.stack import read_env_file

# What the contract suite can use of a running stack; only the gateway and a key are
# indispensable.
KEYS = (
    "GATEWAY_URL",
    "ELASTICEMAIL_STUB_URL",
    "SENDGRID_STUB_URL",
    "AWS_ENDPOINT_URL",
    "EMAIL_QUEUE_URL",
    "EMAIL_DLQ_URL",
    "DATABASE_URL",
    "API_KEY",
    "DEV_ISSUER_URL",
    PROFILE_KEY,
)


class MissingStackSettingError(LookupError):
    """A URL the caller needs was given neither in the environment nor in the stack.env."""

    def __init__(self, key: str, source: str) -> None:
        super().__init__(f"{key} is not given (set it in the environment or in {source})")
        self.key = key


@dataclass(frozen=True)
class ExternalStack:
    """The settings of a running stack; reading one that was not given raises
    MissingStackSettingError naming it."""

    values: Mapping[str, str]
    source: str

    def get(self, key: str) -> str | None:
        return self.values.get(key) or None

    def require(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise MissingStackSettingError(key, self.source)
        return value

    def missing(self, *keys: str) -> list[str]:
        return [key for key in keys if self.get(key) is None]

    @property
    def profile(self) -> str:
        return self.get(PROFILE_KEY) or DEFAULT

    @property
    def gateway_url(self) -> str:
        return self.require("GATEWAY_URL").rstrip("/")

    @property
    def elasticemail_stub_url(self) -> str:
        return self.require("ELASTICEMAIL_STUB_URL").rstrip("/")

    @property
    def sendgrid_stub_url(self) -> str:
        return self.require("SENDGRID_STUB_URL").rstrip("/")

    @property
    def aws_endpoint_url(self) -> str:
        return self.require("AWS_ENDPOINT_URL").rstrip("/")

    @property
    def email_queue_url(self) -> str:
        return self.require("EMAIL_QUEUE_URL")

    @property
    def email_dlq_url(self) -> str:
        return self.require("EMAIL_DLQ_URL")

    @property
    def database_url(self) -> str:
        return self.require("DATABASE_URL")

    @property
    def api_key(self) -> str:
        """A key with every scope (`make up` writes one); the gateway answers 401 without."""
        return self.require("API_KEY")

    @property
    def dev_issuer_url(self) -> str:
        return self.require("DEV_ISSUER_URL").rstrip("/")


def load_external_stack(environ: Mapping[str, str], env_file: Path) -> ExternalStack:
    """Each key from the environment when set there, else from `env_file` (if it exists)."""
    from_file = read_env_file(env_file) if env_file.is_file() else {}
    values = {}
    for key in KEYS:
        value = environ.get(key) or from_file.get(key)
        if value:
            values[key] = value
    source = f"{env_file}" if from_file else f"{env_file} (not found)"
    return ExternalStack(values=values, source=source)

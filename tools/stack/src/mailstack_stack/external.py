"""A stack's settings under their stack.env names: one this run started, or one it did not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mailstack_stack.config import read_env_file
from mailstack_stack.profiles import DEFAULT, PROFILE_KEY

# What stack.env holds; the contract suite needs only the gateway and a key.
KEYS = (
    *("API_KEY", "DEV_ISSUER_URL", "ELASTICEMAIL_API_KEY", "SENDGRID_API_KEY", "GATEWAY_URL"),
    *("ELASTICEMAIL_STUB_URL", "SENDGRID_STUB_URL", "AWS_ENDPOINT_URL", "EMAIL_QUEUE_URL"),
    *("EMAIL_DLQ_URL", "ARCHIVE_BUCKET", "ATTACHMENTS_BUCKET", "DATABASE_URL", PROFILE_KEY),
)


class MissingStackSettingError(LookupError):
    """A setting the caller needs was given neither in the environment nor in the stack.env."""

    def __init__(self, key: str, source: str) -> None:
        super().__init__(f"{key} is not given (set it in the environment or in {source})")


@dataclass(frozen=True)
class StackEnv:
    """Each setting as an attribute (`gateway_url` is GATEWAY_URL, without a trailing slash);
    reading one that was not given raises MissingStackSettingError naming it."""

    values: Mapping[str, str]
    source: str

    def get(self, key: str) -> str | None:
        return self.values.get(key) or None

    def require(self, key: str) -> str:
        if (value := self.get(key)) is None:
            raise MissingStackSettingError(key, self.source)
        return value

    def __getattr__(self, name: str) -> str:
        if name.upper() not in KEYS or name.startswith("_"):
            raise AttributeError(name)
        return self.require(name.upper()).rstrip("/")

    @property
    def profile(self) -> str:
        return self.get(PROFILE_KEY) or DEFAULT


class ExternalStack(StackEnv):
    """A stack this run did not start."""


def load_external_stack(environ: Mapping[str, str], env_file: Path) -> ExternalStack:
    """Each key from the environment when set there, else from `env_file` (if it exists)."""
    from_file = read_env_file(env_file) if env_file.is_file() else {}
    values = {key: environ.get(key) or from_file.get(key) or "" for key in KEYS}
    source = str(env_file) if from_file else f"{env_file} (not found)"
    return ExternalStack(
        values={key: value for key, value in values.items() if value}, source=source
    )

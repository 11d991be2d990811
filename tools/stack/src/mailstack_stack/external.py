"""A stack's settings under their stack.env names (RunningStack; the tests' ExternalStack)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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

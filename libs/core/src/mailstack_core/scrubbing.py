"""Secrets taken out of what leaves a process for people to read: log events and error reports.

One scrubber for both, so a secret kept out of the logs is kept out of Sentry too: values under
secret-sounding keys are replaced whole; API keys, bearer tokens and URL passwords are cut out
of any other string.
"""

import functools
import re
from collections.abc import Mapping
from typing import Any

from structlog.typing import EventDict

REDACTED = "[redacted]"

# Keys whose values are secrets whatever they look like (compared lower-case, `-` as `_`).
SECRET_KEY_PARTS = (
    "authorization",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "secret",
    "token",
    "cookie",
    "dsn",
    "credential",
    "private_key",
)

# Every log line passes here, and most strings hold no secret: each pattern runs only on a
# string holding a substring that any match of it needs.
_API_KEY = re.compile(r"\bms_[A-Za-z0-9_-]{8,}")  # mailstack API keys: ms_<key id>_<secret>
_AUTHORIZATION = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@")
_PLAIN = (int, float, bool, type(None))


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    normalized = key.lower().replace("-", "_")
    return any(part in normalized for part in SECRET_KEY_PARTS)


def scrub_text(text: str) -> str:
    if "ms_" in text:
        text = _API_KEY.sub("ms_" + REDACTED, text)
    if "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text:
        text = _AUTHORIZATION.sub(r"\1 " + REDACTED, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1:" + REDACTED + "@", text)
    return text


def scrub(value: Any, depth: int = 0) -> Any:
    """A copy of `value` (mappings, lists and strings, nested) with the secrets taken out."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, _PLAIN) or depth > 20:  # > 20: a cycle or an absurd nesting
        return value
    if isinstance(value, dict | Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and is_secret_key(key) and value[key] not in (None, "")
            else scrub(value[key], depth + 1)
            for key in value
        }
    if isinstance(value, list):
        return [scrub(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(scrub(item, depth + 1) for item in value)
    return value


def scrub_log_event(_: Any, __: str, event: EventDict) -> EventDict:
    """The structlog processor: every event, before it is rendered."""
    scrubbed: EventDict = scrub(event)
    return scrubbed

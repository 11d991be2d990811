"""Where the gateway is and which key to use: flags, then the environment, then stack.env.

`MAILSTACK_URL` / `MAILSTACK_API_KEY` are the CLI's own names; `GATEWAY_URL` / `API_KEY` are
the names `make up` writes to `.stack/stack.env`, accepted in the environment (`source
.stack/stack.env`) and read from that file: `$MAILSTACK_STACK_ENV_FILE`, else the nearest
`.stack/stack.env` from the working directory up to its repository's root.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

URL_NAMES = ("MAILSTACK_URL", "GATEWAY_URL")
KEY_NAMES = ("MAILSTACK_API_KEY", "API_KEY")
ENV_FILE_VARIABLE = "MAILSTACK_STACK_ENV_FILE"
STACK_ENV = Path(".stack") / "stack.env"


class NotConfiguredError(Exception):
    """The gateway's URL or the key was given nowhere."""


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str


def find_stack_env(start: Path) -> Path | None:
    """`.stack/stack.env` in `start` or the nearest folder above it, never above the root of
    the repository `start` is in (the first folder holding `.git`)."""
    for folder in (start, *start.parents):
        if (folder / STACK_ENV).is_file():
            return folder / STACK_ENV
        if (folder / ".git").exists():
            return None
    return None


def _first(names: tuple[str, ...], *sources: Mapping[str, str | None]) -> str | None:
    for source in sources:
        for name in names:
            if value := (source.get(name) or "").strip():
                return value
    return None


def resolve(
    url: str | None,
    api_key: str | None,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Target:
    """The flags win, then the environment, then the stack.env file."""
    environ = os.environ if environ is None else environ
    if env_file is None and (named := environ.get(ENV_FILE_VARIABLE)):
        env_file = Path(named)
    elif env_file is None:
        env_file = find_stack_env(cwd or Path.cwd())
    from_file: Mapping[str, str | None] = (
        dotenv_values(env_file) if env_file is not None and env_file.is_file() else {}
    )
    found_url = url or _first(URL_NAMES, environ, from_file)
    found_key = api_key or _first(KEY_NAMES, environ, from_file)
    where = f"the environment or {env_file}" if env_file else "the environment (or `make up`)"
    if not found_url:
        raise NotConfiguredError(f"no gateway URL: pass --url, or set MAILSTACK_URL in {where}")
    if not found_key:
        raise NotConfiguredError(f"no API key: pass --api-key, or set MAILSTACK_API_KEY in {where}")
    return Target(url=found_url.rstrip("/"), api_key=found_key)

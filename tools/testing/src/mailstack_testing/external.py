"""A stack this run did not start (`--stack=external`), read from the environment and stack.env."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mailstack_stack.config import read_env_file
from mailstack_stack.external import KEYS, StackEnv


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

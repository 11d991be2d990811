"""Which kind of stack to run: Docker (compose or testcontainers), host processes, or none."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from pathlib import Path

MODE_ENV = "MAILSTACK_STACK"


class StackMode(enum.StrEnum):
    AUTO = "auto"
    DOCKER = "docker"
    HOST = "host"
    EXTERNAL = "external"


class StackModeError(ValueError):
    """A stack mode that is unknown or not allowed where it was asked for."""


def parse_mode(value: str, allowed: tuple[StackMode, ...] = tuple(StackMode)) -> StackMode:
    try:
        mode = StackMode(value.strip().lower())
    except ValueError:
        mode = None
    if mode is None or mode not in allowed:
        names = "|".join(allowed)
        raise StackModeError(f"unknown stack mode {value!r}: expected {names}")
    return mode


def requested_mode(option: str | None, environ: Mapping[str, str], default: StackMode) -> StackMode:
    """The mode from the command line, else `$MAILSTACK_STACK`, else `default`."""
    value = option or environ.get(MODE_ENV) or default.value
    return parse_mode(value)


def docker_daemon_answers(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers a ping (DOCKER_HOST or the default socket)."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=int(max(timeout, 1)))
    except DockerException:
        return False
    try:
        return bool(client.ping())
    except (DockerException, OSError):
        return False
    finally:
        client.close()


def resolve_mode(
    requested: StackMode,
    daemon_answers: Callable[[], bool] = docker_daemon_answers,
    recorded: StackMode | None = None,
) -> StackMode:
    """`auto` becomes the mode of the stack already up (`recorded`), else docker when a daemon
    answers, else host; any other mode is kept as asked."""
    if requested is not StackMode.AUTO:
        return requested
    if recorded in (StackMode.DOCKER, StackMode.HOST):
        return recorded
    return StackMode.DOCKER if daemon_answers() else StackMode.HOST


def mode_file(state_dir: Path) -> Path:
    return state_dir / "mode"


def record_mode(state_dir: Path, mode: StackMode) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    mode_file(state_dir).write_text(f"{mode.value}\n")


def recorded_mode(state_dir: Path) -> StackMode | None:
    """The mode `up` recorded for the stack in `state_dir`, if one is up."""
    try:
        return parse_mode(mode_file(state_dir).read_text(), (StackMode.DOCKER, StackMode.HOST))
    except (FileNotFoundError, StackModeError):
        return None


def forget_mode(state_dir: Path) -> None:
    mode_file(state_dir).unlink(missing_ok=True)

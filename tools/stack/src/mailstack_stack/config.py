"""Settings of one local stack, which kind of stack runs, and the stack.env it is described by."""

from __future__ import annotations

import contextlib
import enum
import json
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

LOCALHOST = "127.0.0.1"
REGION = "us-east-1"
ELASTICEMAIL_API_KEY = "local-elasticemail-key"
SENDGRID_API_KEY = "local-sendgrid-key"
AWS_ACCESS_KEY_ID = AWS_SECRET_ACCESS_KEY = "test"  # noqa: S105 - LocalStack takes any
# The machine's servers: Redis for rate-limit counters, Postgres unless told otherwise.
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"
MACHINE_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# secretsmanager: the infra tests resolve a task's secrets the way ECS does.
DEFAULT_SERVICES: tuple[str, ...] = ("sqs", "s3", "secretsmanager")
MODE_ENV = "MAILSTACK_STACK"
# Webhook endpoints the local stack's gateway accepts and its dispatcher calls: this machine's
# loopback (the SSRF guard refuses it everywhere else).
WEBHOOK_HTTP_HOSTS = "127.0.0.1,localhost"
WEBHOOK_ALLOWED_NETWORKS = "127.0.0.0/8"


class StackMode(enum.StrEnum):
    AUTO = "auto"
    DOCKER = "docker"
    HOST = "host"
    EXTERNAL = "external"


class StackModeError(ValueError):
    """A stack mode that is unknown or not allowed where it was asked for."""


def parse_mode(value: str, allowed: tuple[StackMode, ...] = tuple(StackMode)) -> StackMode:
    if (mode := value.strip().lower()) not in allowed:
        raise StackModeError(f"unknown stack mode {value!r}: expected {'|'.join(allowed)}")
    return StackMode(mode)


def docker_daemon_answers() -> bool:
    """Whether a Docker engine answers a ping (DOCKER_HOST or the default socket)."""
    import docker
    from docker.errors import DockerException

    try:
        with contextlib.closing(docker.from_env(timeout=2)) as client:
            return bool(client.ping())
    except (DockerException, OSError):
        return False


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


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    with contextlib.ExitStack() as held:
        probes = [held.enter_context(socket.socket()) for _ in range(count)]
        # All bound at once, so the kernel cannot hand out the same port twice.
        for probe in probes:
            probe.bind((LOCALHOST, 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def free_port() -> int:
    return free_ports(1)[0]


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOCALHOST, port)) == 0


def find_repo_root(start: Path | None = None) -> Path:
    """The checkout holding config/resources.json and localstack/bootstrap.py."""
    here = (start or Path(__file__)).resolve()
    markers = ("config/resources.json", "localstack/bootstrap.py")
    for root in (here, *here.parents):
        if all((root / marker).is_file() for marker in markers):
            return root
    raise FileNotFoundError(f"no mailstack checkout (config/resources.json) above {here}")


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """`text` to `path` through a temporary file, so a reader never sees half of it; a new
    file gets `mode` (0o600: owner-readable only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=mode)
    tmp.write_text(text)
    tmp.replace(path)


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    write_atomically(path, "".join(f"{key}={value}\n" for key, value in values.items()))


def read_env_file(path: Path) -> dict[str, str]:
    return {key: value or "" for key, value in dotenv_values(path).items()}


@dataclass(frozen=True)
class Ports:
    """Every port the stack listens on (all on 127.0.0.1)."""

    gateway: int = 8000
    elasticemail_stub: int = 8101
    sendgrid_stub: int = 8102
    dev_issuer: int = 8103
    processor_health: int = 9101
    localstack: int = 4566
    # The stack's own Postgres cluster, run only when no other server is found.
    private_postgres: int = 55432
    # The webhook dispatcher's /healthz and /metrics.
    dispatcher_health: int = 9102

    @classmethod
    def free(cls) -> Ports:
        """Ports picked at random among free ones, for a second stack beside `make up`'s."""
        return cls(*free_ports(len(fields(cls))))


@dataclass(frozen=True)
class StackConfig:
    """One host stack. `database_url` / `aws_endpoint_url` reuse existing ones instead of
    selecting or starting them; `extra_env` adds variables per component (e.g. "processor")."""

    repo_root: Path
    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    database_url: str | None = None
    postgres_probe_url: str = MACHINE_POSTGRES_URL
    database_name: str = "mailstack"
    # Always the stack's own cluster, never a server found by probing: for tests that stop
    # and start Postgres under the stack.
    private_postgres: bool = False
    aws_endpoint_url: str | None = None
    localstack_services: tuple[str, ...] = DEFAULT_SERVICES
    name_prefix: str = ""
    extra_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The profile `extra_env` came from; recorded in stack.env.
    profile: str = "default"
    python: str = sys.executable
    redis_url: str = MACHINE_REDIS_URL
    # Run supervisord as a child of this process (test stacks), not as a daemon (`make up`).
    die_with_parent: bool = False

    @property
    def env_file(self) -> Path:
        return self.state_dir / "stack.env"

    @property
    def dev_key_file(self) -> Path:
        return self.state_dir / "dev-api-key"

    @property
    def endpoint_url(self) -> str:
        return self.aws_endpoint_url or self.url(self.ports.localstack)

    def url(self, port: int) -> str:
        return f"http://{LOCALHOST}:{port}"

    def resources(self) -> dict[str, Any]:
        """config/resources.json: the names and settings of the queues and the bucket."""
        loaded: dict[str, Any] = json.loads((self.repo_root / "config/resources.json").read_text())
        return loaded

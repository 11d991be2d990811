"""Settings of one local stack: where its state lives, its ports, and what it connects to."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from mailstack_stack.localstack import DEFAULT_SERVICES
from mailstack_stack.postgres import DEFAULT_DATABASE, server_url

LOCALHOST = "127.0.0.1"
REGION = "us-east-1"
ELASTICEMAIL_API_KEY = "local-elasticemail-key"
SENDGRID_API_KEY = "local-sendgrid-key"
AWS_ACCESS_KEY_ID = "test"
AWS_SECRET_ACCESS_KEY = "test"  # noqa: S105 - LocalStack accepts any credentials
# The machine's Redis (rate-limit counters) unless REDIS_URL names another.
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    with contextlib.ExitStack() as held:
        probes = [held.enter_context(socket.socket(socket.AF_INET)) for _ in range(count)]
        # All bound at once, so the kernel cannot hand out the same port twice.
        for probe in probes:
            probe.bind((LOCALHOST, 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def find_repo_root(start: Path | None = None) -> Path:
    """The checkout holding config/resources.json and localstack/bootstrap.py."""
    here = (start or Path(__file__)).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "config" / "resources.json").is_file() and (
            candidate / "localstack" / "bootstrap.py"
        ).is_file():
            return candidate
    raise FileNotFoundError(f"no mailstack checkout (config/resources.json) above {here}")


@dataclass(frozen=True)
class Ports:
    """Every port the stack listens on (all on 127.0.0.1)."""

    gateway: int = 8000
    elasticemail_stub: int = 8101
    sendgrid_stub: int = 8102
    dev_issuer: int = 8103
    processor_health: int = 9101
    localstack: int = 4566
    private_postgres: int = 55432

    @classmethod
    def free(cls) -> Ports:
        """Ports picked at random among free ones, for a second stack beside `make up`'s."""
        return cls(*free_ports(len(fields(cls))))


@dataclass(frozen=True)
class StackConfig:
    """One stack. `database_url` / `aws_endpoint_url` reuse existing ones instead of selecting
    or starting them; `extra_env` adds variables per component (e.g. for "processor")."""

    repo_root: Path
    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    database_url: str | None = None
    postgres_probe_url: str = field(default_factory=server_url)
    database_name: str = DEFAULT_DATABASE
    # Always run the stack's own cluster (in `postgres_dir`), never a server found by probing:
    # for tests that stop and start Postgres under the stack.
    private_postgres: bool = False
    aws_endpoint_url: str | None = None
    localstack_services: tuple[str, ...] = DEFAULT_SERVICES
    region: str = REGION
    name_prefix: str = ""
    name_suffix: str = ""
    extra_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The name of the settings profile `extra_env` came from; recorded in stack.env.
    profile: str = "default"
    python: str = sys.executable
    cache_dir: Path | None = None
    die_with_parent: bool = False
    health_timeout: float = 60.0
    # How long a component may take to exit after SIGTERM before it is SIGKILLed. The processor
    # gets longer: a graceful stop finishes in-flight sends and its current long poll (20 s).
    stop_grace: float = 10.0
    processor_stop_grace: float = 30.0
    localstack_timeout: float = 120.0
    # Rate-limit counters; the machine's Redis unless told otherwise.
    redis_url: str = MACHINE_REDIS_URL

    @classmethod
    def default(cls, repo_root: Path | None = None) -> StackConfig:
        root = repo_root or find_repo_root()
        return cls(repo_root=root, state_dir=root / ".stack")

    @property
    def env_file(self) -> Path:
        return self.state_dir / "stack.env"

    @property
    def localstack_dir(self) -> Path:
        return self.repo_root / "localstack"

    @property
    def resources_file(self) -> Path:
        return self.repo_root / "config" / "resources.json"

    def max_receive_count(self) -> int:
        """The queue's maxReceiveCount, which the processor's MAX_ATTEMPTS must equal."""
        settings = json.loads(self.resources_file.read_text())
        return int(settings["email_queue"]["max_receive_count"])

    @property
    def localstack_volume_dir(self) -> Path:
        return self.state_dir / "localstack"

    @property
    def dev_key_file(self) -> Path:
        return self.state_dir / "dev-api-key"

    @property
    def dev_issuer_dir(self) -> Path:
        return self.state_dir / "dev-issuer"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def own_localstack_endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.localstack}"

    @property
    def endpoint_url(self) -> str:
        return self.aws_endpoint_url or self.own_localstack_endpoint

    def url(self, port: int) -> str:
        return f"http://{LOCALHOST}:{port}"

"""The whole local stack: bring it up in order, report on it, take down what it started."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from dotenv import dotenv_values

from mailstack_stack import credentials, localstack, migrations, resources
from mailstack_stack.config import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    ELASTICEMAIL_API_KEY,
    LOCALHOST,
    SENDGRID_API_KEY,
    StackConfig,
    port_in_use,
)
from mailstack_stack.postgres import DatabaseChoice, PrivateCluster, select_database, server_answers
from mailstack_stack.profiles import PROFILE_KEY
from mailstack_stack.resources import QueueResources
from mailstack_stack.supervision import Program, Supervisor, wait_until

log = logging.getLogger("mailstack_stack")

LOCALSTACK = "localstack"
ELASTICEMAIL_STUB = "elasticemail-stub"
SENDGRID_STUB = "sendgrid-stub"
DEV_ISSUER = "dev-issuer"
GATEWAY = "gateway"
PROCESSOR = "processor"
# The stack's own Postgres cluster, which `stop`/`start` take by this name when it runs one.
POSTGRES = "postgres"
# Started in this order, stopped in the reverse one (supervisord's priorities).
COMPONENTS = (LOCALSTACK, ELASTICEMAIL_STUB, SENDGRID_STUB, DEV_ISSUER, GATEWAY, PROCESSOR)
PRIORITY = {name: 10 * (index + 1) for index, name in enumerate(COMPONENTS)}
# The port (a `Ports` field) and health path of each component but LocalStack. The gateway's
# /readyz needs the admin scope; the launcher checked the database and SQS itself.
HEALTH = {
    ELASTICEMAIL_STUB: ("elasticemail_stub", "/_stub/health"),
    SENDGRID_STUB: ("sendgrid_stub", "/_stub/health"),
    DEV_ISSUER: ("dev_issuer", "/health"),
    GATEWAY: ("gateway", "/healthz"),
    PROCESSOR: ("processor_health", "/healthz"),
}


class PortTakenError(RuntimeError):
    """A port the stack needs is already served by a process that is not ours."""


@dataclass(frozen=True)
class StackUrls:
    """Where everything of a running stack is; what `.stack/stack.env` holds."""

    gateway_url: str
    elasticemail_stub_url: str
    sendgrid_stub_url: str
    aws_endpoint_url: str
    email_queue_url: str
    email_dlq_url: str
    archive_bucket: str
    attachments_bucket: str
    database_url: str
    # A development key with every scope, for tenant `dev` (credentials.ensure_dev_key).
    api_key: str = dataclasses.field(default="", kw_only=True)
    dev_issuer_url: str = dataclasses.field(default="", kw_only=True)

    def as_env(self) -> dict[str, str]:
        return {
            "API_KEY": self.api_key,
            "DEV_ISSUER_URL": self.dev_issuer_url,
            # The keys the stubs accept, so an official provider SDK can be pointed at them.
            "ELASTICEMAIL_API_KEY": ELASTICEMAIL_API_KEY,
            "SENDGRID_API_KEY": SENDGRID_API_KEY,
            "GATEWAY_URL": self.gateway_url,
            "ELASTICEMAIL_STUB_URL": self.elasticemail_stub_url,
            "SENDGRID_STUB_URL": self.sendgrid_stub_url,
            "AWS_ENDPOINT_URL": self.aws_endpoint_url,
            "EMAIL_QUEUE_URL": self.email_queue_url,
            "EMAIL_DLQ_URL": self.email_dlq_url,
            "ARCHIVE_BUCKET": self.archive_bucket,
            "ATTACHMENTS_BUCKET": self.attachments_bucket,
            "DATABASE_URL": self.database_url,
        }


@dataclass(frozen=True)
class RunningStack(StackUrls):
    """A stack that is up: its URLs, and its components for tests that stop or restart one."""

    stack: Stack

    def stop_component(self, name: str) -> bool:
        return self.stack.stop(name)

    def start_component(self, name: str) -> None:
        self.stack.start(name)

    def pid(self, name: str) -> int | None:
        return self.stack.pid(name)

    def log_file(self, name: str) -> Path:
        return self.stack.log_file(name)


@contextlib.contextmanager
def run_stack(config: StackConfig) -> Iterator[RunningStack]:
    """Bring a stack up for the duration of the block, and down (what it started) after."""
    stack = Stack(config)
    try:
        urls = stack.up()
        yield RunningStack(**dataclasses.asdict(urls), stack=stack)
    finally:
        stack.down()


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    healthy: bool


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """KEY=value lines, written atomically so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    tmp.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    return {key: value or "" for key, value in dotenv_values(path).items()}


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    """One stack, described by its config, run by its own supervisord; every method can be
    called again safely."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.supervisor = Supervisor(config.state_dir, config.die_with_parent, config.python)
        self.cluster = PrivateCluster(root=config.postgres_dir, port=config.ports.private_postgres)
        self._started: tuple[str, QueueResources] | None = None

    # -- the pieces, in `up` order ------------------------------------------------------------

    def select_database(self) -> DatabaseChoice:
        choice = select_database(
            explicit_url=self.config.database_url,
            probe_url=None if self.config.private_postgres else self.config.postgres_probe_url,
            start_cluster=self._start_postgres,
            dbname=self.config.database_name,
        )
        log.info("stack.postgres.selected source=%s", choice.source)
        return choice

    def _start_postgres(self) -> str:
        self.cluster.initialize()
        url = self.cluster.admin_url
        self.supervisor.run(self.cluster.program(), lambda: server_answers(url), 60)
        return url

    def start_localstack(self) -> None:
        """Install LocalStack's runtime if needed and run it, unless an endpoint was given."""
        if self.config.aws_endpoint_url is None:
            self._ensure_running(LOCALSTACK)
            return
        endpoint = self.config.endpoint_url
        wait_until(
            self._health_check(LOCALSTACK),
            self.config.localstack_timeout,
            lambda: f"{LOCALSTACK} at {endpoint} not ready",
        )

    def bootstrap(self) -> QueueResources:
        created = resources.bootstrap(
            self.config.repo_root,
            self.config.endpoint_url,
            region=self.config.region,
            prefix=self.config.name_prefix,
            suffix=self.config.name_suffix,
        )
        log.info("stack.bootstrap.done email_queue_url=%s", created.email_queue_url)
        return created

    def migrate(self, database_url: str) -> None:
        migrations.migrate(database_url, self.supervisor.log_file("migrate"), self.config.python)
        log.info("stack.migrations.done")

    def service_env(self, database_url: str, queues: QueueResources) -> dict[str, str]:
        """What both services read: database, queue, bucket, AWS client settings for LocalStack."""
        return {
            "DATABASE_URL": database_url,
            "EMAIL_QUEUE_URL": queues.email_queue_url,
            "ATTACHMENTS_BUCKET": queues.attachments_bucket,
            "AWS_ENDPOINT_URL": self.config.endpoint_url,
            "AWS_REGION": self.config.region,
            "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
        }

    def gateway_env(self, database_url: str, queues: QueueResources) -> dict[str, str]:
        """The gateway's environment (docker-compose.yml gives it the same names)."""
        issuer = self.config.url(self.config.ports.dev_issuer)
        return {
            **self.service_env(database_url, queues),
            "GATEWAY_HOST": LOCALHOST,
            "GATEWAY_PORT": str(self.config.ports.gateway),
            "REDIS_URL": self.config.redis_url,
            # Tokens of the development issuer; a deployment configures its own identity provider.
            "JWT_ISSUER": issuer,
            "JWT_AUDIENCE": credentials.DEV_AUDIENCE,
            "JWT_JWKS_URL": f"{issuer}/.well-known/jwks.json",
            "JWT_ALGORITHMS": "RS256",
            # A purged or restarted local queue loses its messages: recover within a minute.
            "STRANDED_AFTER_SECONDS": "60",
            "STRANDED_CHECK_SECONDS": "5",
        }

    def processor_env(self, database_url: str, queues: QueueResources) -> dict[str, str]:
        """The processor's environment (docker-compose.yml gives it the same names)."""
        ports = self.config.ports
        return {
            **self.service_env(database_url, queues),
            "ELASTICEMAIL_BASE_URL": self.config.url(ports.elasticemail_stub),
            "ELASTICEMAIL_API_KEY": ELASTICEMAIL_API_KEY,
            "SENDGRID_BASE_URL": self.config.url(ports.sendgrid_stub),
            "SENDGRID_API_KEY": SENDGRID_API_KEY,
            "PROCESSOR_HEALTH_HOST": LOCALHOST,
            "PROCESSOR_HEALTH_PORT": str(ports.processor_health),
            "EMAIL_DLQ_URL": queues.email_dlq_url,
            # The last receive before the redrive policy takes the message marks it FAILED.
            "MAX_ATTEMPTS": str(self.config.max_receive_count()),
        }

    def program(self, name: str) -> Program:
        """What supervisord runs for component `name`."""
        ports = self.config.ports
        extra = self.config.extra_env.get(name, {})
        if name == LOCALSTACK:
            python = localstack.ensure_runtime(
                self.config.localstack_dir,
                self.config.cache_dir,
                log=self.supervisor.log_file("localstack-install"),
            )
            self.config.localstack_volume_dir.mkdir(parents=True, exist_ok=True)
            volume = self.config.localstack_volume_dir
            services = self.config.localstack_services
            return localstack.program(python, ports.localstack, volume, services, extra)
        host = ("--host", LOCALHOST, "--port")
        args: dict[str, tuple[str, ...]] = {
            ELASTICEMAIL_STUB: (
                "mailstack_stubs", "elasticemail", *host, str(ports.elasticemail_stub),
                "--api-key", ELASTICEMAIL_API_KEY,
            ),
            SENDGRID_STUB: (
                "mailstack_stubs", "sendgrid", *host, str(ports.sendgrid_stub),
                "--api-key", SENDGRID_API_KEY,
            ),
            # The development token issuer (`make token`); its JWKS is what the gateway trusts.
            DEV_ISSUER: (
                "mailstack_stubs.issuer", *host, str(ports.dev_issuer),
                "--key-dir", str(self.config.dev_issuer_dir),
                "--audience", credentials.DEV_AUDIENCE,
            ),
            GATEWAY: ("mailstack_gateway",),
            PROCESSOR: ("mailstack_processor",),
        }  # fmt: skip
        env: dict[str, str] = {}
        if name in (GATEWAY, PROCESSOR):
            if self._started is None:
                raise RuntimeError(f"{name} needs a stack brought up by this object's up()")
            env_of = self.gateway_env if name == GATEWAY else self.processor_env
            env = env_of(*self._started)
        return Program(
            name=name,
            argv=(self.config.python, "-m", *args[name]),
            env={**env, **extra},
            cwd=self.config.repo_root,
            # A graceful stop of the processor finishes in-flight sends and its long poll.
            stop_grace=(
                self.config.processor_stop_grace if name == PROCESSOR else self.config.stop_grace
            ),
            priority=PRIORITY[name],
        )

    # -- whole-stack operations ---------------------------------------------------------------

    def up(self) -> StackUrls:
        """Start whatever is not running yet, wait until all is healthy, write stack.env."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.supervisor.ensure_started()
        database = self.select_database()
        self.start_localstack()
        queues = self.bootstrap()
        self.migrate(database.url)
        api_key = credentials.ensure_dev_key(database.url, self.config.dev_key_file)
        self._started = (database.url, queues)
        for name in COMPONENTS[1:]:
            self._ensure_running(name)
        urls = dataclasses.replace(self.urls(database.url, queues), api_key=api_key)
        write_env_file(self.config.env_file, {**urls.as_env(), PROFILE_KEY: self.config.profile})
        log.info("stack.up env_file=%s", self.config.env_file)
        return urls

    def down(self) -> list[str]:
        """Stop everything (the processor first and alone: it may still need SQS and the stubs
        to drain) and the supervisord; returns what was running."""
        order = [PROCESSOR, *reversed(COMPONENTS[:-1]), POSTGRES]
        stopped = sorted(self.supervisor.shutdown(), key=order.index)
        for name in stopped:
            log.info("stack.component.stopped name=%s", name)
        self.config.env_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> list[ComponentStatus]:
        result = []
        for name in COMPONENTS:
            pid = self.supervisor.pid(name)
            healthy = pid is not None and self._health_check(name)()
            result.append(ComponentStatus(name, pid, healthy))
        if self.supervisor.state(POSTGRES) != "UNKNOWN":
            pid = self.supervisor.pid(POSTGRES)
            result.append(ComponentStatus(POSTGRES, pid, pid is not None))
        return result

    def urls(self, database_url: str, queues: QueueResources) -> StackUrls:
        ports = self.config.ports
        return StackUrls(
            gateway_url=self.config.url(ports.gateway),
            elasticemail_stub_url=self.config.url(ports.elasticemail_stub),
            sendgrid_stub_url=self.config.url(ports.sendgrid_stub),
            aws_endpoint_url=self.config.endpoint_url,
            email_queue_url=queues.email_queue_url,
            email_dlq_url=queues.email_dlq_url,
            archive_bucket=queues.archive_bucket,
            attachments_bucket=queues.attachments_bucket,
            database_url=database_url,
            dev_issuer_url=self.config.url(ports.dev_issuer),
        )

    # -- single components, for `up` and for fault-injection tests ----------------------------

    def stop(self, name: str) -> bool:
        """Stop one component with its grace, or the stack's own Postgres (`postgres`)."""
        if name == POSTGRES and self.supervisor.state(POSTGRES) == "UNKNOWN":
            raise RuntimeError(f"this stack runs no Postgres cluster of its own ({self.cluster})")
        return self.supervisor.stop(name)

    def start(self, name: str) -> None:
        """Start one component again (after `stop`, or a crash), with the settings `up` gave it."""
        if name == POSTGRES:
            self._start_postgres()
            return
        self._ensure_running(name)
        if name == LOCALSTACK:
            # LocalStack on the host keeps no state across a restart (no persistence): bootstrap
            # again, as `up` does; the names, and so the queue URLs the services hold, are the
            # same.
            self.bootstrap()

    def pid(self, name: str) -> int | None:
        return self.supervisor.pid(name)

    def log_file(self, name: str) -> Path:
        return self.supervisor.log_file(name)

    def _port(self, name: str) -> int:
        return int(getattr(self.config.ports, HEALTH[name][0] if name in HEALTH else name))

    def _health_check(self, name: str) -> Callable[[], bool]:
        if name == LOCALSTACK:
            return lambda: localstack.services_ready(
                self.config.endpoint_url, self.config.localstack_services
            )
        url = f"{self.config.url(self._port(name))}{HEALTH[name][1]}"
        return lambda: http_ok(url)

    def _ensure_running(self, name: str) -> None:
        """Leave a running component alone, start a stopped one, and wait until it is healthy;
        a changed definition (say, other settings) restarts it."""
        program = self.program(name)
        self.supervisor.define(program)
        # Not right after a crash (EXITED): supervisord restarts it, once its port is free.
        startable = self.supervisor.state(name) in ("STOPPED", "FATAL", "UNKNOWN")
        if startable and port_in_use(self._port(name)):
            raise PortTakenError(
                f"port {self._port(name)} for {name} is already in use by another process; "
                "stop it or run the stack on other ports"
            )
        timeout = (
            self.config.localstack_timeout if name == LOCALSTACK else self.config.health_timeout
        )
        self.supervisor.run(program, self._health_check(name), timeout)
        log.info("stack.component.healthy name=%s pid=%s", name, self.supervisor.pid(name))

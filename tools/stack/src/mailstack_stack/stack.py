"""The whole local stack: bring it up in order, report on it, take down what it started."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

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
from mailstack_stack.postgres import DatabaseChoice, PrivateCluster, select_database
from mailstack_stack.processes import (
    ProcessDirs,
    ProcessRecord,
    ProcessSpec,
    ProcessStartError,
    running_record,
    start_process,
    stop_components,
    wait_healthy,
)
from mailstack_stack.profiles import PROFILE_KEY
from mailstack_stack.resources import QueueResources

log = logging.getLogger("mailstack_stack")

LOCALSTACK = "localstack"
ELASTICEMAIL_STUB = "elasticemail-stub"
SENDGRID_STUB = "sendgrid-stub"
DEV_ISSUER = "dev-issuer"
GATEWAY = "gateway"
PROCESSOR = "processor"
# The stack's own Postgres cluster, which `stop`/`start` take by this name when it runs one.
POSTGRES = "postgres"
# Started in this order, stopped in the reverse one.
COMPONENTS = (LOCALSTACK, ELASTICEMAIL_STUB, SENDGRID_STUB, DEV_ISSUER, GATEWAY, PROCESSOR)


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
            "DATABASE_URL": self.database_url,
        }


@dataclass(frozen=True)
class RunningStack(StackUrls):
    """A stack that is up: its URLs, and its components for tests that stop or restart one."""

    stack: Stack

    def stop_component(self, name: str, grace: float | None = None) -> bool:
        return self.stack.stop(name, grace)

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
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[key.strip()] = value
    return values


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class Stack:
    """One stack, described by its config; every method can be called again safely."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.dirs = ProcessDirs(config.state_dir)
        self.cluster = PrivateCluster(
            root=config.postgres_dir,
            port=config.ports.private_postgres,
            log_file=self.dirs.log_file("postgres"),
        )
        self._started: tuple[str, QueueResources] | None = None

    # -- the pieces, in `up` order ------------------------------------------------------------

    def select_database(self) -> DatabaseChoice:
        choice = select_database(
            explicit_url=self.config.database_url,
            probe_url=None if self.config.private_postgres else self.config.postgres_probe_url,
            cluster=self.cluster,
            dbname=self.config.database_name,
        )
        log.info("stack.postgres.selected source=%s", choice.source)
        return choice

    def start_localstack(self) -> None:
        """Install LocalStack's runtime if needed and run it, unless an endpoint was given."""
        if self.config.aws_endpoint_url is not None:
            self._wait(
                LOCALSTACK,
                None,
                lambda: localstack.services_ready(
                    self.config.endpoint_url, self.config.localstack_services
                ),
                self.config.localstack_timeout,
            )
            return
        python = localstack.ensure_runtime(
            self.config.localstack_dir,
            self.config.cache_dir,
            log=self.dirs.log_file("localstack-install"),
        )
        self.config.localstack_volume_dir.mkdir(parents=True, exist_ok=True)
        spec = localstack.process_spec(
            python,
            self.config.ports.localstack,
            self.config.localstack_volume_dir,
            self.config.localstack_services,
            self.config.extra_env.get(LOCALSTACK),
            die_with_parent=self.config.die_with_parent,
        )
        self._ensure_running(
            spec,
            lambda: localstack.services_ready(
                self.config.endpoint_url, self.config.localstack_services
            ),
            self.config.ports.localstack,
            self.config.localstack_timeout,
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
        migrations.migrate(database_url, self.dirs.log_file("migrate"), self.config.python)
        log.info("stack.migrations.done")

    def start_stubs(self) -> None:
        for name, provider, port, key in (
            (
                ELASTICEMAIL_STUB,
                "elasticemail",
                self.config.ports.elasticemail_stub,
                ELASTICEMAIL_API_KEY,
            ),
            (SENDGRID_STUB, "sendgrid", self.config.ports.sendgrid_stub, SENDGRID_API_KEY),
        ):
            spec = self._python_spec(
                name,
                "mailstack_stubs",
                provider,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--api-key",
                key,
            )
            self._ensure_running(spec, self._health_check(name), port)
        self.start_dev_issuer()

    def start_dev_issuer(self) -> None:
        """The development token issuer (`make token`); its JWKS is what the gateway trusts."""
        port = self.config.ports.dev_issuer
        spec = self._python_spec(
            DEV_ISSUER,
            "mailstack_stubs.issuer",
            "--host",
            LOCALHOST,
            "--port",
            str(port),
            "--key-dir",
            str(self.config.dev_issuer_dir),
            "--audience",
            credentials.DEV_AUDIENCE,
        )
        self._ensure_running(spec, self._health_check(DEV_ISSUER), port)

    def service_env(self, database_url: str, queues: QueueResources) -> dict[str, str]:
        """What both services read: database, queue, and AWS client settings for LocalStack."""
        return {
            "DATABASE_URL": database_url,
            "EMAIL_QUEUE_URL": queues.email_queue_url,
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

    def start_gateway(self, database_url: str, queues: QueueResources) -> None:
        env = self.gateway_env(database_url, queues)
        spec = self._python_spec(GATEWAY, "mailstack_gateway", env=env)
        self._ensure_running(spec, self._health_check(GATEWAY), self.config.ports.gateway)

    def start_processor(self, database_url: str, queues: QueueResources) -> None:
        env = self.processor_env(database_url, queues)
        spec = self._python_spec(PROCESSOR, "mailstack_processor", env=env)
        port = self.config.ports.processor_health
        self._ensure_running(spec, self._health_check(PROCESSOR), port)

    # -- whole-stack operations ---------------------------------------------------------------

    def up(self) -> StackUrls:
        """Start whatever is not running yet, wait until all is healthy, write stack.env."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        database = self.select_database()
        self.start_localstack()
        queues = self.bootstrap()
        self.migrate(database.url)
        api_key = credentials.ensure_dev_key(database.url, self.config.dev_key_file)
        self.start_stubs()
        self.start_gateway(database.url, queues)
        self.start_processor(database.url, queues)
        self._started = (database.url, queues)
        urls = dataclasses.replace(self.urls(database.url, queues), api_key=api_key)
        write_env_file(self.config.env_file, {**urls.as_env(), PROFILE_KEY: self.config.profile})
        log.info("stack.up env_file=%s", self.config.env_file)
        return urls

    def down(self) -> list[str]:
        """Stop what `up` started here (by pid file), newest first; returns what was stopped."""
        grace = self.config.stop_grace
        # The processor first and alone: it may still need SQS and the stubs to drain.
        stopped = stop_components([PROCESSOR], self.dirs, self.config.processor_stop_grace)
        rest = [name for name in reversed(COMPONENTS) if name != PROCESSOR]
        stopped += stop_components(rest, self.dirs, grace)
        if self.cluster.is_initialized() and self.cluster.stop():
            stopped.append("postgres")
        for name in stopped:
            log.info("stack.component.stopped name=%s", name)
        self.config.env_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> list[ComponentStatus]:
        result = []
        for name in COMPONENTS:
            record = running_record(name, self.dirs)
            healthy = record is not None and self._health_check(name)()
            result.append(ComponentStatus(name, record.pid if record else None, healthy))
        if self.cluster.is_initialized():
            running = self.cluster.is_running()
            result.append(ComponentStatus("postgres", None, running))
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
            database_url=database_url,
            dev_issuer_url=self.config.url(ports.dev_issuer),
        )

    # -- single components, for `up` and for fault-injection tests ----------------------------

    def stop(self, name: str, grace: float | None = None) -> bool:
        """Stop one component (SIGTERM, then SIGKILL after `grace` s, default stop_grace), or
        the stack's own Postgres cluster (`postgres`, fast shutdown)."""
        if name == POSTGRES:
            return self._own_cluster().stop()
        default = self.config.processor_stop_grace if name == PROCESSOR else self.config.stop_grace
        wait = default if grace is None else grace
        return bool(stop_components([name], self.dirs, wait))

    def start(self, name: str) -> None:
        """Start one component again (after `stop`), with the settings `up` gave it."""
        if self._started is None:
            raise RuntimeError("start() needs a stack brought up by this object's up()")
        database_url, queues = self._started
        starters: dict[str, Callable[[], None]] = {
            POSTGRES: lambda: self._own_cluster().start(),
            LOCALSTACK: self._restart_localstack,
            ELASTICEMAIL_STUB: self.start_stubs,
            SENDGRID_STUB: self.start_stubs,
            DEV_ISSUER: self.start_dev_issuer,
            GATEWAY: lambda: self.start_gateway(database_url, queues),
            PROCESSOR: lambda: self.start_processor(database_url, queues),
        }
        starters[name]()

    def _own_cluster(self) -> PrivateCluster:
        if not self.cluster.is_initialized():
            raise RuntimeError(
                f"this stack runs no Postgres cluster of its own ({self.cluster.root})"
            )
        return self.cluster

    def _restart_localstack(self) -> None:
        # LocalStack on the host keeps no state across a restart (no persistence): the queues
        # and bucket are gone. Bootstrap again, as `up` does after starting it; the names, and so
        # the queue URLs the services hold, are the same.
        self.start_localstack()
        self.bootstrap()

    def pid(self, name: str) -> int | None:
        record = running_record(name, self.dirs)
        return record.pid if record else None

    def log_file(self, name: str) -> Path:
        return self.dirs.log_file(name)

    def _health_check(self, name: str) -> Callable[[], bool]:
        ports = self.config.ports
        urls = {
            ELASTICEMAIL_STUB: f"{self.config.url(ports.elasticemail_stub)}/_stub/health",
            SENDGRID_STUB: f"{self.config.url(ports.sendgrid_stub)}/_stub/health",
            DEV_ISSUER: f"{self.config.url(ports.dev_issuer)}/health",
            # /readyz needs the admin scope; the launcher checked the database and SQS itself.
            GATEWAY: f"{self.config.url(ports.gateway)}/healthz",
            PROCESSOR: f"{self.config.url(ports.processor_health)}/healthz",
        }
        if name == LOCALSTACK:
            return lambda: localstack.services_ready(
                self.config.endpoint_url, self.config.localstack_services
            )
        return lambda: http_ok(urls[name])

    def _python_spec(
        self, name: str, module: str, *args: str, env: Mapping[str, str] | None = None
    ) -> ProcessSpec:
        return ProcessSpec(
            name=name,
            argv=(self.config.python, "-m", module, *args),
            env={**(env or {}), **self.config.extra_env.get(name, {})},
            cwd=self.config.repo_root,
            die_with_parent=self.config.die_with_parent,
        )

    def _wait(
        self,
        name: str,
        record: ProcessRecord | None,
        check: Callable[[], bool],
        timeout: float,
    ) -> None:
        if record is not None:
            wait_healthy(name, record, check, timeout, self.dirs)
            return
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise ProcessStartError(f"{name} at {self.config.endpoint_url} not ready")
            time.sleep(0.5)

    def _ensure_running(
        self,
        spec: ProcessSpec,
        check: Callable[[], bool],
        port: int,
        timeout: float | None = None,
    ) -> ProcessRecord:
        """Leave a live, healthy component alone; (re)start a dead or sick one; wait for it."""
        wait_for = timeout if timeout is not None else self.config.health_timeout
        record = running_record(spec.name, self.dirs)
        if record is not None:
            try:
                wait_healthy(spec.name, record, check, min(wait_for, 10.0), self.dirs)
                log.info("stack.component.running name=%s pid=%d", spec.name, record.pid)
                return record
            except ProcessStartError:
                log.warning("stack.component.unhealthy name=%s pid=%d", spec.name, record.pid)
                stop_components([spec.name], self.dirs, self.config.stop_grace)
        if _port_stays_taken(port):
            raise PortTakenError(
                f"port {port} for {spec.name} is already in use by another process; "
                "stop it or run the stack on other ports"
            )
        record = start_process(spec, self.dirs)
        log.info("stack.component.started name=%s pid=%d", spec.name, record.pid)
        wait_healthy(spec.name, record, check, wait_for, self.dirs)
        log.info("stack.component.healthy name=%s", spec.name)
        return record


def _port_stays_taken(port: int, grace: float = 5.0) -> bool:
    """A process that just died (say, SIGKILLed a moment ago) may hold its listening socket
    until its last thread is torn down: give the port a moment before calling it taken."""
    deadline = time.monotonic() + grace
    while port_in_use(port):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)
    return False

"""The host stack: its components as programs of one supervisord per state directory.

supervisord restarts a component that crashes, stops each with its own grace (SIGTERM to the
process group, SIGKILL after `stopwaitsecs`) in reverse priority order, and appends its output
to `logs/<name>.log`. Each component writes its own pid to `pids/<name>.pid` as it starts.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import subprocess
import xmlrpc.client
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from supervisor.xmlrpc import SupervisorTransport
from tenacity import Retrying, retry_if_not_result, stop_after_delay, wait_fixed

from mailstack_stack import config as c
from mailstack_stack import credentials, event_keys, localstack, postgres, resources
from mailstack_stack.external import StackEnv

log = logging.getLogger("mailstack_stack")

LOCALSTACK, GATEWAY, PROCESSOR = "localstack", "gateway", "processor"
# The webhook dispatcher: the processor's package, another program.
DISPATCHER = "dispatcher"
ELASTICEMAIL_STUB, SENDGRID_STUB, DEV_ISSUER = "elasticemail-stub", "sendgrid-stub", "dev-issuer"
# The stack's own Postgres cluster, run when it finds no other server (or is told to).
POSTGRES = "postgres"
# Started in this order, stopped in the reverse one (supervisord's priorities).
COMPONENTS = (
    LOCALSTACK,
    ELASTICEMAIL_STUB,
    SENDGRID_STUB,
    DEV_ISSUER,
    GATEWAY,
    PROCESSOR,
    DISPATCHER,
)
# Components that need neither the database nor the queues.
STUBS = (ELASTICEMAIL_STUB, SENDGRID_STUB, DEV_ISSUER)
# The services: configured from stack.env (service_env), started once `up` wrote it.
SERVICES = (GATEWAY, PROCESSOR, DISPATCHER)
# Health paths on each component's port. The gateway's /readyz needs the admin scope; the
# launcher checked the database and SQS itself.
HEALTH_PATHS = {ELASTICEMAIL_STUB: "/_stub/health", SENDGRID_STUB: "/_stub/health"}
HEALTH_PATHS |= {DEV_ISSUER: "/health", GATEWAY: "/healthz", PROCESSOR: "/healthz"}
HEALTH_PATHS |= {DISPATCHER: "/healthz"}
# States in which supervisord runs the program or is about to (again).
ACTIVE = frozenset({"RUNNING", "STARTING", "BACKOFF"})
# LocalStack's first start on a machine installs its runtime (uv caches it).
TIMEOUTS = {LOCALSTACK: 300.0}
# How a component starts: it writes its own pid (`$$` is the shell's, which `exec` hands on), so
# the file stays true across the restarts supervisord makes by itself, and appends its output to
# its log file itself (relayed through supervisord, every log line cost a share of a core under
# load; supervisord's stdout_logfile, the same file, gets only what the shell says before exec).
_LAUNCH = 'echo $$ > "$0" && log="$1" && shift && exec "$@" >> "$log" 2>&1'
RPC_FACTORY = "supervisor.rpcinterface:make_main_rpcinterface"


class StackStartError(RuntimeError):
    """A component could not be started, or did not become healthy."""


class PortTakenError(StackStartError):
    """A port the stack needs is already served by a process that is not ours."""


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll `condition` (tenacity) until it holds; StackStartError after `seconds`."""
    retrying = Retrying(
        stop=stop_after_delay(seconds),
        wait=wait_fixed(0.1),
        retry=retry_if_not_result(bool),
        retry_error_callback=lambda _: False,
    )
    if not retrying(condition):
        raise StackStartError(f"{what}: not within {seconds} s")


def _section(name: str, values: Mapping[str, object]) -> str:
    """An ini section for supervisord, which expands `%(name)s` in values (so `%` is doubled)."""
    lines = "".join(f"{key}={str(value).replace('%', '%%')}\n" for key, value in values.items())
    return f"[{name}]\n{lines}\n"


@dataclass(frozen=True)
class RunningStack(StackEnv):
    """A stack that is up: its settings, and its components for tests that stop or restart
    one."""

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
def run_stack(config: c.StackConfig) -> Iterator[RunningStack]:
    """Bring a stack up for the duration of the block, and down after."""
    stack = Stack(config)
    try:
        yield stack.up()
    finally:
        stack.down()


class Stack:
    """One stack, described by its config, run by its own supervisord (reached over its Unix
    socket); every method can be called again safely."""

    def __init__(self, config: c.StackConfig) -> None:
        self.config = config
        self.socket = config.state_dir / "supervisor.sock"
        self.programs = config.state_dir / "supervisor"
        self.cluster_url = f"postgresql://postgres@{c.LOCALHOST}:{self._port(POSTGRES)}/postgres"
        # What `up` wrote to stack.env; the gateway and processor are configured from it.
        self.env: dict[str, str] = {}
        self._daemon: subprocess.Popen[bytes] | None = None

    def log_file(self, name: str) -> Path:
        return self.config.state_dir / "logs" / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.config.state_dir / "pids" / f"{name}.pid"

    @property
    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def state(self, name: str) -> str:
        """supervisord's state of program `name` (RUNNING, EXITED, ...); UNKNOWN if none."""
        return str(self._info(name)["statename"])

    def pid(self, name: str) -> int | None:
        info = self._info(name)
        return int(info["pid"]) if info["statename"] == "RUNNING" else None

    def up(self) -> RunningStack:
        """Start whatever is not running yet, wait until all is healthy, write stack.env."""
        config, ports, url = self.config, self.config.ports, self.config.url
        database_url = config.database_url
        if not database_url:
            server = config.postgres_probe_url
            if config.private_postgres or not postgres.server_answers(server):
                self.start(POSTGRES)
                server = self.cluster_url
            database_url = postgres.ensure_database(server, config.database_name)
        database_url = postgres.sqlalchemy_url(database_url)
        # What needs nothing else starts at once, together; each start overlaps the others'.
        self.launch(*([LOCALSTACK] if config.aws_endpoint_url is None else []), *STUBS)
        endpoint, services = config.endpoint_url, config.localstack_services
        ready = lambda: localstack.services_ready(endpoint, services)  # noqa: E731
        with postgres.migrating(database_url, self.log_file("migrate"), config.python):
            wait_for(ready, TIMEOUTS[LOCALSTACK], f"LocalStack at {endpoint} ready")
            queues = resources.bootstrap(config.repo_root, endpoint, config.name_prefix)
        self.queues = queues
        urls = {
            "DEV_ISSUER_URL": url(ports.dev_issuer),
            "GATEWAY_URL": url(ports.gateway),
            "ELASTICEMAIL_STUB_URL": url(ports.elasticemail_stub),
            "SENDGRID_STUB_URL": url(ports.sendgrid_stub),
            "AWS_ENDPOINT_URL": endpoint,
            "EMAIL_QUEUE_URL": queues.email_queue_url,
            "EMAIL_DLQ_URL": queues.email_dlq_url,
            "ARCHIVE_BUCKET": queues.archive_bucket,
            "ATTACHMENTS_BUCKET": queues.attachments_bucket,
            "DATABASE_URL": database_url,
        }
        self.env = credentials.stack_env(config, urls)
        self.start(*COMPONENTS[1:])
        c.write_env_file(config.env_file, self.env)
        log.info("stack.up env_file=%s", config.env_file)
        return RunningStack(values=self.env, source=str(config.env_file), stack=self)

    def down(self) -> list[str]:
        """Stop everything (the dispatcher and the processor first: the processor may still
        need SQS and the stubs to drain) and the supervisord; returns what was running."""
        try:
            running = [p["name"] for p in self.rpc.getAllProcessInfo() if p["statename"] in ACTIVE]
            self.rpc.shutdown()
        except (OSError, xmlrpc.client.Error):
            running = []
        else:  # supervisord removes its socket as it exits, once every program stopped
            wait_for(lambda: not self.socket.exists(), 120, f"{self.socket} gone")
        if self._daemon is not None:
            self._daemon.wait()
        for pid_file in self.pid_file("").parent.glob("*.pid"):
            pid_file.unlink()
        self.config.env_file.unlink(missing_ok=True)
        order = [DISPATCHER, PROCESSOR, *reversed(COMPONENTS[:-2]), POSTGRES]
        return sorted(running, key=order.index)

    def status(self) -> list[tuple[str, int | None, bool]]:
        """(name, pid, healthy) of each component, and of the stack's own Postgres if any."""
        own_postgres = [POSTGRES] if self.state(POSTGRES) != "UNKNOWN" else []
        pids = {name: self.pid(name) for name in (*COMPONENTS, *own_postgres)}
        return [(name, pid, pid is not None and self._healthy(name)) for name, pid in pids.items()]

    def start(self, *names: str) -> None:
        """Start components unless they run (after `stop`, a crash, or for `up`), all at once,
        with the settings `up` gave them, and wait until each is healthy; a changed definition
        restarts one."""
        self.launch(*names)
        for name in names:
            self._wait_healthy(name)
            if name == LOCALSTACK and self.env:
                # LocalStack on the host keeps no state across a restart: bootstrap again, as
                # `up` does; the names, and so the queue URLs the services hold, are the same.
                resources.bootstrap(
                    self.config.repo_root, self.config.endpoint_url, self.config.name_prefix
                )

    def launch(self, *names: str) -> None:
        """Have supervisord start the components that do not run; waits for nothing."""
        if not self._answers():
            self._start_supervisord()
        for name in names:
            if name == POSTGRES:
                postgres.init_cluster(self.config.state_dir / "postgres" / "data")
            self._define(name)
            if (state := self.state(name)) not in ACTIVE:
                # Not right after a crash (EXITED): supervisord restarts it once its port is free.
                if state != "EXITED" and c.port_in_use(port := self._port(name)):
                    raise PortTakenError(f"port {port} for {name} is in use by another process")
                with contextlib.suppress(xmlrpc.client.Fault):  # already started; or failed: below
                    self.rpc.startProcess(name, False)

    def stop(self, name: str) -> bool:
        """Stop one component with its grace; False if it was not running."""
        if name == POSTGRES and self.state(POSTGRES) == "UNKNOWN":
            raise StackStartError("this stack runs no Postgres cluster of its own")
        if self.state(name) not in ACTIVE:
            return False
        with contextlib.suppress(xmlrpc.client.Fault):
            self.rpc.stopProcess(name)
        self.pid_file(name).unlink(missing_ok=True)
        return True

    def service_env(self, name: str, env: Mapping[str, str]) -> dict[str, str]:
        """The environment of service `name` (gateway, processor or dispatcher) of the stack
        described by `env` (stack.env's settings); docker-compose.yml gives them the same
        names."""
        ports = self.config.ports
        webhooks = {
            "WEBHOOK_HTTP_HOSTS": c.WEBHOOK_HTTP_HOSTS,
            "WEBHOOK_ALLOWED_NETWORKS": c.WEBHOOK_ALLOWED_NETWORKS,
        }
        if name == DISPATCHER:
            return webhooks | {
                "DATABASE_URL": env["DATABASE_URL"],
                "DISPATCHER_HEALTH_HOST": c.LOCALHOST,
                "DISPATCHER_HEALTH_PORT": str(ports.dispatcher_health),
                # Locally a new event is posted within a fifth of a second.
                "DISPATCHER_POLL_SECONDS": "0.2",
            }
        names = ("DATABASE_URL", "EMAIL_QUEUE_URL", "ATTACHMENTS_BUCKET", "AWS_ENDPOINT_URL")
        common = {key: env[key] for key in names}
        common |= {"AWS_REGION": c.REGION, "AWS_ACCESS_KEY_ID": c.AWS_ACCESS_KEY_ID}
        common |= {"AWS_SECRET_ACCESS_KEY": c.AWS_SECRET_ACCESS_KEY}
        if name == GATEWAY:
            issuer = env["DEV_ISSUER_URL"]
            return (
                common
                | webhooks
                | self.event_keys().gateway_env()
                | {
                    "GATEWAY_HOST": c.LOCALHOST,
                    "GATEWAY_PORT": str(ports.gateway),
                    "REDIS_URL": self.config.redis_url,
                    # Tokens of the development issuer; a deployment configures its own.
                    "JWT_ISSUER": issuer,
                    "JWT_AUDIENCE": credentials.DEV_AUDIENCE,
                    "JWT_JWKS_URL": f"{issuer}/.well-known/jwks.json",
                    "JWT_ALGORITHMS": "RS256",
                    # A purged or restarted local queue loses its messages: recover within a minute.
                    "STRANDED_AFTER_SECONDS": "60",
                    "STRANDED_CHECK_SECONDS": "5",
                    # The operator endpoints redrive it (POST /v1/admin/dead-letters/redrive).
                    "EMAIL_DLQ_URL": env["EMAIL_DLQ_URL"],
                }
            )
        return common | {
            "ELASTICEMAIL_BASE_URL": env["ELASTICEMAIL_STUB_URL"],
            "ELASTICEMAIL_API_KEY": c.ELASTICEMAIL_API_KEY,
            "SENDGRID_BASE_URL": env["SENDGRID_STUB_URL"],
            "SENDGRID_API_KEY": c.SENDGRID_API_KEY,
            "PROCESSOR_HEALTH_HOST": c.LOCALHOST,
            "PROCESSOR_HEALTH_PORT": str(ports.processor_health),
            "EMAIL_DLQ_URL": env["EMAIL_DLQ_URL"],
            # The last receive before the redrive policy takes the message marks it FAILED.
            "MAX_ATTEMPTS": str(self.config.resources()["email_queue"]["max_receive_count"]),
        }

    def event_keys(self) -> event_keys.ProviderEventKeys:
        """The stubs' event signing key and secret, made once under the state directory."""
        return event_keys.ensure_event_keys(self.config.state_dir)

    def _program(self, name: str) -> dict[str, object]:
        """supervisord's settings for component `name`."""
        config, state_dir = self.config, self.config.state_dir
        listen = ("--host", c.LOCALHOST, "--port", str(self._port(name)))
        env: dict[str, str] = {}
        settings: dict[str, object] = {"directory": config.repo_root, "stopwaitsecs": 10}
        if name == POSTGRES:
            argv = postgres.server_argv(state_dir / "postgres" / "data", self._port(name))
            # SIGINT is Postgres's fast shutdown; its own pid is in postmaster.pid.
            settings |= {"directory": state_dir, "stopsignal": "INT", "stopwaitsecs": 30}
            settings |= {"user": user} if (user := postgres.server_user()) else {}
        elif name == LOCALSTACK:
            settings["directory"] = volume = state_dir / "localstack"
            volume.mkdir(parents=True, exist_ok=True)
            argv = localstack.runtime_argv(config.repo_root / "localstack")
            env = localstack.runtime_env(self._port(name), volume, config.localstack_services)
        elif name in SERVICES and not self.env:
            raise StackStartError(f"{name} needs a stack brought up by this object's up()")
        else:
            # The stubs, the development token issuer (`make token`) whose JWKS the gateway
            # trusts, and the services, which take their settings from the environment.
            stub = ("mailstack_stubs", name.removesuffix("-stub"), *listen, "--api-key")
            issuer = ("mailstack_stubs.issuer", *listen, "--key-dir", str(state_dir / "dev-issuer"))
            args = {
                ELASTICEMAIL_STUB: (*stub, c.ELASTICEMAIL_API_KEY),
                SENDGRID_STUB: (*stub, c.SENDGRID_API_KEY),
                DEV_ISSUER: (*issuer, "--audience", credentials.DEV_AUDIENCE),
            }
            args[DISPATCHER] = ("mailstack_processor.webhooks",)
            argv = [config.python, "-m", *args.get(name, (f"mailstack_{name}",))]
            env = self.service_env(name, self.env) if name in SERVICES else {}
            if name in (ELASTICEMAIL_STUB, SENDGRID_STUB):
                # Their events go to this stack's gateway, signed as the gateway expects.
                gateway_url = config.url(self._port(GATEWAY))
                env = self.event_keys().stub_env(name.removesuffix("-stub"), gateway_url)
            # A graceful stop of the processor finishes in-flight sends and its long poll, the
            # dispatcher's its deliveries under way.
            settings["stopwaitsecs"] = {PROCESSOR: 30, DISPATCHER: 25}.get(name, 10)
        if name != POSTGRES:
            files = (str(self.pid_file(name)), str(self.log_file(name)))
            argv = ["/bin/sh", "-c", _LAUNCH, *files, *argv]
        env |= config.extra_env.get(name, {})
        return {
            "command": shlex.join(argv),
            "environment": ",".join(f'{key}="{value}"' for key, value in env.items()),
            "priority": 10 * (COMPONENTS.index(name) + 1) if name in COMPONENTS else 1,
            # Started by `start`; a crash (a signal, a non-zero exit) is restarted, a clean
            # stop is not.
            **{"autostart": "false", "autorestart": "unexpected", "exitcodes": 0, "startsecs": 1},
            **{"stopasgroup": "true", "killasgroup": "true", "redirect_stderr": "true"},
            **{"stdout_logfile": self.log_file(name), "stdout_logfile_maxbytes": 0},
            **settings,
        }

    def _start_supervisord(self) -> None:
        for directory in (self.log_file("").parent, self.pid_file("").parent, self.programs):
            directory.mkdir(parents=True, exist_ok=True)
        conf, logs = self.programs / "supervisord.conf", self.log_file("").parent
        pidfile = self.config.state_dir / "supervisord.pid"
        conf.write_text(
            _section("unix_http_server", {"file": self.socket, "chmod": "0700"})
            + _section("supervisorctl", {"serverurl": f"unix://{self.socket}"})
            + _section("supervisord", {"logfile": logs / "supervisord.log", "pidfile": pidfile})
            + _section("rpcinterface:supervisor", {"supervisor.rpcinterface_factory": RPC_FACTORY})
            + _section("include", {"files": self.programs / "*.ini"})
        )
        argv = [self.config.python, "-m", "supervisor.supervisord", "-c", str(conf)]
        if self.config.die_with_parent:
            # In the foreground, a child sharing the caller's process group: Ctrl-C stops it
            # too, and `down` waits for it.
            self._daemon = subprocess.Popen([*argv, "--nodaemon"], stdout=subprocess.DEVNULL)
        else:
            subprocess.run(argv, check=True)
        wait_for(self._answers, 30, f"supervisord answering on {self.socket}")

    def _answers(self) -> bool:
        try:
            return bool(self.rpc.getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error):
            return False

    def _info(self, name: str) -> dict[str, Any]:
        try:
            return dict(self.rpc.getProcessInfo(name))
        except (OSError, xmlrpc.client.Error):
            return {"statename": "UNKNOWN", "pid": 0}

    def _define(self, name: str) -> None:
        """Add the program, or replace it (stopping it) when its definition changed."""
        text, path = _section(f"program:{name}", self._program(name)), self.programs / f"{name}.ini"
        if path.is_file() and path.read_text() == text and self.state(name) != "UNKNOWN":
            return
        path.write_text(text)
        [[added, changed, _]] = self.rpc.reloadConfig()
        if name in changed:
            with contextlib.suppress(xmlrpc.client.Fault):
                self.rpc.stopProcess(name)
            self.rpc.removeProcessGroup(name)
        if name in added or name in changed:
            self.rpc.addProcessGroup(name)

    def _port(self, name: str) -> int:
        fields = {PROCESSOR: "processor_health", DISPATCHER: "dispatcher_health"}
        field = (fields | {POSTGRES: "private_postgres"}).get(name)
        return int(getattr(self.config.ports, field or name.replace("-", "_")))

    def _healthy(self, name: str) -> bool:
        if name == POSTGRES:
            return postgres.server_answers(self.cluster_url)
        if name == LOCALSTACK:
            return localstack.services_ready(
                self.config.endpoint_url, self.config.localstack_services
            )
        return http_ok(f"{self.config.url(self._port(name))}{HEALTH_PATHS[name]}")

    def _wait_healthy(self, name: str) -> None:
        def ready() -> bool:
            if (state := self.state(name)) in ("FATAL", "STOPPED", "UNKNOWN"):
                raise StackStartError(f"{name} is {state}; see {self.log_file(name)}")
            return state == "RUNNING" and self._healthy(name)

        wait_for(ready, TIMEOUTS.get(name, 60), f"{name} healthy (see {self.log_file(name)})")
        log.info("stack.component.healthy name=%s pid=%s", name, self.pid(name))

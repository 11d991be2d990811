"""The stack under Docker Compose: `docker compose` on docker-compose.yml, and what it serves.

The compose file is the one description of the Docker stack; the URLs written to stack.env are
read off it (published ports, the services' own environment), never kept in a second list.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from mailstack_stack import credentials, localstack
from mailstack_stack.config import LOCALHOST, StackConfig
from mailstack_stack.modes import docker_daemon_answers
from mailstack_stack.profiles import PROFILE_KEY
from mailstack_stack.stack import ComponentStatus, StackUrls, http_ok, write_env_file
from mailstack_stack.supervision import ProcessStartError, wait_until

COMPOSE_FILE = "docker-compose.yml"
OVERRIDE_FILE = "compose.override.yml"
# Services `up` waits for, with the container port of their health endpoint.
HEALTH = {
    "elasticemail-stub": (8101, "/_stub/health"),
    "sendgrid-stub": (8102, "/_stub/health"),
    "dev-issuer": (8103, "/health"),
    # /readyz needs the admin scope; compose checks the database and LocalStack itself.
    "gateway": (8000, "/healthz"),
    "processor": (9101, "/healthz"),
}


class ComposeError(RuntimeError):
    """`docker compose` failed, or the stack it started did not become healthy."""


def load_compose(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def published_port(service: Mapping[str, Any], container_port: int) -> int:
    """The 127.0.0.1 port a service's `ports` entry publishes `container_port` on."""
    for entry in service.get("ports", []):
        host_ip, host_port, target = str(entry).rsplit(":", 2)
        if int(target) == container_port and host_ip == LOCALHOST:
            return int(host_port)
    raise ComposeError(f"no 127.0.0.1 port publishes container port {container_port}")


def _on_host(url: str, services: Mapping[str, Any]) -> str:
    """`url` as seen from the host: `http://service:port/...` -> the port published for it."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.hostname not in services or parts.port is None:
        return url
    port = published_port(services[parts.hostname], parts.port)
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"{LOCALHOST}:{port}")
    return urlunsplit(parts._replace(netloc=netloc))


def compose_urls(
    document: Mapping[str, Any], archive_bucket: str, attachments_bucket: str
) -> StackUrls:
    """Where the compose stack's parts are reachable from the host."""
    services = document["services"]
    processor_env = services["processor"]["environment"]
    gateway_env = services["gateway"]["environment"]
    return StackUrls(
        gateway_url=f"http://{LOCALHOST}:{published_port(services['gateway'], 8000)}",
        elasticemail_stub_url=_on_host(processor_env["ELASTICEMAIL_BASE_URL"], services),
        sendgrid_stub_url=_on_host(processor_env["SENDGRID_BASE_URL"], services),
        aws_endpoint_url=_on_host(gateway_env["AWS_ENDPOINT_URL"], services),
        email_queue_url=_on_host(gateway_env["EMAIL_QUEUE_URL"], services),
        email_dlq_url=_on_host(processor_env["EMAIL_DLQ_URL"], services),
        archive_bucket=archive_bucket,
        attachments_bucket=attachments_bucket,
        database_url=_on_host(gateway_env["DATABASE_URL"], services),
        dev_issuer_url=f"http://{LOCALHOST}:{published_port(services['dev-issuer'], 8103)}",
    )


def override_document(extra_env: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """A compose override giving services extra environment (`--env`, `--profile`)."""
    return {
        "services": {
            service: {"environment": dict(values)}
            for service, values in extra_env.items()
            if values
        }
    }


@dataclass(frozen=True)
class ComposeStack:
    """`docker compose` for the stack of `config` (project `mailstack`, docker-compose.yml)."""

    config: StackConfig
    docker: str = "docker"
    health_timeout: float = 300.0

    @property
    def compose_file(self) -> Path:
        return self.config.repo_root / COMPOSE_FILE

    @property
    def override_file(self) -> Path:
        return self.config.state_dir / OVERRIDE_FILE

    def command(self, *args: str, with_override: bool = True) -> list[str]:
        files = ["-f", str(self.compose_file)]
        if with_override and self.override_file.is_file():
            files += ["-f", str(self.override_file)]
        return [
            self.docker,
            "compose",
            "--project-directory",
            str(self.config.repo_root),
            *files,
            *args,
        ]

    def _run(self, argv: Sequence[str], capture: bool = False) -> str:
        try:
            result = subprocess.run(
                argv, check=False, text=True, capture_output=capture, cwd=self.config.repo_root
            )
        except FileNotFoundError as error:
            raise ComposeError(f"{self.docker} not found: install Docker") from error
        if result.returncode != 0:
            detail = f": {result.stderr.strip()}" if capture and result.stderr else ""
            raise ComposeError(f"{' '.join(argv)} failed (exit {result.returncode}){detail}")
        return result.stdout or ""

    def preflight(self, daemon_answers: Callable[[], bool] = docker_daemon_answers) -> None:
        """Fail with the reason before anything is started: no engine, or no compose plugin."""
        if not daemon_answers():
            raise ComposeError(
                "no Docker engine answers (DOCKER_HOST or the default socket); "
                "start one, or run the stack as host processes with STACK=host"
            )
        try:
            self._run([self.docker, "compose", "version"], capture=True)
        except ComposeError as error:
            raise ComposeError(f"the docker compose plugin is not available: {error}") from None

    def urls(self) -> StackUrls:
        settings = json.loads(self.config.resources_file.read_text())
        return compose_urls(
            load_compose(self.compose_file),
            settings["archive_bucket"]["name"],
            settings["attachments_bucket"]["name"],
        )

    def up(self) -> StackUrls:
        """Build, create or start what is not running (compose leaves the rest alone), wait."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        override = override_document(self.config.extra_env)
        if override["services"]:
            self.override_file.write_text(yaml.safe_dump(override, sort_keys=True))
        else:
            self.override_file.unlink(missing_ok=True)
        self._run(self.command("up", "--detach", "--build", "--remove-orphans"))
        urls = self.urls()
        self._wait_healthy(urls)
        api_key = credentials.ensure_dev_key(urls.database_url, self.config.dev_key_file)
        urls = dataclasses.replace(urls, api_key=api_key)
        write_env_file(self.config.env_file, {**urls.as_env(), PROFILE_KEY: self.config.profile})
        return urls

    def down(self) -> list[str]:
        self._run(self.command("down", "--remove-orphans"))
        self.config.env_file.unlink(missing_ok=True)
        self.override_file.unlink(missing_ok=True)
        return ["compose project mailstack"]

    def status(self) -> list[ComponentStatus]:
        checks = self._checks(self.urls())
        return [ComponentStatus(name, None, check()) for name, check in checks.items()]

    def _checks(self, urls: StackUrls) -> dict[str, Any]:
        document = load_compose(self.compose_file)
        services = document["services"]

        def url(service: str) -> str:
            port, path = HEALTH[service]
            return f"http://{LOCALHOST}:{published_port(services[service], port)}{path}"

        checks: dict[str, Any] = {
            "localstack": lambda: localstack.services_ready(
                urls.aws_endpoint_url, self.config.localstack_services
            )
        }
        for service in HEALTH:
            checks[service] = functools.partial(http_ok, url(service))
        return checks

    def _wait_healthy(self, urls: StackUrls) -> None:
        checks = self._checks(urls)

        def unhealthy() -> list[str]:
            return [name for name, check in checks.items() if not check()]

        try:
            wait_until(lambda: not unhealthy(), self.health_timeout, lambda: " ".join(unhealthy()))
        except ProcessStartError as error:
            raise ComposeError(
                f"{error} not healthy after {self.health_timeout:.0f} s; "
                f"see `{' '.join(self.command('logs', *str(error).split()))}`"
            ) from None

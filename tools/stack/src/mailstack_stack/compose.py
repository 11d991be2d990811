"""The stack under Docker Compose: `docker compose` on docker-compose.yml, and what it serves.

The compose file is the one description of the Docker stack: its health checks say when the
stack is up (`up --wait`, `ps`), and the settings written to stack.env are read off it
(published ports, the services' own environment).
"""

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from mailstack_stack import credentials
from mailstack_stack.config import LOCALHOST, StackConfig, docker_daemon_answers, write_env_file
from mailstack_stack.event_keys import ensure_event_keys


class ComposeError(RuntimeError):
    """`docker compose` failed, or is not there to run."""


def load_compose(config: StackConfig) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((config.repo_root / "docker-compose.yml").read_text())
    return document


def published_port(service: Mapping[str, Any], container_port: int) -> int:
    """The 127.0.0.1 port a service's `ports` entry publishes `container_port` on."""
    for entry in service.get("ports", []):
        host_ip, host_port, target = str(entry).rsplit(":", 2)
        if int(target) == container_port and host_ip == LOCALHOST:
            return int(host_port)
    raise ComposeError(f"no 127.0.0.1 port publishes container port {container_port}")


def compose_urls(document: Mapping[str, Any], resources: Mapping[str, Any]) -> dict[str, str]:
    """Where the compose stack's parts are reachable from the host, under stack.env's names
    (the buckets' names from config/resources.json, `resources`)."""
    services = document["services"]

    def on_host(url: str) -> str:  # http://service:port/... -> the port published for it
        parts = urlsplit(url)
        if parts.hostname is None or parts.hostname not in services or parts.port is None:
            return url
        port = published_port(services[parts.hostname], parts.port)
        netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"{LOCALHOST}:{port}")
        return parts._replace(netloc=netloc).geturl()

    processor, gateway = services["processor"]["environment"], services["gateway"]["environment"]
    return {
        "DEV_ISSUER_URL": on_host(gateway["JWT_ISSUER"]),
        "GATEWAY_URL": f"http://{LOCALHOST}:{published_port(services['gateway'], 8000)}",
        "ELASTICEMAIL_STUB_URL": on_host(processor["ELASTICEMAIL_BASE_URL"]),
        "SENDGRID_STUB_URL": on_host(processor["SENDGRID_BASE_URL"]),
        **{key: on_host(gateway[key]) for key in ("AWS_ENDPOINT_URL", "EMAIL_QUEUE_URL")},
        "EMAIL_DLQ_URL": on_host(processor["EMAIL_DLQ_URL"]),
        "ARCHIVE_BUCKET": resources["archive_bucket"]["name"],
        "ATTACHMENTS_BUCKET": resources["attachments_bucket"]["name"],
        "DATABASE_URL": on_host(gateway["DATABASE_URL"]),
    }


def override_document(extra_env: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """A compose override giving services extra environment (`--profile`)."""
    return {
        "services": {name: {"environment": dict(env)} for name, env in extra_env.items() if env}
    }


def service_health(ps_output: str) -> dict[str, bool]:
    """Per service of `docker compose ps --all --format json` (a JSON object a line; one array
    in older versions): whether it runs and, if it has a health check, passes it."""
    text = ps_output.strip()
    rows = (
        json.loads(text)
        if text.startswith("[")
        else [json.loads(line) for line in text.splitlines()]
    )
    return {
        row["Service"]: row["State"] == "running" and row.get("Health") in (None, "", "healthy")
        for row in rows
    }


@dataclass(frozen=True)
class ComposeStack:
    """`docker compose` for the stack of `config` (project `mailstack`, docker-compose.yml)."""

    config: StackConfig
    docker: str = "docker"

    def command(self, *args: str) -> list[str]:
        root, override = self.config.repo_root, self.config.state_dir / "compose.override.yml"
        files = ["-f", str(root / "docker-compose.yml")]
        files += ["-f", str(override)] if override.is_file() else []
        return [self.docker, "compose", "--project-directory", str(root), *files, *args]

    def run(self, *args: str, capture: bool = False) -> str:
        argv = self.command(*args) if args[0] != "version" else [self.docker, "compose", *args]
        try:
            # docker-compose.yml takes the stubs' event key and secret from the environment
            # (made on the first call that needs the project, never for `version`).
            env = None
            if args[0] != "version":
                env = os.environ | ensure_event_keys(self.config.state_dir).compose_env()
            done = subprocess.run(
                argv, text=True, capture_output=capture, cwd=self.config.repo_root, env=env
            )
        except FileNotFoundError as error:
            raise ComposeError(f"{self.docker} not found: install Docker") from error
        if done.returncode != 0:
            detail = f": {done.stderr.strip()}" if capture and done.stderr else ""
            raise ComposeError(f"{' '.join(argv)} failed (exit {done.returncode}){detail}")
        return done.stdout or ""

    def preflight(self, daemon_answers: Callable[[], bool] = docker_daemon_answers) -> None:
        """Fail with the reason before anything is started: no engine, or no compose plugin."""
        if not daemon_answers():
            raise ComposeError(
                "no Docker engine answers (DOCKER_HOST or the default socket); "
                "start one, or run the stack as host processes with STACK=host"
            )
        try:
            self.run("version", capture=True)
        except ComposeError as error:
            raise ComposeError(f"the docker compose plugin is not available: {error}") from None

    def up(self) -> dict[str, str]:
        """Build, create or start what is not running (compose leaves the rest alone), wait
        until every service is healthy or done (compose's own `--wait`), write stack.env."""
        override = self.config.state_dir / "compose.override.yml"
        override.parent.mkdir(parents=True, exist_ok=True)
        document = override_document(self.config.extra_env)
        override.write_text(yaml.safe_dump(document, sort_keys=True))
        if not document["services"]:
            override.unlink()
        self.run("up", "--detach", "--build", "--remove-orphans", "--wait", "--wait-timeout", "300")
        urls = compose_urls(load_compose(self.config), self.config.resources())
        env = credentials.stack_env(self.config, urls)
        write_env_file(self.config.env_file, env)
        return env

    def down(self) -> list[str]:
        self.run("down", "--remove-orphans")
        self.config.env_file.unlink(missing_ok=True)
        (self.config.state_dir / "compose.override.yml").unlink(missing_ok=True)
        return ["compose project mailstack"]

    def status(self) -> list[tuple[str, int | None, bool]]:
        """(service, None, healthy) of every long-running service `up` starts (not those of an
        opt-in compose profile, like jaeger)."""
        health = service_health(self.run("ps", "--all", "--format", "json", capture=True))
        services = load_compose(self.config)["services"].items()
        return [
            (name, None, health.get(name, False))
            for name, service in services
            if not service["healthcheck"].get("disable") and "profiles" not in service
        ]

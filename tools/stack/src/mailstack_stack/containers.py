"""Postgres and LocalStack in containers (testcontainers), for `pytest --stack=docker`.

Images are pinned to the ones docker-compose.yml runs. LocalStack is ready when its health
endpoint lists every needed service as usable, not when its log says "Ready." (the module's
default wait); the services and stubs still run as host processes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mailstack_stack.config import REGION

POSTGRES_IMAGE = "postgres:17.6-alpine"
LOCALSTACK_IMAGE = "localstack/localstack:4.14.0"
REDIS_IMAGE = "redis:7.4-alpine"
LOCALSTACK_PORT = 4566
HEALTH_PATH = "/_localstack/health"
READY_STATES = ("available", "running")
POSTGRES_PASSWORD = "mailstack"  # noqa: S105 - a throwaway container on a random local port


def compose_image(compose_file: Path, service: str) -> str:
    """The image a docker-compose.yml service runs, so that both paths pin the same one."""
    import yaml

    document = yaml.safe_load(compose_file.read_text())
    image: str = document["services"][service]["image"]
    return image


def services_listed_ready(body: str, services: Sequence[str]) -> bool:
    """Whether a /_localstack/health body shows every one of `services` as usable."""
    try:
        states = json.loads(body).get("services", {})
    except (ValueError, AttributeError):
        return False
    return all(states.get(service) in READY_STATES for service in services)


@contextlib.contextmanager
def postgres_container(image: str = POSTGRES_IMAGE) -> Iterator[str]:
    """A Postgres server in a container; yields its admin URL (libpq form, database postgres)."""
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        image, username="postgres", password=POSTGRES_PASSWORD, dbname="postgres", driver=None
    )
    with container:
        url: str = container.get_connection_url(driver=None)
        yield url.replace("localhost", "127.0.0.1")


@contextlib.contextmanager
def redis_container(image: str = REDIS_IMAGE) -> Iterator[str]:
    """A Redis server in a container; yields its redis:// URL."""
    from testcontainers.community.redis import RedisContainer

    with RedisContainer(image) as container:
        host = container.get_container_host_ip().replace("localhost", "127.0.0.1")
        yield f"redis://{host}:{container.get_exposed_port(6379)}/0"


def localstack_container_spec(
    image: str, services: Sequence[str], auth_token: str | None
) -> dict[str, Any]:
    """What the LocalStack container is started with (separate, so it can be checked)."""
    env = {
        "SERVICES": ",".join(services),
        "SQS_ENDPOINT_STRATEGY": "path",
        "EAGER_SERVICE_LOADING": "1",
        "AWS_DEFAULT_REGION": REGION,
    }
    if auth_token:
        env["LOCALSTACK_AUTH_TOKEN"] = auth_token
    return {"image": image, "env": env, "port": LOCALSTACK_PORT, "health_path": HEALTH_PATH}


@contextlib.contextmanager
def localstack_container(
    services: Sequence[str], image: str = LOCALSTACK_IMAGE, timeout: float = 180
) -> Iterator[str]:
    """LocalStack in a container, ready for `services`; yields its endpoint URL."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import HttpWaitStrategy

    spec = localstack_container_spec(image, services, os.environ.get("LOCALSTACK_AUTH_TOKEN"))
    wait = (
        HttpWaitStrategy(spec["port"], spec["health_path"])
        .for_response_predicate(lambda body: services_listed_ready(body, services))
        .with_startup_timeout(int(timeout))
    )
    container = DockerContainer(spec["image"]).with_exposed_ports(spec["port"]).waiting_for(wait)
    for key, value in spec["env"].items():
        container.with_env(key, value)
    with container:
        host = container.get_container_host_ip().replace("localhost", "127.0.0.1")
        port = container.get_exposed_port(spec["port"])
        yield f"http://{host}:{port}"

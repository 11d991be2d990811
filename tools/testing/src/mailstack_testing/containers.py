"""Postgres, LocalStack and Redis in containers (testcontainers), for `pytest --stack=docker`.

Each runs the image docker-compose.yml runs. LocalStack is ready when its health endpoint lists
every needed service as usable, not when its log says "Ready." (the module's default wait).
"""

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

from mailstack_stack.config import REGION
from mailstack_stack.localstack import services_listed_ready

LOCALSTACK_PORT = 4566
HEALTH_PATH = "/_localstack/health"


def compose_image(repo_root: Path, service: str) -> str:
    """The image a docker-compose.yml service runs, so that both paths pin the same one."""
    image: str = yaml.safe_load((repo_root / "docker-compose.yml").read_text())["services"][
        service
    ]["image"]
    return image


@contextlib.contextmanager
def postgres_container(image: str) -> Iterator[str]:
    """A Postgres server in a container; yields its admin URL (libpq form, database postgres)."""
    from testcontainers.community.postgres import PostgresContainer

    password = "mailstack"  # noqa: S105 - a throwaway container on a random local port
    container = PostgresContainer(
        image, username="postgres", password=password, dbname="postgres", driver=None
    )
    with container as server:
        yield str(server.get_connection_url(driver=None)).replace("localhost", "127.0.0.1")


@contextlib.contextmanager
def redis_container(image: str) -> Iterator[str]:
    """A Redis server in a container; yields its redis:// URL."""
    from testcontainers.community.redis import RedisContainer

    with RedisContainer(image) as server:
        host = server.get_container_host_ip().replace("localhost", "127.0.0.1")
        yield f"redis://{host}:{server.get_exposed_port(6379)}/0"


def localstack_env(services: Sequence[str], auth_token: str | None) -> dict[str, str]:
    """What the LocalStack container is started with."""
    env = {"SERVICES": ",".join(services), "SQS_ENDPOINT_STRATEGY": "path"}
    env |= {"EAGER_SERVICE_LOADING": "1", "AWS_DEFAULT_REGION": REGION}
    return env | ({"LOCALSTACK_AUTH_TOKEN": auth_token} if auth_token else {})


def ready_body(body: str, services: Sequence[str]) -> bool:
    """Whether a /_localstack/health body shows every one of `services` as usable."""
    with contextlib.suppress(ValueError):
        return services_listed_ready(json.loads(body), services)
    return False


@contextlib.contextmanager
def localstack_container(services: Sequence[str], image: str) -> Iterator[str]:
    """LocalStack in a container, ready for `services`; yields its endpoint URL."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import HttpWaitStrategy

    wait = HttpWaitStrategy(LOCALSTACK_PORT, HEALTH_PATH).with_startup_timeout(180)
    wait = wait.for_response_predicate(lambda body: ready_body(body, services))
    container = DockerContainer(image).with_exposed_ports(LOCALSTACK_PORT).waiting_for(wait)
    for key, value in localstack_env(services, os.environ.get("LOCALSTACK_AUTH_TOKEN")).items():
        container.with_env(key, value)
    with container:
        host = container.get_container_host_ip().replace("localhost", "127.0.0.1")
        yield f"http://{host}:{container.get_exposed_port(LOCALSTACK_PORT)}"

"""--stack=docker's containers, checked without an engine: the same pinned images as compose,
readiness on /_localstack/health, and the testcontainers API they are written against."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy

from mailstack_testing import containers


def test_containers_run_the_images_docker_compose_pins(repo_root: Path) -> None:
    assert containers.compose_image(repo_root, "postgres") == "postgres:17.6-alpine"
    assert containers.compose_image(repo_root, "localstack") == "localstack/localstack:4.14.0"
    assert containers.compose_image(repo_root, "redis").startswith("redis:")


def test_localstack_is_ready_only_when_every_needed_service_is_usable() -> None:
    body = json.dumps({"services": {"sqs": "running", "s3": "available", "lambda": "disabled"}})
    assert containers.ready_body(body, ["sqs", "s3"])
    assert not containers.ready_body(body, ["sqs", "lambda"])
    assert not containers.ready_body("<html>starting</html>", ["sqs"])
    assert not containers.ready_body("[]", ["sqs"])


def test_localstack_container_waits_on_the_health_endpoint_with_the_auth_token_passed() -> None:
    env = containers.localstack_env(["sqs"], "tok")
    assert containers.HEALTH_PATH == "/_localstack/health"
    assert env["SERVICES"] == "sqs"
    assert env["SQS_ENDPOINT_STRATEGY"] == "path"
    assert env["LOCALSTACK_AUTH_TOKEN"] == "tok"
    assert "LOCALSTACK_AUTH_TOKEN" not in containers.localstack_env(["sqs"], None)


def test_the_testcontainers_api_used_is_the_installed_one() -> None:
    # Built without an engine: a wait strategy needs none until it is run.
    strategy = (
        HttpWaitStrategy(4566, "/_localstack/health")
        .for_response_predicate(lambda body: True)
        .with_startup_timeout(10)
    )
    assert isinstance(strategy, HttpWaitStrategy)
    for method in ("with_exposed_ports", "with_env", "waiting_for", "get_exposed_port"):
        assert callable(getattr(DockerContainer, method)), method
    parameters = inspect.signature(PostgresContainer).parameters
    assert {"image", "username", "password", "dbname", "driver"} <= set(parameters)
    assert "driver" in inspect.signature(PostgresContainer.get_connection_url).parameters

"""docker-compose.yml, checked without a Docker engine: the service graph, pins, health checks,
ports, and the environment each service gets against what the host launcher gives it."""

from __future__ import annotations

import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mailstack_stack import credentials
from mailstack_stack.compose import (
    ComposeError,
    ComposeStack,
    compose_urls,
    load_compose,
    override_document,
    service_health,
)
from mailstack_stack.config import (
    ELASTICEMAIL_API_KEY,
    SENDGRID_API_KEY,
    Ports,
    StackConfig,
    read_env_file,
)
from mailstack_stack.passthrough import is_passed
from mailstack_stack.profiles import CONTRACT_TESTS, profile_env
from mailstack_stack.resources import load_bootstrap
from mailstack_stack.stack import Stack

# The services whose process stays up (migrate runs once and exits).
LONG_RUNNING = {"postgres", "localstack", "elasticemail-stub", "sendgrid-stub", "gateway"}
LONG_RUNNING |= {"processor", "dispatcher", "redis", "dev-issuer", "jaeger"}
# Taken from the shell, as `make up` passes them in host mode (mailstack_stack.passthrough).
TELEMETRY = {"OTEL_EXPORTER_OTLP_ENDPOINT", "SENTRY_DSN", "DD_LOGS_INJECTION"}
# Each built service and the Dockerfile target (final stage) it runs.
BUILT_TARGETS = {"migrate": "gateway", "gateway": "gateway", "processor": "processor"}
BUILT_TARGETS |= {"dispatcher": "processor"}
BUILT_TARGETS |= {"elasticemail-stub": "stubs", "sendgrid-stub": "stubs", "dev-issuer": "stubs"}
BUILT = set(BUILT_TARGETS)
# localstack/localstack's default account id for any test credentials.
LOCALSTACK_ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    return load_compose(StackConfig(repo_root=repo_root, state_dir=repo_root / ".stack"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="module")
def resources(repo_root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((repo_root / "config" / "resources.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def host_stack(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """A launcher that is never started: only asked what environment it would give."""
    return Stack(StackConfig(repo_root=repo_root, state_dir=tmp_path_factory.mktemp("unused")))


# stack.env's settings, as the host launcher configures the services from them.
STACK_ENV = {
    "DATABASE_URL": "postgresql+psycopg://db",
    "EMAIL_QUEUE_URL": "http://q/emails",
    "EMAIL_DLQ_URL": "http://q/dlq",
    "ATTACHMENTS_BUCKET": "attachments",
    "AWS_ENDPOINT_URL": "http://aws",
    "DEV_ISSUER_URL": "http://issuer",
    "ELASTICEMAIL_STUB_URL": "http://ee",
    "SENDGRID_STUB_URL": "http://sg",
}


def test_is_valid_against_the_compose_specification_schema(compose: dict[str, Any]) -> None:
    """What `docker compose config` would check first, without the compose CLI (not installed
    here): the schema check-jsonschema ships (a dev dependency)."""
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(compose)]
    assert errors == []


def test_has_the_whole_stack(services: dict[str, Any]) -> None:
    assert set(services) == LONG_RUNNING | {"migrate"}


def test_every_image_is_pinned_to_a_version(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service["image"]
        if name in BUILT:
            assert image.endswith(":local"), f"{name} runs the image built here"
            continue
        _, _, tag = image.partition(":")
        assert tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        assert re.match(r"^\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$", tag) or "@sha256:" in image, image
    assert services["localstack"]["image"] == "localstack/localstack:4.14.0"


def test_built_services_name_their_dockerfile_stage_and_package(
    repo_root: Path, services: dict[str, Any]
) -> None:
    """One Dockerfile, a final stage per image: the target picks the stage, the args the
    workspace package its shared build stage installs (see test_dockerfiles.py)."""
    for name, target in BUILT_TARGETS.items():
        build = services[name]["build"]
        assert build["context"] == ".", name
        assert build["dockerfile"] == "Dockerfile", name
        dockerfile = (repo_root / build["dockerfile"]).read_text()
        stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", dockerfile, re.MULTILINE | re.I)
        assert build["target"] == target, name
        assert target in stages, name
        args = build["args"]
        assert set(args) == {"PACKAGE", "SOURCE_DIR"}, name
        project = (repo_root / args["SOURCE_DIR"] / "pyproject.toml").read_text()
        assert tomllib.loads(project)["project"]["name"] == args["PACKAGE"] == f"mailstack-{target}"
        # Services that share an image tag build it the same way.
        assert services[name]["image"] == f"mailstack-{target}:local", name


def test_long_running_services_have_health_checks(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        healthcheck = services[name]["healthcheck"]
        assert healthcheck["test"][0] == "CMD", name
        assert not healthcheck.get("disable"), name
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["migrate"]["restart"] == "no"


def test_localstack_is_healthy_only_when_its_services_and_the_ready_hook_are(
    services: dict[str, Any],
) -> None:
    probe = services["localstack"]["healthcheck"]["test"][-1]
    assert "/_localstack/health" in probe
    assert "/_localstack/init/ready" in probe
    for service in services["localstack"]["environment"]["SERVICES"].split(","):
        assert f"'{service}'" in probe


def test_each_service_starts_when_what_it_needs_is_healthy_or_done(
    services: dict[str, Any],
) -> None:
    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert conditions("migrate") == {"postgres": "service_healthy"}
    assert conditions("gateway") == {
        "migrate": "service_completed_successfully",
        "localstack": "service_healthy",
        "redis": "service_healthy",
        "dev-issuer": "service_healthy",
    }
    assert conditions("processor") == {
        "migrate": "service_completed_successfully",
        "localstack": "service_healthy",
        "elasticemail-stub": "service_healthy",
        "sendgrid-stub": "service_healthy",
    }
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "test" in services[dependency]["healthcheck"], (name, dependency)


def test_every_port_is_bound_to_loopback(services: dict[str, Any]) -> None:
    published = [str(port) for service in services.values() for port in service.get("ports", [])]
    assert published
    assert all(port.startswith("127.0.0.1:") for port in published), published


def test_gateway_gets_the_variables_the_host_launcher_gives_it(
    services: dict[str, Any], host_stack: Stack
) -> None:
    host = host_stack.service_env("gateway", STACK_ENV)
    compose_env = services["gateway"]["environment"]
    assert set(compose_env) == set(host) | TELEMETRY
    assert compose_env["JWT_AUDIENCE"] == host["JWT_AUDIENCE"]
    assert compose_env["JWT_ALGORITHMS"] == host["JWT_ALGORITHMS"]


def test_the_gateway_trusts_the_development_issuer_it_can_reach(services: dict[str, Any]) -> None:
    gateway_env = services["gateway"]["environment"]
    issuer = services["dev-issuer"]["command"]
    assert issuer[issuer.index("--issuer") + 1] == gateway_env["JWT_ISSUER"]
    assert issuer[issuer.index("--audience") + 1] == gateway_env["JWT_AUDIENCE"]
    assert gateway_env["JWT_JWKS_URL"] == f"{gateway_env['JWT_ISSUER']}/.well-known/jwks.json"
    assert gateway_env["REDIS_URL"].startswith("redis://redis:")


def test_processor_gets_the_variables_the_host_launcher_gives_it(
    services: dict[str, Any], host_stack: Stack
) -> None:
    host = host_stack.service_env("processor", STACK_ENV)
    compose_env = services["processor"]["environment"]
    assert set(compose_env) == set(host) | TELEMETRY
    assert compose_env["MAX_ATTEMPTS"] == host["MAX_ATTEMPTS"]
    assert compose_env["ELASTICEMAIL_API_KEY"] == ELASTICEMAIL_API_KEY
    assert compose_env["SENDGRID_API_KEY"] == SENDGRID_API_KEY


def test_migrate_runs_the_shared_migration_command_on_the_same_database(
    services: dict[str, Any],
) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["python", "-m", "mailstack_core.migrate"]
    assert (
        migrate["environment"]["DATABASE_URL"]
        == (services["gateway"]["environment"]["DATABASE_URL"])
    )
    assert migrate["image"] == services["gateway"]["image"]


def test_queue_urls_are_the_ones_the_ready_hook_creates_in_the_network(
    services: dict[str, Any], resources: dict[str, Any]
) -> None:
    localstack_env = services["localstack"]["environment"]
    assert localstack_env["SQS_ENDPOINT_STRATEGY"] == "path"
    # Path strategy: http://<LOCALSTACK_HOST>/queue/<region>/<account>/<name>.
    host = localstack_env["LOCALSTACK_HOST"]
    assert host.split(":")[0] == "localstack", "the name other containers reach it by"
    region = services["gateway"]["environment"]["AWS_REGION"]
    base = f"http://{host}/queue/{region}/{LOCALSTACK_ACCOUNT}"
    queue = f"{base}/{resources['email_queue']['name']}"
    dlq = f"{base}/{resources['dead_letter_queue']['name']}"
    for name in ("gateway", "processor"):
        env = services[name]["environment"]
        assert env["EMAIL_QUEUE_URL"] == queue, name
        assert env["AWS_ENDPOINT_URL"] == f"http://{host}", name
    assert services["processor"]["environment"]["EMAIL_DLQ_URL"] == dlq


def test_both_services_use_the_attachments_bucket_the_ready_hook_creates(
    services: dict[str, Any], resources: dict[str, Any]
) -> None:
    for name in ("gateway", "processor"):
        bucket = services[name]["environment"]["ATTACHMENTS_BUCKET"]
        assert bucket == resources["attachments_bucket"]["name"], name


def test_localstack_runs_the_bootstrap_as_a_ready_hook(
    repo_root: Path, services: dict[str, Any]
) -> None:
    localstack = services["localstack"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in localstack["volumes"])
    assert all(volume.endswith(":ro") for volume in localstack["volumes"])
    hook = mounts["./localstack/bootstrap.py"]
    assert hook.startswith("/etc/localstack/init/ready.d/")
    assert hook.endswith(".py")
    bootstrap = load_bootstrap(repo_root / "localstack" / "bootstrap.py")
    assert mounts["./config/resources.json"] == str(bootstrap.CONTAINER_RESOURCES_FILE)
    assert "${LOCALSTACK_AUTH_TOKEN" in localstack["environment"]["LOCALSTACK_AUTH_TOKEN"]


def test_stubs_listen_where_the_processor_sends_with_the_keys_it_uses(
    services: dict[str, Any],
) -> None:
    processor = services["processor"]["environment"]
    for provider, key in (("elasticemail", ELASTICEMAIL_API_KEY), ("sendgrid", SENDGRID_API_KEY)):
        stub = services[f"{provider}-stub"]
        command = stub["command"]
        assert command[0] == provider
        port = command[command.index("--port") + 1]
        assert command[command.index("--api-key") + 1] == key
        assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - in the container
        base_url = processor[f"{provider.upper()}_BASE_URL"]
        assert base_url == f"http://{provider}-stub:{port}"
        assert f"127.0.0.1:{port}:{port}" in stub["ports"]


def test_service_images_run_hardened_as_on_ecs(services: dict[str, Any]) -> None:
    for name in BUILT:
        service = services[name]
        assert service["user"] == "10001:10001", name
        assert service["read_only"] is True, name
        assert service["tmpfs"] == ["/tmp"], name  # noqa: S108 - a tmpfs of its own


def test_the_urls_written_to_stack_env_are_the_published_ones(
    compose: dict[str, Any], resources: dict[str, Any]
) -> None:
    urls = compose_urls(compose, resources)
    ports = Ports()
    assert urls["GATEWAY_URL"] == f"http://127.0.0.1:{ports.gateway}"
    assert urls["ELASTICEMAIL_STUB_URL"] == f"http://127.0.0.1:{ports.elasticemail_stub}"
    assert urls["SENDGRID_STUB_URL"] == f"http://127.0.0.1:{ports.sendgrid_stub}"
    assert urls["DEV_ISSUER_URL"] == f"http://127.0.0.1:{ports.dev_issuer}"
    assert urls["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{ports.localstack}"
    assert urls["EMAIL_QUEUE_URL"].startswith("http://127.0.0.1:4566/queue/us-east-1/")
    assert urls["EMAIL_DLQ_URL"].endswith(resources["dead_letter_queue"]["name"])
    assert urls["DATABASE_URL"] == (
        "postgresql+psycopg://mailstack:mailstack@127.0.0.1:55432/mailstack"
    )


def test_extra_settings_become_a_compose_override() -> None:
    override = override_document({"processor": {"EMAIL_DLQ_URL": ""}, "gateway": {}})
    assert override == {"services": {"processor": {"environment": {"EMAIL_DLQ_URL": ""}}}}


@pytest.fixture
def fake_docker(tmp_path: Path) -> tuple[Path, Path]:
    """A `docker` that records its arguments and succeeds: the CLI boundary, without an engine."""
    calls = tmp_path / "calls"
    script = tmp_path / "docker"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    return script, calls


def test_up_runs_compose_with_the_profile_as_an_override_and_writes_stack_env(
    repo_root: Path,
    tmp_path: Path,
    fake_docker: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script, calls = fake_docker
    config = StackConfig(
        repo_root=repo_root,
        state_dir=tmp_path / "state",
        extra_env=profile_env(CONTRACT_TESTS),
        profile=CONTRACT_TESTS,
    )
    stack = ComposeStack(config, docker=str(script))
    provisioned: list[tuple[str, Path]] = []

    def ensure_dev_key(database_url: str, key_file: Path) -> str:
        provisioned.append((database_url, key_file))
        return "ms_0123456789abcdef_key"

    monkeypatch.setattr(credentials, "ensure_dev_key", ensure_dev_key)

    urls = stack.up()

    compose_file = repo_root / "docker-compose.yml"
    override = config.state_dir / "compose.override.yml"
    assert calls.read_text().split() == [
        "compose",
        "--project-directory",
        str(repo_root),
        "-f",
        str(compose_file),
        "-f",
        str(override),
        "up",
        "--detach",
        "--build",
        "--remove-orphans",
        "--wait",
        "--wait-timeout",
        "300",
    ]
    written = yaml.safe_load(override.read_text())
    assert written["services"]["processor"]["environment"]["EMAIL_DLQ_URL"] == ""
    env = read_env_file(config.env_file)
    assert env["GATEWAY_URL"] == urls["GATEWAY_URL"]
    assert env["STACK_PROFILE"] == CONTRACT_TESTS
    # The development key is made in the compose stack's database, as seen from the host.
    assert provisioned == [(urls["DATABASE_URL"], config.dev_key_file)]
    assert env["API_KEY"] == "ms_0123456789abcdef_key"
    assert env["DEV_ISSUER_URL"] == "http://127.0.0.1:8103"

    stack.down()
    assert calls.read_text().splitlines()[-1].endswith("down --remove-orphans")
    assert not config.env_file.exists()
    assert not override.exists()


def test_docker_mode_says_why_it_cannot_start_before_starting_anything(
    repo_root: Path, tmp_path: Path
) -> None:
    config = StackConfig(repo_root=repo_root, state_dir=tmp_path / "state")
    with pytest.raises(ComposeError, match="no Docker engine answers"):
        ComposeStack(config).preflight(daemon_answers=lambda: False)
    no_plugin = tmp_path / "docker"
    no_plugin.write_text('#!/bin/sh\necho "docker: unknown command: docker $1" >&2\nexit 1\n')
    no_plugin.chmod(0o755)
    with pytest.raises(ComposeError, match=r"compose plugin is not available.*unknown command"):
        ComposeStack(config, docker=str(no_plugin)).preflight(daemon_answers=lambda: True)
    assert not config.state_dir.exists()


def test_status_reads_the_health_compose_reports_for_every_long_running_service(
    repo_root: Path, tmp_path: Path
) -> None:
    rows = [
        {"Service": "gateway", "State": "running", "Health": "healthy"},
        {"Service": "processor", "State": "running", "Health": "starting"},
        {"Service": "migrate", "State": "exited", "Health": ""},
        {"Service": "redis", "State": "running", "Health": ""},
    ]
    ps = tmp_path / "docker"
    ps.write_text("#!/bin/sh\ncat <<'EOF'\n" + "\n".join(map(json.dumps, rows)) + "\nEOF\n")
    ps.chmod(0o755)
    config = StackConfig(repo_root=repo_root, state_dir=tmp_path / "state")

    status = {name: healthy for name, _, healthy in ComposeStack(config, str(ps)).status()}

    assert set(status) == LONG_RUNNING - {"jaeger"}  # opt-in: only with its compose profile
    assert status["gateway"] is True
    assert status["redis"] is True
    assert status["processor"] is False
    assert status["postgres"] is False  # not listed: not running
    assert service_health(json.dumps(rows)) == service_health("\n".join(map(json.dumps, rows)))


def test_both_services_take_the_telemetry_settings_from_the_shell(
    services: dict[str, Any],
) -> None:
    for name in ("gateway", "processor"):
        environment = services[name]["environment"]
        for variable in TELEMETRY:
            assert is_passed(variable), variable
            assert environment[variable].startswith(f"${{{variable}:-"), (name, variable)


def test_jaeger_runs_only_with_its_profile_and_takes_otlp_over_http(
    services: dict[str, Any],
) -> None:
    jaeger = services["jaeger"]
    assert jaeger["profiles"] == ["jaeger"]
    assert jaeger["image"].startswith("jaegertracing/all-in-one:")
    assert "127.0.0.1:4318:4318" in jaeger["ports"]
    assert "127.0.0.1:16686:16686" in jaeger["ports"]
    assert all("profiles" not in service for name, service in services.items() if name != "jaeger")

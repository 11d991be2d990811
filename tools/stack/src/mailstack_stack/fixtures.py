"""Pytest plugin with the fixtures that give tests a real Postgres, LocalStack and stack.

`--stack` (or `$MAILSTACK_STACK`) says where they come from: `host` (the default) runs
everything as host processes; `docker` takes Postgres and LocalStack from testcontainers and
runs the services and stubs as host processes; `auto` is docker when a Docker engine answers,
else host; `external` starts nothing and uses the stack described by the environment or
`.stack/stack.env` (`$MAILSTACK_STACK_ENV_FILE`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mailstack_stack import containers, localstack, migrations, postgres, resources, specs
from mailstack_stack.config import MACHINE_REDIS_URL, Ports, StackConfig, find_repo_root, free_port
from mailstack_stack.external import ExternalStack, MissingStackSettingError, load_external_stack
from mailstack_stack.modes import (
    MODE_ENV,
    StackMode,
    docker_daemon_answers,
    requested_mode,
    resolve_mode,
)
from mailstack_stack.resources import QueueResources
from mailstack_stack.stack import RunningStack, run_stack
from mailstack_stack.supervision import Supervisor

POSTGRES_URL_ENV = "MAILSTACK_TEST_POSTGRES_URL"
REDIS_URL_ENV = "MAILSTACK_TEST_REDIS_URL"
AWS_ENDPOINT_ENV = "MAILSTACK_TEST_AWS_ENDPOINT_URL"
STACK_ENV_FILE_ENV = "MAILSTACK_STACK_ENV_FILE"
# CI and `make test` run host unless told otherwise: a verdict should not change with whether
# a Docker engine happens to answer.
DEFAULT_MODE = StackMode.HOST

ExtraEnv = Mapping[str, Mapping[str, str]]
StackFactory = Callable[..., RunningStack]


def unique_name(kind: str) -> str:
    """A database name no other run uses."""
    return f"mailstack_test_{kind}_{uuid.uuid4().hex[:10]}"


def _unique_prefix() -> str:
    """A prefix for queue and bucket names no other run uses (lowercase, as buckets need)."""
    return f"t{uuid.uuid4().hex[:10]}-"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stack",
        choices=[mode.value for mode in StackMode],
        default=None,
        help="where Postgres, LocalStack and the stack under test come from: "
        f"auto|docker|host|external (default: ${MODE_ENV} or {DEFAULT_MODE.value})",
    )


def pytest_report_header(config: pytest.Config) -> str:
    requested = requested_mode(config.getoption("--stack"), os.environ, DEFAULT_MODE)
    return f"mailstack stack: {requested.value}"


class ExternalStackUnderTest(ExternalStack):
    """An external stack whose missing settings skip the test that needs them, saying which."""

    def require(self, key: str) -> str:
        try:
            return super().require(key)
        except MissingStackSettingError as error:
            pytest.skip(f"--stack=external: {error}")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return find_repo_root()


@pytest.fixture(scope="session")
def sendgrid_spec(repo_root: Path) -> dict[str, Any]:
    """SendGrid's OpenAPI document, vendored in specs/ (see specs/README.md)."""
    return specs.load_sendgrid_spec(repo_root)


@pytest.fixture(scope="session")
def sendgrid_mail_send_schema(sendgrid_spec: dict[str, Any]) -> Draft202012Validator:
    return specs.mail_send_validator(sendgrid_spec)


@pytest.fixture(scope="session")
def stack_mode(request: pytest.FixtureRequest) -> StackMode:
    """docker, host or external: `--stack`, else `$MAILSTACK_STACK`, else host; auto resolved."""
    requested = requested_mode(request.config.getoption("--stack"), os.environ, DEFAULT_MODE)
    mode = resolve_mode(requested, docker_daemon_answers)
    if requested is StackMode.DOCKER and not docker_daemon_answers():
        # Asked for explicitly: an error, never a quiet fall back to host processes or a skip.
        pytest.fail(
            "--stack=docker: no Docker engine answers (DOCKER_HOST or the default socket); "
            "use --stack=host, or --stack=auto to fall back to host processes",
            pytrace=False,
        )
    return mode


@pytest.fixture(scope="session")
def external_stack(repo_root: Path) -> ExternalStackUnderTest:
    """The stack `--stack=external` tests: URLs from the environment, else the stack.env file."""
    env_file = Path(os.environ.get(STACK_ENV_FILE_ENV) or repo_root / ".stack" / "stack.env")
    loaded = load_external_stack(os.environ, env_file)
    return ExternalStackUnderTest(values=loaded.values, source=loaded.source)


@pytest.fixture(scope="session")
def postgres_admin_url(
    stack_mode: StackMode, repo_root: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """An admin URL (libpq form) of a Postgres server where tests may create databases.

    `$MAILSTACK_TEST_POSTGRES_URL` if set; with --stack=docker a Postgres container; with
    --stack=external the server of the stack's DATABASE_URL; else the server on 127.0.0.1:5432;
    else a private cluster in a temporary directory, removed at the end of the session.
    """
    explicit = os.environ.get(POSTGRES_URL_ENV)
    if explicit:
        yield postgres.libpq_url(explicit)
        return
    if stack_mode is StackMode.DOCKER:
        image = containers.compose_image(repo_root / "docker-compose.yml", "postgres")
        with containers.postgres_container(image) as url:
            yield url
        return
    if stack_mode is StackMode.EXTERNAL:
        external: ExternalStack = request.getfixturevalue("external_stack")
        database_url = external.database_url
        yield postgres.with_database(postgres.libpq_url(database_url), "postgres")
        return
    local = postgres.server_url()
    if postgres.server_answers(local):
        yield local
        return
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="mailstack-test-pg-"))
    root.chmod(0o755)
    cluster = postgres.PrivateCluster(root=root / "postgres", port=free_port())
    try:
        with Supervisor(root, attached=True).running() as supervisor:
            cluster.initialize()
            url = cluster.admin_url
            supervisor.run(cluster.program(), lambda: postgres.server_answers(url), 60)
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_template(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The name of a database migrated to head, cloned by `database_url`; dropped at the end."""
    name = unique_name("template")
    postgres.create_database(postgres_admin_url, name)
    try:
        url = postgres.sqlalchemy_url(postgres.with_database(postgres_admin_url, name))
        migrations.migrate(url, tmp_path_factory.mktemp("migrations") / "migrate.log")
        yield name
    finally:
        postgres.drop_database(postgres_admin_url, name)


def clone_database(admin_url: str, template: str) -> str:
    """A new uniquely named database copied from `template`; its SQLAlchemy URL."""
    name = unique_name("db")
    postgres.create_database(admin_url, name, template=template)
    return postgres.sqlalchemy_url(postgres.with_database(admin_url, name))


@pytest.fixture
def database_url(postgres_admin_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh migrated database of this test only (`postgresql+psycopg://...`)."""
    url = clone_database(postgres_admin_url, migrated_template)
    try:
        yield url
    finally:
        postgres.drop_database(postgres_admin_url, postgres.database_name(url))


@pytest.fixture(scope="session")
def redis_url(stack_mode: StackMode) -> Iterator[str]:
    """A Redis for rate-limit counters: $MAILSTACK_TEST_REDIS_URL, a container in docker mode,
    else the machine's (127.0.0.1:6379). Tests keep apart by key, never by flushing."""
    explicit = os.environ.get(REDIS_URL_ENV)
    if explicit:
        yield explicit
    elif stack_mode is StackMode.DOCKER:
        with containers.redis_container() as url:
            yield url
    else:
        yield MACHINE_REDIS_URL


@pytest.fixture(scope="session")
def localstack_services() -> tuple[str, ...]:
    """The services the private LocalStack runs; override in a conftest.py to add some."""
    return localstack.DEFAULT_SERVICES


@pytest.fixture(scope="session")
def localstack_endpoint(
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    localstack_services: tuple[str, ...],
    stack_mode: StackMode,
    request: pytest.FixtureRequest,
) -> Iterator[str]:
    """`$MAILSTACK_TEST_AWS_ENDPOINT_URL`; else with --stack=docker a LocalStack container,
    with --stack=external the stack's AWS_ENDPOINT_URL; else a private LocalStack on a free
    port."""
    explicit = os.environ.get(AWS_ENDPOINT_ENV)
    if explicit:
        yield explicit.rstrip("/")
        return
    if stack_mode is StackMode.DOCKER:
        image = containers.compose_image(repo_root / "docker-compose.yml", "localstack")
        with containers.localstack_container(localstack_services, image) as endpoint:
            yield endpoint
        return
    if stack_mode is StackMode.EXTERNAL:
        external: ExternalStack = request.getfixturevalue("external_stack")
        yield external.aws_endpoint_url
        return
    state_dir = tmp_path_factory.mktemp("localstack")
    python = localstack.ensure_runtime(repo_root / "localstack")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    volume = state_dir / "volume"
    volume.mkdir()
    program = localstack.program(python, port, volume, localstack_services)
    with Supervisor(state_dir, attached=True).running() as supervisor:
        supervisor.run(
            program, lambda: localstack.services_ready(endpoint, localstack_services), 120
        )
        yield endpoint


@pytest.fixture
def sqs_queues(repo_root: Path, localstack_endpoint: str) -> Iterator[QueueResources]:
    """This test's own email queue, DLQ and buckets, deleted afterwards."""
    created = resources.bootstrap(repo_root, localstack_endpoint, prefix=_unique_prefix())
    try:
        yield created
    finally:
        resources.delete_resources(created, localstack_endpoint)


@pytest.fixture(scope="session")
def running_stack_env() -> ExtraEnv:
    """Extra environment per component for `running_stack`; override it in a conftest.py,
    e.g. `{"processor": {"RETRY_BACKOFF_BASE_SECONDS": "0.2"}}`."""
    return {}


def _private_stack(
    repo_root: Path,
    database: tuple[str, str] | None,
    endpoint: str | None,
    extra_env: ExtraEnv,
) -> Iterator[RunningStack]:
    """A stack on a database cloned from `database` (admin URL, template) and the LocalStack
    at `endpoint`; with `database` None on a Postgres cluster of its own, with `endpoint` None
    on a LocalStack of its own, which the test may stop and start. All is removed afterwards."""
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    state_dir = Path(tempfile.mkdtemp(prefix="mailstack-test-stack-"))
    state_dir.chmod(0o755)
    admin_url, template = database or ("", "")
    database_url = clone_database(admin_url, template) if database else None
    config = StackConfig(
        repo_root=repo_root,
        state_dir=state_dir,
        ports=Ports.free(),
        database_url=database_url,
        private_postgres=database is None,
        aws_endpoint_url=endpoint,
        name_prefix=_unique_prefix(),
        extra_env=extra_env,
        die_with_parent=True,
    )
    try:
        with run_stack(config) as stack:
            try:
                yield stack
            finally:
                if endpoint is not None:
                    queues = QueueResources(
                        stack.email_queue_url,
                        stack.email_dlq_url,
                        stack.archive_bucket,
                        stack.attachments_bucket,
                    )
                    resources.delete_resources(queues, endpoint)
    finally:
        try:
            if database_url is not None:
                postgres.drop_database(admin_url, postgres.database_name(database_url))
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


_RUNNING_STACK_ENV = pytest.StashKey[dict[str, dict[str, str]]]()


def _plain(env: ExtraEnv) -> dict[str, dict[str, str]]:
    return {component: dict(values) for component, values in env.items()}


@pytest.fixture(scope="session")
def running_stack(
    request: pytest.FixtureRequest,
    repo_root: Path,
    stack_mode: StackMode,
    running_stack_env: ExtraEnv,
) -> Iterator[RunningStack | ExternalStack]:
    """A complete private stack (own database and queues; stubs, gateway and processor on
    free ports; state in a temp dir), shared by the session. Logs: `.log_file(name)`.

    There is one per session, started with the `running_stack_env` of the first test that
    asks for it; tests needing other settings use `stack_factory`. With --stack=external it
    is the external stack (an `ExternalStack`), and nothing is started.
    """
    if stack_mode is StackMode.EXTERNAL:
        external: ExternalStackUnderTest = request.getfixturevalue("external_stack")
        if external.get("GATEWAY_URL") is None:
            pytest.fail(f"--stack=external needs GATEWAY_URL (environment or {external.source})")
        yield external
        return
    postgres_admin_url: str = request.getfixturevalue("postgres_admin_url")
    request.config.stash[_RUNNING_STACK_ENV] = _plain(running_stack_env)
    database = (postgres_admin_url, request.getfixturevalue("migrated_template"))
    endpoint = request.getfixturevalue("localstack_endpoint")
    yield from _private_stack(repo_root, database, endpoint, running_stack_env)


@pytest.fixture(autouse=True)
def _running_stack_env_is_the_one_it_was_started_with(request: pytest.FixtureRequest) -> None:
    """Pytest reuses a session fixture even where a conftest overrides what it depends on:
    fail clearly instead of running a test against a stack with other settings."""
    if "running_stack" not in request.fixturenames:
        return
    started_with = request.config.stash.get(_RUNNING_STACK_ENV, None)
    wanted = _plain(request.getfixturevalue("running_stack_env"))
    if started_with is not None and started_with != wanted:
        pytest.fail(
            f"running_stack was started with running_stack_env={started_with}, but this test's "
            f"running_stack_env is {wanted}: pytest shares one running_stack per session. Give "
            "every suite the same running_stack_env, or use stack_factory(extra_env=...)."
        )


@pytest.fixture
def stack_factory(
    request: pytest.FixtureRequest,
    repo_root: Path,
    stack_mode: StackMode,
) -> Iterator[StackFactory]:
    """`stack_factory(extra_env={...})` starts another private stack just for this test (for
    tests that kill or restart components); all are taken down after the test. With
    --stack=external its database and queues are made on the external stack's Postgres and
    LocalStack (skipped when DATABASE_URL or AWS_ENDPOINT_URL is not given).

    `own_postgres=True` runs the stack on a Postgres cluster of its own and `own_localstack=True`
    on a LocalStack of its own, for tests that stop and start them
    (`stop_component("postgres")`, `stop_component("localstack")`); never with --stack=external,
    where those tests are skipped: they would need to stop the external stack's servers.
    """
    stacks: list[Iterator[RunningStack]] = []

    def start(
        extra_env: ExtraEnv | None = None,
        *,
        own_postgres: bool = False,
        own_localstack: bool = False,
    ) -> RunningStack:
        if (own_postgres or own_localstack) and stack_mode is StackMode.EXTERNAL:
            pytest.skip(
                "--stack=external: this test stops and starts the stack's own "
                f"{'Postgres' if own_postgres else 'LocalStack'}, which it cannot do to an "
                "external stack; run it with --stack=host"
            )
        if own_postgres:
            try:
                postgres.postgres_bin_dir()
            except postgres.PostgresError as error:
                pytest.skip(f"a private Postgres cluster needs the server binaries: {error}")
        database = (
            None
            if own_postgres
            else (
                request.getfixturevalue("postgres_admin_url"),
                request.getfixturevalue("migrated_template"),
            )
        )
        endpoint = None if own_localstack else request.getfixturevalue("localstack_endpoint")
        stack = _private_stack(repo_root, database, endpoint, extra_env or {})
        stacks.append(stack)
        return next(stack)

    yield start
    errors = []
    for stack in reversed(stacks):
        try:
            next(stack, None)
        except Exception as error:  # teardown all stacks even if one fails
            errors.append(error)
    if errors:
        raise errors[0]

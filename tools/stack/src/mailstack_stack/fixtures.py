"""Pytest plugin with the fixtures that give tests a real Postgres, LocalStack and stack."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from mailstack_stack import localstack, migrations, postgres, resources
from mailstack_stack.config import Ports, StackConfig, find_repo_root, free_port
from mailstack_stack.processes import ProcessDirs, start_process, stop_process, wait_healthy
from mailstack_stack.resources import QueueResources
from mailstack_stack.stack import RunningStack, run_stack

POSTGRES_URL_ENV = "MAILSTACK_TEST_POSTGRES_URL"
AWS_ENDPOINT_ENV = "MAILSTACK_TEST_AWS_ENDPOINT_URL"

ExtraEnv = Mapping[str, Mapping[str, str]]
StackFactory = Callable[..., RunningStack]


def unique_name(kind: str) -> str:
    """A database name no other run uses."""
    return f"mailstack_test_{kind}_{uuid.uuid4().hex[:10]}"


def _unique_prefix() -> str:
    """A prefix for queue and bucket names no other run uses (lowercase, as buckets need)."""
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return find_repo_root()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """An admin URL (libpq form) of a Postgres server where tests may create databases.

    `$MAILSTACK_TEST_POSTGRES_URL` if set; else the server on 127.0.0.1:5432; else a private
    cluster in a temporary directory, removed at the end of the session.
    """
    explicit = os.environ.get(POSTGRES_URL_ENV)
    if explicit:
        yield postgres.libpq_url(explicit)
        return
    local = postgres.server_url()
    if postgres.server_answers(local):
        yield local
        return
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="mailstack-test-pg-"))
    root.chmod(0o755)
    cluster = postgres.PrivateCluster(root=root, port=free_port(), log_file=root / "server.log")
    try:
        cluster.start()
        yield cluster.admin_url
    finally:
        cluster.stop()
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
def localstack_services() -> tuple[str, ...]:
    """The services the private LocalStack runs; override in a conftest.py to add some."""
    return localstack.DEFAULT_SERVICES


@pytest.fixture(scope="session")
def localstack_endpoint(
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    localstack_services: tuple[str, ...],
) -> Iterator[str]:
    """`$MAILSTACK_TEST_AWS_ENDPOINT_URL`, else a private LocalStack on a free port."""
    explicit = os.environ.get(AWS_ENDPOINT_ENV)
    if explicit:
        yield explicit.rstrip("/")
        return
    state_dir = tmp_path_factory.mktemp("localstack")
    dirs = ProcessDirs(state_dir)
    python = localstack.ensure_runtime(repo_root / "localstack")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    volume = state_dir / "volume"
    volume.mkdir()
    spec = localstack.process_spec(python, port, volume, localstack_services, die_with_parent=True)
    record = start_process(spec, dirs)
    try:
        wait_healthy(
            "localstack",
            record,
            lambda: localstack.services_ready(endpoint, localstack_services),
            timeout=120,
            dirs=dirs,
        )
        yield endpoint
    finally:
        stop_process(record)


@pytest.fixture
def sqs_queues(repo_root: Path, localstack_endpoint: str) -> Iterator[QueueResources]:
    """This test's own email queue, DLQ and archive bucket, deleted afterwards."""
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
    state_dir: Path,
    admin_url: str,
    template: str,
    endpoint: str,
    extra_env: ExtraEnv,
) -> Iterator[RunningStack]:
    database = clone_database(admin_url, template)
    config = StackConfig(
        repo_root=repo_root,
        state_dir=state_dir,
        ports=Ports.free(),
        database_url=database,
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
                queues = QueueResources(
                    stack.email_queue_url, stack.email_dlq_url, stack.archive_bucket
                )
                resources.delete_resources(queues, endpoint)
    finally:
        postgres.drop_database(admin_url, postgres.database_name(database))


_RUNNING_STACK_ENV = pytest.StashKey[dict[str, dict[str, str]]]()


def _plain(env: ExtraEnv) -> dict[str, dict[str, str]]:
    return {component: dict(values) for component, values in env.items()}


@pytest.fixture(scope="session")
def running_stack(
    request: pytest.FixtureRequest,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_admin_url: str,
    migrated_template: str,
    localstack_endpoint: str,
    running_stack_env: ExtraEnv,
) -> Iterator[RunningStack]:
    """A complete private stack (own database and queues; stubs, gateway and processor on
    free ports; state in a temp dir), shared by the session. Logs: `.log_file(name)`.

    There is one per session, started with the `running_stack_env` of the first test that
    asks for it; tests needing other settings use `stack_factory`.
    """
    request.config.stash[_RUNNING_STACK_ENV] = _plain(running_stack_env)
    yield from _private_stack(
        repo_root,
        tmp_path_factory.mktemp("stack"),
        postgres_admin_url,
        migrated_template,
        localstack_endpoint,
        running_stack_env,
    )


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
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_admin_url: str,
    migrated_template: str,
    localstack_endpoint: str,
) -> Iterator[StackFactory]:
    """`stack_factory(extra_env={...})` starts another private stack just for this test (for
    tests that kill or restart components); all are taken down after the test."""
    stacks: list[Iterator[RunningStack]] = []

    def start(extra_env: ExtraEnv | None = None) -> RunningStack:
        stack = _private_stack(
            repo_root,
            tmp_path_factory.mktemp("stack"),
            postgres_admin_url,
            migrated_template,
            localstack_endpoint,
            extra_env or {},
        )
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

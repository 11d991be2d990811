"""Pytest plugin with the fixtures that give tests a real Postgres, LocalStack and stack.

`--stack` (or `$MAILSTACK_STACK`) says where they come from: `host` (the default) runs
everything as host processes; `docker` takes Postgres, LocalStack and Redis from testcontainers
and runs the services and stubs as host processes; `auto` is docker when a Docker engine
answers, else host; `external` starts nothing and uses the stack described by the environment
or `.stack/stack.env` (`$MAILSTACK_STACK_ENV_FILE`). `$MAILSTACK_TEST_POSTGRES_URL`,
`$MAILSTACK_TEST_AWS_ENDPOINT_URL` and `$MAILSTACK_TEST_REDIS_URL` name servers to use instead.
"""

import contextlib
import gc
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from mailstack_stack import postgres, resources
from mailstack_stack.config import (
    DEFAULT_SERVICES,
    MACHINE_POSTGRES_URL,
    MACHINE_REDIS_URL,
    MODE_ENV,
    Ports,
    StackConfig,
    StackMode,
    docker_daemon_answers,
    find_repo_root,
    parse_mode,
    resolve_mode,
)
from mailstack_stack.external import MissingStackSettingError
from mailstack_stack.resources import QueueResources
from mailstack_stack.stack import LOCALSTACK, POSTGRES, RunningStack, Stack
from mailstack_testing import containers, specs
from mailstack_testing.aws import delete_resources
from mailstack_testing.databases import create_database, drop_database
from mailstack_testing.external import ExternalStack, load_external_stack

ExtraEnv = Mapping[str, Mapping[str, str]]
StackFactory = Callable[..., RunningStack]
_RUNNING_STACK_ENV = pytest.StashKey[dict[str, dict[str, str]]]()


def unique_name(kind: str) -> str:
    """A database name no other run uses."""
    return f"mailstack_test_{kind}_{uuid.uuid4().hex[:10]}"


def unique_prefix() -> str:
    """A prefix for queue and bucket names no other run uses (lowercase, as buckets need)."""
    return f"t{uuid.uuid4().hex[:10]}-"


# Fixtures that start a private stack for one test or for one test module's tests.
_OWN_STACK_FIXTURES = frozenset({"stack_factory", "module_stack"})


def _start_order(item: pytest.Item) -> int:
    """Tests that start stacks of their own first, then the black-box files, then the rest."""
    if _OWN_STACK_FIXTURES & set(getattr(item, "fixturenames", ())):
        return 0
    return 1 if item.get_closest_marker("e2e") else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One run holds the whole suite (`make test`: xdist's loadfile, no reordering by size).

    A test file runs on one worker, one test after another (a black-box file against that
    worker's stack, a module's shared stack started once). The longest work starts first, so
    no long test or file ends the run alone while the other worker is idle; unit tests fill
    the gaps. (Not loadgroup: with pytest 9.2 it silently stops grouping, pytest-xdist#1386.)"""
    items.sort(key=_start_order)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--stack",
        choices=[mode.value for mode in StackMode],
        help="where Postgres, LocalStack and the stack under test come from: "
        f"auto|docker|host|external (default: ${MODE_ENV} or host)",
    )


def requested_mode(config: pytest.Config) -> StackMode:
    # The default is host: a verdict should not change with whether a Docker engine answers.
    return parse_mode(config.getoption("--stack") or os.environ.get(MODE_ENV) or "host")


def pytest_report_header(config: pytest.Config) -> str:
    return f"mailstack stack: {requested_mode(config)}"


class ExternalStackUnderTest(ExternalStack):
    """An external stack whose missing settings skip the test that needs them, saying which."""

    def require(self, key: str) -> str:
        try:
            return super().require(key)
        except MissingStackSettingError as error:
            pytest.skip(f"--stack=external: {error}")


@contextlib.contextmanager
def host_stack(repo_root: Path, **settings: Any) -> Iterator[Stack]:
    """A host stack on free ports, its state in a temporary directory; down and removed after."""
    # Not under pytest's tmp dir: that one is private to root, and Postgres runs as postgres.
    state_dir = Path(tempfile.mkdtemp(prefix="mailstack-test-"))
    state_dir.chmod(0o755)
    stack = Stack(StackConfig(repo_root, state_dir, Ports.free(), die_with_parent=True, **settings))
    try:
        yield stack
    finally:
        try:
            stack.down()
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def unfrozen_heap() -> Iterator[None]:
    """No frozen objects before the test (mailstack_core.heap freezes them), none after it:
    a test that starts a service in-process would otherwise freeze the whole test process."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
    requested = requested_mode(request.config)
    if requested is StackMode.DOCKER and not docker_daemon_answers():
        # Asked for explicitly: an error, never a quiet fall back to host processes or a skip.
        pytest.fail(
            "--stack=docker: no Docker engine answers (DOCKER_HOST or the default socket); "
            "use --stack=host, or --stack=auto to fall back to host processes",
            pytrace=False,
        )
    return resolve_mode(requested)


@pytest.fixture(scope="session")
def external_stack(repo_root: Path) -> ExternalStackUnderTest:
    """The stack `--stack=external` tests: settings from the environment, else stack.env."""
    env_file = Path(os.environ.get("MAILSTACK_STACK_ENV_FILE") or repo_root / ".stack/stack.env")
    loaded = load_external_stack(os.environ, env_file)
    return ExternalStackUnderTest(values=loaded.values, source=loaded.source)


@pytest.fixture(scope="session")
def postgres_admin_url(
    stack_mode: StackMode, repo_root: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """An admin URL (libpq form) of a Postgres server where tests may create databases: with
    --stack=docker a container's, with --stack=external the server of the stack's DATABASE_URL,
    else the machine's (127.0.0.1:5432), else a private cluster's."""
    if explicit := os.environ.get("MAILSTACK_TEST_POSTGRES_URL"):
        yield postgres.libpq_url(explicit)
    elif stack_mode is StackMode.DOCKER:
        with containers.postgres_container(containers.compose_image(repo_root, "postgres")) as url:
            yield url
    elif stack_mode is StackMode.EXTERNAL:
        database_url = request.getfixturevalue("external_stack").database_url
        yield postgres.with_database(postgres.libpq_url(database_url), "postgres")
    elif postgres.server_answers(MACHINE_POSTGRES_URL):
        yield MACHINE_POSTGRES_URL
    else:
        with host_stack(repo_root) as stack:
            stack.start(POSTGRES)
            yield stack.cluster_url


@pytest.fixture(scope="session")
def migrated_template(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The name of a database migrated to head, cloned by `database_url`; dropped at the end."""
    name = unique_name("template")
    url = postgres.ensure_database(postgres_admin_url, name)
    try:
        with postgres.migrating(url, tmp_path_factory.mktemp("migrations") / "migrate.log"):
            pass
        yield name
    finally:
        drop_database(postgres_admin_url, name)


@contextlib.contextmanager
def cloned_database(admin_url: str, template: str) -> Iterator[str]:
    """A new database copied from `template` (its SQLAlchemy URL), dropped afterwards."""
    name = unique_name("db")
    create_database(admin_url, name, template)
    try:
        yield postgres.sqlalchemy_url(postgres.with_database(admin_url, name))
    finally:
        drop_database(admin_url, name)


@pytest.fixture
def database_url(postgres_admin_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh migrated database of this test only (`postgresql+psycopg://...`)."""
    with cloned_database(postgres_admin_url, migrated_template) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(stack_mode: StackMode, repo_root: Path) -> Iterator[str]:
    """A Redis for rate-limit counters: a container with --stack=docker, else the machine's
    (127.0.0.1:6379). Tests keep apart by key, never by flushing."""
    if explicit := os.environ.get("MAILSTACK_TEST_REDIS_URL"):
        yield explicit
    elif stack_mode is StackMode.DOCKER:
        with containers.redis_container(containers.compose_image(repo_root, "redis")) as url:
            yield url
    else:
        yield MACHINE_REDIS_URL


@pytest.fixture(scope="session")
def localstack_services() -> tuple[str, ...]:
    """The services the private LocalStack runs; override in a conftest.py to add some."""
    return DEFAULT_SERVICES


@pytest.fixture(scope="session")
def localstack_endpoint(
    repo_root: Path,
    localstack_services: tuple[str, ...],
    stack_mode: StackMode,
    request: pytest.FixtureRequest,
) -> Iterator[str]:
    """A LocalStack: with --stack=docker a container, with --stack=external the stack's
    AWS_ENDPOINT_URL, else a private one on a free port."""
    if explicit := os.environ.get("MAILSTACK_TEST_AWS_ENDPOINT_URL"):
        yield explicit.rstrip("/")
    elif stack_mode is StackMode.DOCKER:
        image = containers.compose_image(repo_root, "localstack")
        with containers.localstack_container(localstack_services, image) as endpoint:
            yield endpoint
    elif stack_mode is StackMode.EXTERNAL:
        yield request.getfixturevalue("external_stack").aws_endpoint_url
    else:
        with host_stack(repo_root, localstack_services=localstack_services) as stack:
            stack.start(LOCALSTACK)
            yield stack.config.endpoint_url


@pytest.fixture
def sqs_queues(repo_root: Path, localstack_endpoint: str) -> Iterator[QueueResources]:
    """This test's own email queue, DLQ and buckets, deleted afterwards."""
    created = resources.bootstrap(repo_root, localstack_endpoint, prefix=unique_prefix())
    try:
        yield created
    finally:
        delete_resources(created, localstack_endpoint)


@pytest.fixture(scope="session")
def running_stack_env() -> ExtraEnv:
    """Extra environment per component for `running_stack`; override it in a conftest.py,
    e.g. `{"processor": {"RETRY_BACKOFF_BASE_SECONDS": "0.2"}}`."""
    return {}


@contextlib.contextmanager
def private_stack(
    request: pytest.FixtureRequest,
    extra_env: ExtraEnv,
    own_postgres: bool = False,
    own_localstack: bool = False,
) -> Iterator[RunningStack]:
    """A stack on a database cloned from the session's template and on the session's
    LocalStack, or on a Postgres cluster / a LocalStack of its own, which the test may stop and
    start; all is removed afterwards."""
    with contextlib.ExitStack() as cleanup:
        settings: dict[str, Any] = {"private_postgres": own_postgres, "extra_env": extra_env}
        if not own_postgres:
            admin_url = request.getfixturevalue("postgres_admin_url")
            clone = cloned_database(admin_url, request.getfixturevalue("migrated_template"))
            settings["database_url"] = cleanup.enter_context(clone)
        if not own_localstack:
            settings["aws_endpoint_url"] = request.getfixturevalue("localstack_endpoint")
        repo_root = request.getfixturevalue("repo_root")
        stack = cleanup.enter_context(
            host_stack(repo_root, name_prefix=unique_prefix(), **settings)
        )
        running = stack.up()
        if not own_localstack:
            cleanup.callback(delete_resources, stack.queues, stack.config.endpoint_url)
        yield running


@pytest.fixture(scope="session")
def running_stack(
    request: pytest.FixtureRequest, stack_mode: StackMode, running_stack_env: ExtraEnv
) -> Iterator[RunningStack | ExternalStack]:
    """A complete private stack (own database and queues; stubs, gateway and processor on
    free ports; state in a temp dir; logs: `.log_file(name)`), shared by the session and
    started with the `running_stack_env` of the first test that asks for it (tests needing
    other settings use `stack_factory`). With --stack=external the external stack."""
    if stack_mode is StackMode.EXTERNAL:
        external: ExternalStackUnderTest = request.getfixturevalue("external_stack")
        if external.get("GATEWAY_URL") is None:
            pytest.fail(f"--stack=external needs GATEWAY_URL (environment or {external.source})")
        yield external
        return
    request.config.stash[_RUNNING_STACK_ENV] = {k: dict(v) for k, v in running_stack_env.items()}
    with private_stack(request, running_stack_env) as stack:
        yield stack


@pytest.fixture(scope="module")
def module_stack_env() -> ExtraEnv:
    """Extra environment per component for `module_stack`; a test module overrides it."""
    return {}


@pytest.fixture(scope="module")
def module_stack(
    request: pytest.FixtureRequest, module_stack_env: ExtraEnv
) -> Iterator[RunningStack]:
    """A private stack shared by one module's tests (its settings: `module_stack_env`), for
    tests that each leave it running as they found it; taken down after the module."""
    with private_stack(request, module_stack_env) as running:
        yield running


@pytest.fixture(autouse=True)
def _running_stack_env_is_the_one_it_was_started_with(request: pytest.FixtureRequest) -> None:
    """Pytest reuses a session fixture even where a conftest overrides what it depends on:
    fail clearly instead of running a test against a stack with other settings."""
    started_with = request.config.stash.get(_RUNNING_STACK_ENV, None)
    if "running_stack" not in request.fixturenames or started_with is None:
        return
    wanted = {k: dict(v) for k, v in request.getfixturevalue("running_stack_env").items()}
    if started_with != wanted:
        pytest.fail(
            f"running_stack was started with running_stack_env={started_with}, but this test's "
            f"running_stack_env is {wanted}: pytest shares one running_stack per session. Give "
            "every suite the same running_stack_env, or use stack_factory(extra_env=...)."
        )


@pytest.fixture
def stack_factory(request: pytest.FixtureRequest, stack_mode: StackMode) -> Iterator[StackFactory]:
    """`stack_factory(extra_env={...})` starts another private stack just for this test, taken
    down after it; with --stack=external on the external stack's Postgres and LocalStack.
    `own_postgres=True` / `own_localstack=True` give it a Postgres cluster / LocalStack of its
    own, which the test may stop and start (`stop_component("postgres")`); not with
    --stack=external, whose servers they would have to stop."""
    with contextlib.ExitStack() as stacks:

        def start(
            extra_env: ExtraEnv | None = None,
            *,
            own_postgres: bool = False,
            own_localstack: bool = False,
        ) -> RunningStack:
            if (own_postgres or own_localstack) and stack_mode is StackMode.EXTERNAL:
                server = "Postgres" if own_postgres else "LocalStack"
                pytest.skip(
                    f"--stack=external: this test stops and starts the stack's own {server}"
                )
            return stacks.enter_context(
                private_stack(request, extra_env or {}, own_postgres, own_localstack)
            )

        yield start

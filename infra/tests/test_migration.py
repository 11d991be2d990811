"""Migrations as a step of `pulumi up`: the task definition, the runner and its invocation,
and the task's own command run against a real Postgres the way ECS would run it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from alembic.script import ScriptDirectory
from botocore.stub import Stubber
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from mailstack_core.migrate import alembic_config
from mailstack_core.schema import current_revisions
from mailstack_infra.migration import APP_URL_VARIABLE, MASTER_URL_VARIABLE, MIGRATE_COMMAND
from mailstack_infra.migration_runner import MigrationFailedError, run_migration
from mailstack_infra.mocks import IMAGE_DIGEST, StackRecord
from mailstack_stack import postgres
from mailstack_testing.databases import drop_database

TASK = "aws:ecs/taskDefinition:TaskDefinition"
FUNCTION = "aws:lambda/function:Function"
INVOCATION = "aws:lambda/invocation:Invocation"
SECRET = "aws:secretsmanager/secret:Secret"
CLUSTER_ARN = "arn:aws:ecs:eu-west-1:123456789012:cluster/mailstack-dev"
TASK_ARN = "arn:aws:ecs:eu-west-1:123456789012:task/mailstack-dev/0123456789abcdef"
EVENT = {
    "cluster": CLUSTER_ARN,
    "taskDefinition": "arn:aws:ecs:eu-west-1:123456789012:task-definition/mailstack-dev-migrate:3",
    "subnets": ["subnet-1", "subnet-2"],
    "securityGroups": ["sg-1"],
}


def migrate_container(stack: StackRecord) -> dict[str, Any]:
    (definition,) = stack.one(TASK, "migrate-task").json("containerDefinitions")
    return dict(definition)


def test_the_task_runs_the_shared_librarys_migration_from_the_gateway_image(
    dev: StackRecord,
) -> None:
    container = migrate_container(dev)
    repository = dev.one("aws:ecr/repository:Repository", "images-gateway")
    assert container["image"] == f"{repository.outputs['repositoryUrl']}@{IMAGE_DIGEST}"
    assert container["command"] == ["python", "-m", "mailstack_core.migrate"]
    assert container["readonlyRootFilesystem"] is True
    assert container["user"] == "10001:10001"
    assert "healthCheck" not in container
    task = dev.one(TASK, "migrate-task").inputs
    assert task["runtimePlatform"]["cpuArchitecture"] == "X86_64"


def test_the_task_gets_the_master_url_and_the_app_users_url_as_secrets(dev: StackRecord) -> None:
    secrets = {s["name"]: s["valueFrom"] for s in migrate_container(dev)["secrets"]}
    assert secrets == {
        "DATABASE_URL": dev.one(SECRET, "database-database-admin-url").outputs["arn"],
        "APP_DATABASE_URL": dev.one(SECRET, "secrets-database-url").outputs["arn"],
    }
    environment = {e["name"]: e["value"] for e in migrate_container(dev)["environment"]}
    assert environment == {"PGSSLROOTCERT": "/etc/ssl/certs/mailstack-database-ca.pem"}


def test_pulumi_up_runs_the_task_again_whenever_its_definition_changes(dev: StackRecord) -> None:
    invocation = dev.one(INVOCATION, "migrate-run").inputs
    task = dev.one(TASK, "migrate-task").outputs["arn"]
    assert invocation["functionName"] == dev.one(FUNCTION, "migrate-runner").outputs["name"]
    assert invocation["triggers"] == {"taskDefinition": task}
    event = json.loads(invocation["input"])
    assert event["taskDefinition"] == task
    assert event["cluster"] == dev.one("aws:ecs/cluster:Cluster", "ecs-cluster").outputs["arn"]
    app = sorted(
        s.id for s in dev.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["tier"] == "app"
    )
    assert sorted(event["subnets"]) == app
    assert event["securityGroups"] == [
        dev.one("aws:ec2/securityGroup:SecurityGroup", "firewall-migrate").id
    ]


def test_the_runner_may_run_only_this_task_and_pass_only_its_role(dev: StackRecord) -> None:
    statements = dev.one("aws:iam/rolePolicy:RolePolicy", "migrate-runner").json("policy")[
        "Statement"
    ]
    by_action = {action: s for s in statements for action in s["Action"]}
    assert by_action["ecs:RunTask"]["Resource"] == [dev.one(TASK, "migrate-task").outputs["arn"]]
    assert by_action["ecs:RunTask"]["Condition"] == {
        "ArnEquals": {
            "ecs:cluster": dev.one("aws:ecs/cluster:Cluster", "ecs-cluster").outputs["arn"]
        }
    }
    execution = dev.one("aws:iam/role:Role", "migrate-execution").outputs["arn"]
    assert by_action["iam:PassRole"]["Resource"] == [execution]
    assert by_action["iam:PassRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    runner = dev.one(FUNCTION, "migrate-runner").inputs
    assert runner["handler"] == "migration_runner.handler"
    assert runner["timeout"] == 900
    assert "vpcConfig" not in runner


# The runner itself, against botocore's own request validation (Stubber).


@pytest.fixture
def ecs() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "ecs", region_name="eu-west-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    with Stubber(client) as stubber:
        yield client, stubber


def stopped(
    exit_code: int | None, reason: str = "Essential container in task exited"
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "migrate", "lastStatus": "STOPPED"}
    if exit_code is not None:
        container["exitCode"] = exit_code
    return {
        "tasks": [
            {
                "taskArn": TASK_ARN,
                "lastStatus": "STOPPED",
                "stoppedReason": reason,
                "containers": [container],
            }
        ]
    }


def expect_run(stubber: Stubber, exit_code: int | None, reason: str = "done") -> None:
    stubber.add_response(
        "run_task",
        {"tasks": [{"taskArn": TASK_ARN, "lastStatus": "PROVISIONING"}], "failures": []},
        {
            "cluster": CLUSTER_ARN,
            "taskDefinition": EVENT["taskDefinition"],
            "launchType": "FARGATE",
            "count": 1,
            "startedBy": "pulumi-migrate",
            "networkConfiguration": {
                "awsvpcConfiguration": {
                    "subnets": EVENT["subnets"],
                    "securityGroups": EVENT["securityGroups"],
                    "assignPublicIp": "DISABLED",
                }
            },
        },
    )
    # The waiter polls until the task stopped, then the runner reads its exit code.
    stubber.add_response("describe_tasks", stopped(exit_code, reason))
    stubber.add_response("describe_tasks", stopped(exit_code, reason))


def test_the_runner_succeeds_when_the_task_exits_zero(ecs: tuple[Any, Stubber]) -> None:
    client, stubber = ecs
    expect_run(stubber, 0)
    assert run_migration(client, EVENT, poll_seconds=0) == {"taskArn": TASK_ARN, "exitCode": 0}
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("exit_code", "reason", "message"),
    [
        (1, "Essential container in task exited", "exit code 1"),
        (None, "CannotPullContainerError: pull access denied", "CannotPullContainerError"),
    ],
)
def test_the_runner_fails_when_the_task_fails(
    ecs: tuple[Any, Stubber], exit_code: int | None, reason: str, message: str
) -> None:
    client, stubber = ecs
    expect_run(stubber, exit_code, reason)
    with pytest.raises(MigrationFailedError, match=message):
        run_migration(client, EVENT, poll_seconds=0)


def test_the_runner_fails_when_the_task_does_not_start(ecs: tuple[Any, Stubber]) -> None:
    client, stubber = ecs
    stubber.add_response(
        "run_task", {"tasks": [], "failures": [{"arn": CLUSTER_ARN, "reason": "MISSING"}]}
    )
    with pytest.raises(MigrationFailedError, match=r"did not start.*MISSING"):
        run_migration(client, EVENT, poll_seconds=0)


# The task's command, with the task's environment, against a real Postgres.


@pytest.fixture
def empty_database(postgres_admin_url: str) -> Iterator[str]:
    name = f"mailstack_migrate_{uuid.uuid4().hex[:10]}"
    url = postgres.ensure_database(postgres_admin_url, name)
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, name)


def app_url_of(admin_url: str, user: str) -> str:
    """The URL of a user to create, on the server and database of `admin_url`."""
    host = admin_url.replace("postgresql+psycopg://", "", 1).split("@", 1)[1]
    return f"postgresql+psycopg://{user}:app-password@{host}"


def run_task_command(container: dict[str, Any], environment: dict[str, str]) -> None:
    """The container's command with only the container's environment, run twice: every
    deployment runs it again, so it must be idempotent."""
    command = container["command"]
    assert command == MIGRATE_COMMAND
    assert command[0] == "python"  # the image's interpreter; here, this one
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, *command[1:]],
            env={**environment, "PATH": ""},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr


def assert_at_head_and_app_user_cannot_run_ddl(app_url: str) -> None:
    app = create_engine(app_url)
    try:
        with app.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM emails")).scalar() == 0
            assert current_revisions(connection) == (
                ScriptDirectory.from_config(alembic_config(app_url)).get_current_head(),
            )
            privileges = connection.execute(
                text("SELECT has_database_privilege(current_user, current_database(), 'CREATE')")
            ).scalar()
            assert privileges is False
        with app.connect() as connection, pytest.raises(ProgrammingError, match="permission"):
            connection.execute(text("CREATE TABLE not_allowed (id integer)"))
        with app.connect() as connection, pytest.raises(ProgrammingError, match="owner"):
            connection.execute(text("ALTER TABLE emails ADD COLUMN not_allowed integer"))
    finally:
        app.dispose()


def drop_role(admin_url: str, user: str) -> None:
    engine = create_engine(admin_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP OWNED BY "{user}"')
            connection.exec_driver_sql(f'DROP ROLE "{user}"')
    finally:
        engine.dispose()


@pytest.mark.integration
def test_the_task_command_migrates_an_empty_database_and_creates_the_app_user(
    dev: StackRecord, empty_database: str
) -> None:
    """What ECS does: the container's variables, each secret resolved by its ARN (here from
    the values the program would store in them), then the container's command."""
    user = f"mailstack_app_{uuid.uuid4().hex[:8]}"
    admin_url = empty_database
    app_url = app_url_of(admin_url, user)
    stored = {
        dev.one(SECRET, "database-database-admin-url").outputs["arn"]: admin_url,
        dev.one(SECRET, "secrets-database-url").outputs["arn"]: app_url,
    }
    container = migrate_container(dev)
    environment = {e["name"]: e["value"] for e in container["environment"]}
    environment.update({s["name"]: stored[s["valueFrom"]] for s in container["secrets"]})
    try:
        run_task_command(container, environment)
        assert_at_head_and_app_user_cannot_run_ddl(app_url)
    finally:
        drop_role(admin_url, user)


# The same through LocalStack's Secrets Manager: the secrets under the names the program gives
# them, resolved by the task definition's ARNs the way the ECS agent does before it starts the
# container.


@pytest.fixture
def secretsmanager(localstack_endpoint: str, dev: StackRecord) -> Any:
    """A Secrets Manager client of an account of this test only (LocalStack takes a 12-digit
    access key id as the account), in the region of the task's secrets."""
    account = f"{uuid.uuid4().int % 10**12:012d}"
    (region,) = {s["valueFrom"].split(":")[3] for s in migrate_container(dev)["secrets"]}
    return boto3.client(
        "secretsmanager",
        endpoint_url=localstack_endpoint,
        region_name=region,
        aws_access_key_id=account,
        aws_secret_access_key="test",
    )


def store_task_secrets(
    client: Any, dev: StackRecord, container: dict[str, Any], values: dict[str, str]
) -> dict[str, str]:
    """Create each of the task's secrets under the name the program gives it, with the value
    of its variable; returns the deployed ARN for each ARN the task definition names."""
    deployed = {}
    for secret in container["secrets"]:
        (declared,) = [s for s in dev.of_type(SECRET) if s.outputs["arn"] == secret["valueFrom"]]
        created = client.create_secret(
            Name=declared.inputs["name"], SecretString=values[secret["name"]]
        )
        deployed[secret["valueFrom"]] = created["ARN"]
    return deployed


def resolve_as_ecs(
    client: Any, container: dict[str, Any], deployed: dict[str, str]
) -> dict[str, str]:
    """The container's environment: its variables, then each secret's GetSecretValue."""
    environment = {e["name"]: e["value"] for e in container["environment"]}
    for secret in container["secrets"]:
        value = client.get_secret_value(SecretId=deployed[secret["valueFrom"]])
        environment[secret["name"]] = value["SecretString"]
    return environment


@pytest.mark.integration
def test_the_task_migrates_with_its_secrets_from_localstack_secrets_manager(
    dev: StackRecord, empty_database: str, secretsmanager: Any
) -> None:
    user = f"mailstack_app_{uuid.uuid4().hex[:8]}"
    admin_url = empty_database
    app_url = app_url_of(admin_url, user)
    container = migrate_container(dev)
    deployed = store_task_secrets(
        secretsmanager,
        dev,
        container,
        {MASTER_URL_VARIABLE: admin_url, APP_URL_VARIABLE: app_url},
    )
    assert set(deployed) == {s["valueFrom"] for s in container["secrets"]}
    environment = resolve_as_ecs(secretsmanager, container, deployed)
    assert environment[APP_URL_VARIABLE] == app_url
    try:
        run_task_command(container, environment)
        assert_at_head_and_app_user_cannot_run_ddl(app_url)
    finally:
        drop_role(admin_url, user)

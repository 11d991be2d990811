"""The whole stack: stack.env, re-running up, crashes restarted by supervisord, down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailstack_stack.config import Ports, StackConfig, read_env_file, write_env_file
from mailstack_stack.passthrough import telemetry_env
from mailstack_stack.stack import (
    COMPONENTS,
    ELASTICEMAIL_STUB,
    PROCESSOR,
    PortTakenError,
    RunningStack,
    Stack,
)
from mailstack_testing.fixtures import ExtraEnv, StackFactory
from mailstack_testing.waiting import eventually

EMAIL = {
    "from": {"email": "app@example.com"},
    "to": [{"email": "user@example.com"}],
    "subject": "Hello",
    "text": "Hi there",
}
# Not the session's running_stack: the contract suite starts that one with its own env.
STACK_ENV = {"processor": {"RECEIVE_WAIT_SECONDS": "1"}}


@pytest.fixture(scope="module")
def module_stack_env() -> ExtraEnv:
    """For the tests that leave the stack up (each passes in either order)."""
    return STACK_ENV


def test_env_file_holds_key_value_lines(tmp_path: Path) -> None:
    path = tmp_path / "state" / "stack.env"
    values = {"GATEWAY_URL": "http://127.0.0.1:8000", "DATABASE_URL": "postgresql+psycopg://a@b/c"}
    write_env_file(path, values)
    assert path.read_text() == (
        "GATEWAY_URL=http://127.0.0.1:8000\nDATABASE_URL=postgresql+psycopg://a@b/c\n"
    )
    assert read_env_file(path) == values


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_make_up_passes_the_telemetry_settings_of_its_environment_to_the_services() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_SERVICE_NAME": "one-name-for-both",
        "SENTRY_DSN": "http://key@127.0.0.1:9000/1",
        "DD_LOGS_INJECTION": "true",
        "PATH": "/usr/bin",
    }

    passed = telemetry_env(environ)

    expected = {key: environ[key] for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "SENTRY_DSN")}
    expected["DD_LOGS_INJECTION"] = "true"
    assert passed == {"gateway": expected, "processor": expected}
    assert telemetry_env({"PATH": "/usr/bin"}) == {}


def test_a_port_held_by_another_process_is_an_error_not_a_healthy_stub(
    repo_root: Path, tmp_path: Path, occupied_port: int
) -> None:
    config = StackConfig(
        repo_root=repo_root,
        state_dir=tmp_path,
        ports=Ports(elasticemail_stub=occupied_port),
        die_with_parent=True,
    )
    stack = Stack(config)
    try:
        with pytest.raises(PortTakenError, match=str(occupied_port)):
            stack.start(ELASTICEMAIL_STUB)
        assert stack.pid(ELASTICEMAIL_STUB) is None
    finally:
        stack.down()
    assert not (tmp_path / "pids" / "elasticemail-stub.pid").exists()


def test_a_stale_pid_file_is_neither_running_nor_stopped(repo_root: Path, tmp_path: Path) -> None:
    stale = tmp_path / "pids" / f"{PROCESSOR}.pid"
    stale.parent.mkdir()
    stale.write_text(f"{os.getpid()}\n")  # a live process, but not one the stack started
    stack = Stack(StackConfig(repo_root=repo_root, state_dir=tmp_path, die_with_parent=True))

    assert (PROCESSOR, None, False) in stack.status()
    assert stack.down() == []
    assert not stale.exists()


@pytest.mark.e2e
def test_a_private_stack_delivers_an_email_through_the_stub(module_stack: RunningStack) -> None:
    running = module_stack
    auth = {"Authorization": f"Bearer {running.api_key}"}
    response = httpx.post(f"{running.gateway_url}/v1/emails", json=EMAIL, headers=auth, timeout=10)
    assert response.status_code == 202, response.text
    email_id = response.json()["id"]

    def statuses() -> list[str]:
        history = httpx.get(
            f"{running.gateway_url}/v1/emails/{email_id}/history", headers=auth, timeout=10
        ).json()["history"]
        return [entry["status"] for entry in history]

    seen = eventually(
        statuses, 30, interval=0.2, until=lambda seen: "SENT" in seen, what="the email SENT"
    )
    assert seen[0] == "QUEUED"
    # The stub's delivery event may come before or after the processor's own SENT row.
    assert seen[-2:] in (["PROCESSING", "SENT"], ["SENT", "DELIVERED"], ["DELIVERED", "SENT"])

    written = read_env_file(running.stack.config.env_file)
    assert written["GATEWAY_URL"] == running.gateway_url
    assert written["API_KEY"] == running.api_key
    assert written["EMAIL_QUEUE_URL"] == running.email_queue_url
    assert written["EMAIL_DLQ_URL"] == running.email_dlq_url
    assert written["AWS_ENDPOINT_URL"] == running.aws_endpoint_url

    # `make api-key` and `make token`: a credential of a new tenant, alone on the last line.
    for command in ("api-key", "token"):
        issued = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailstack_stack",
                command,
                "--tenant",
                f"cli-{command}",
                "--state-dir",
                str(running.stack.config.state_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert issued.returncode == 0, issued.stderr
        credential = issued.stdout.splitlines()[-1]
        as_tenant = {"Authorization": f"Bearer {credential}"}
        listed = httpx.get(f"{running.gateway_url}/v1/emails", headers=as_tenant, timeout=10)
        assert listed.status_code == 200, (command, listed.text)
        assert listed.json()["items"] == []  # a tenant of its own: the email above is not its
    assert written["DATABASE_URL"] == running.database_url
    assert written["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert set(written) >= {"ELASTICEMAIL_STUB_URL", "SENDGRID_STUB_URL"}


@pytest.mark.e2e
def test_each_component_writes_its_own_log_file_and_a_stub_logs_one_line_per_send(
    module_stack: RunningStack,
) -> None:
    running = module_stack
    for name in COMPONENTS:
        if (pid := running.pid(name)) is None:
            continue  # the session's LocalStack, not this stack's
        log_file = running.log_file(name)
        # Not a pipe to supervisord: the process appends to the file itself.
        outputs = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (1, 2)}
        assert outputs == {str(log_file)}, name

    stub_log = running.log_file(ELASTICEMAIL_STUB)
    auth = {"Authorization": f"Bearer {running.api_key}"}
    response = httpx.post(f"{running.gateway_url}/v1/emails", json=EMAIL, headers=auth, timeout=10)
    assert response.status_code == 202, response.text
    email_id = response.json()["id"]
    status_url = f"{running.gateway_url}/v1/emails/{email_id}"
    eventually(
        lambda: httpx.get(status_url, headers=auth, timeout=10).json()["status"],
        30,
        until=lambda status: status in ("SENT", "DELIVERED"),
        what="the email SENT",
    )
    lines = stub_log.read_text().splitlines()
    assert any("stub.send provider=elasticemail status=200" in line for line in lines), lines
    # uvicorn's access line per request is off: `stub.send` says more.
    assert not [line for line in lines if "POST /v4/emails/transactional" in line], lines


@pytest.mark.e2e
def test_a_killed_processor_is_restarted_by_the_supervisor_and_up_again_changes_nothing(
    module_stack: RunningStack,
) -> None:
    running = module_stack
    pids = {name: running.pid(name) for name in COMPONENTS}
    own_localstack = pids.pop("localstack")
    assert own_localstack is None  # it uses the session's LocalStack
    assert all(pids.values()), pids

    killed = pids[PROCESSOR]
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    restarted = eventually(
        lambda: running.pid(PROCESSOR) not in (None, killed) and running.pid(PROCESSOR),
        30,
        what="the processor restarted by supervisord",
    )
    pid_file = running.stack.config.state_dir / "pids" / f"{PROCESSOR}.pid"
    eventually(lambda: pid_file.read_text().split()[0] == str(restarted), 10)

    again = Stack(running.stack.config)
    again.up()

    assert [(name, healthy) for name, _, healthy in again.status()] == [
        (name, name != "localstack") for name in COMPONENTS
    ]

    assert {name: running.pid(name) for name in pids} == {**pids, PROCESSOR: restarted}
    auth = {"Authorization": f"Bearer {running.api_key}"}
    ready = httpx.get(f"{running.gateway_url}/readyz", headers=auth, timeout=5)
    assert ready.status_code == 200


@pytest.mark.e2e
def test_down_stops_exactly_what_up_started(stack_factory: StackFactory) -> None:
    running = stack_factory(extra_env=STACK_ENV)
    started = {name: running.pid(name) for name in COMPONENTS if running.pid(name)}
    pid_files = running.stack.config.state_dir / "pids"
    for name, pid in started.items():
        assert (pid_files / f"{name}.pid").read_text().split()[0] == str(pid), name

    stopped = Stack(running.stack.config).down()

    assert sorted(stopped) == sorted(started)
    for name, pid in started.items():
        assert not Path(f"/proc/{pid}").exists(), name
    assert not list((running.stack.config.state_dir / "pids").iterdir())
    assert not running.stack.config.env_file.exists()

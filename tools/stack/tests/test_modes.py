"""Which stack runs: auto/docker/host for `make up`, plus external for the contract suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import DockerException

from mailstack_stack.__main__ import StackModeConflictError, build_parser, choose_mode, main
from mailstack_stack.config import (
    StackMode,
    StackModeError,
    docker_daemon_answers,
    parse_mode,
    resolve_mode,
)


def answers() -> bool:
    return True


def silent() -> bool:
    return False


def never_asked() -> bool:
    raise AssertionError("the daemon must not be pinged")


def test_auto_is_docker_when_the_daemon_answers_else_host() -> None:
    assert resolve_mode(StackMode.AUTO, answers) is StackMode.DOCKER
    assert resolve_mode(StackMode.AUTO, silent) is StackMode.HOST


def test_a_forced_mode_is_kept_without_asking_the_daemon() -> None:
    for mode in (StackMode.DOCKER, StackMode.HOST, StackMode.EXTERNAL):
        assert resolve_mode(mode, never_asked) is mode


def test_auto_keeps_the_kind_of_stack_that_is_already_up() -> None:
    assert resolve_mode(StackMode.AUTO, answers, recorded=StackMode.HOST) is StackMode.HOST
    assert resolve_mode(StackMode.AUTO, silent, recorded=StackMode.DOCKER) is StackMode.DOCKER


def test_unknown_or_disallowed_modes_are_refused() -> None:
    with pytest.raises(StackModeError):
        parse_mode("kubernetes")
    with pytest.raises(StackModeError):
        parse_mode("external", (StackMode.AUTO, StackMode.DOCKER, StackMode.HOST))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--stack=external"])


class FakeClient:
    def __init__(self, ping: Any) -> None:
        self._ping = ping
        self.closed = False

    def ping(self) -> bool:
        result: bool = self._ping()
        return result

    def close(self) -> None:
        self.closed = True


def test_daemon_ping_is_true_only_when_the_engine_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = FakeClient(lambda: True)
    monkeypatch.setattr(docker, "from_env", lambda **_: client)
    assert docker_daemon_answers() is True
    assert client.closed

    def refused() -> bool:
        raise DockerException("Error while fetching server API version: connection refused")

    monkeypatch.setattr(docker, "from_env", lambda **_: FakeClient(refused))
    assert docker_daemon_answers() is False


def test_no_engine_at_all_means_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(**_: Any) -> Any:
        raise DockerException("Error while fetching server API version: No such file")

    monkeypatch.setattr(docker, "from_env", no_socket)
    assert docker_daemon_answers() is False


def test_down_and_status_follow_the_mode_up_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILSTACK_STACK", raising=False)
    assert choose_mode("down", StackMode.AUTO, StackMode.DOCKER, never_asked) is StackMode.DOCKER
    assert choose_mode("status", StackMode.AUTO, None, never_asked) is StackMode.HOST
    (tmp_path / "mode").write_text("host\n")

    assert main(["down", "--state-dir", str(tmp_path)]) == 0

    assert capsys.readouterr().out == "stopped: nothing was running\n"
    assert not (tmp_path / "mode").exists()
    assert main(["status", "--state-dir", str(tmp_path)]) == 1
    assert "gateway            down" in capsys.readouterr().out


def test_up_refuses_a_second_kind_of_stack_beside_the_one_that_is_up() -> None:
    assert choose_mode("up", StackMode.AUTO, None, silent) is StackMode.HOST
    assert choose_mode("up", StackMode.AUTO, StackMode.HOST, answers) is StackMode.HOST
    with pytest.raises(StackModeConflictError, match="host stack is up"):
        choose_mode("up", StackMode.DOCKER, StackMode.HOST, answers)


def test_the_pytest_option_lists_every_mode(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.getoption("--stack") in (None, *[mode.value for mode in StackMode])

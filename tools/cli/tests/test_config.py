"""Where the CLI finds the gateway and the key: flags, environment, then stack.env."""

import json
from pathlib import Path
from typing import Any

import pytest

from mailstack_cli.config import NotConfiguredError, find_stack_env, resolve

STACK_ENV = "GATEWAY_URL=http://from-file:8000\nAPI_KEY=ms_file\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".stack").mkdir()
    (tmp_path / ".stack" / "stack.env").write_text(STACK_ENV)
    (tmp_path / "services" / "gateway").mkdir(parents=True)
    return tmp_path


def test_stack_env_is_found_from_a_subfolder_of_the_repository(repo: Path) -> None:
    found = find_stack_env(repo / "services" / "gateway")
    assert found == repo / ".stack" / "stack.env"
    target = resolve(None, None, environ={}, cwd=repo / "services" / "gateway")
    assert (target.url, target.api_key) == ("http://from-file:8000", "ms_file")


def test_the_search_stops_at_the_repository_root(tmp_path: Path) -> None:
    (tmp_path / ".stack").mkdir()
    (tmp_path / ".stack" / "stack.env").write_text(STACK_ENV)
    inner = tmp_path / "other-repo"
    (inner / ".git").mkdir(parents=True)
    assert find_stack_env(inner) is None


def test_the_cli_names_win_over_the_stack_names_and_the_file(repo: Path) -> None:
    environ = {"GATEWAY_URL": "http://env-stack", "MAILSTACK_URL": "http://env-cli/"}
    target = resolve(None, None, environ=environ, cwd=repo)
    assert (target.url, target.api_key) == ("http://env-cli", "ms_file")
    environ = {"API_KEY": "ms_env_stack"}
    assert resolve(None, None, environ=environ, cwd=repo).api_key == "ms_env_stack"


def test_flags_win_over_everything(repo: Path) -> None:
    environ = {"MAILSTACK_URL": "http://env", "MAILSTACK_API_KEY": "ms_env"}
    target = resolve("http://flag", "ms_flag", environ=environ, cwd=repo)
    assert (target.url, target.api_key) == ("http://flag", "ms_flag")


def test_an_env_file_can_be_named(tmp_path: Path) -> None:
    named = tmp_path / "deployed.env"
    named.write_text("GATEWAY_URL=https://mail.example.com\nAPI_KEY=ms_deployed\n")
    environ = {"MAILSTACK_STACK_ENV_FILE": str(named)}
    assert resolve(None, None, environ=environ, cwd=tmp_path).url == "https://mail.example.com"
    assert resolve(None, None, env_file=named, environ={}, cwd=tmp_path).api_key == "ms_deployed"


def test_nothing_configured_says_what_to_set(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    with pytest.raises(NotConfiguredError, match="MAILSTACK_URL"):
        resolve(None, None, environ={}, cwd=tmp_path)
    with pytest.raises(NotConfiguredError, match="MAILSTACK_API_KEY"):
        resolve(None, None, environ={"MAILSTACK_URL": "http://x"}, cwd=tmp_path)


def test_the_command_reads_the_stack_env_and_takes_flags_before_the_command(
    gateway: Any, run: Any, tmp_path: Path
) -> None:
    (tmp_path / ".stack").mkdir()
    (tmp_path / ".stack" / "stack.env").write_text(STACK_ENV)
    gateway.answer("GET", "/v1/admin/breakers", 200, {"items": [], "read_at": None})
    assert run("breakers", env={}).exit_code == 0
    assert str(gateway.requests[-1].url) == "http://from-file:8000/v1/admin/breakers"
    assert gateway.requests[-1].headers["Authorization"] == "Bearer ms_file"
    flagged = run("--url", "http://flag", "--api-key", "ms_flag", "breakers", env={})
    assert json.loads(flagged.stdout) == {"items": [], "read_at": None}
    assert str(gateway.requests[-1].url) == "http://flag/v1/admin/breakers"
    assert gateway.requests[-1].headers["Authorization"] == "Bearer ms_flag"


def test_the_command_without_configuration_exits_2(gateway: Any, run: Any) -> None:
    result = run("list", env={})
    assert result.exit_code == 2
    assert "no gateway URL" in result.stderr
    assert gateway.requests == []

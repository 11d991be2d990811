"""--stack=external: the stack's URLs from the environment or stack.env, and what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstack_stack.config import write_env_file
from mailstack_stack.external import MissingStackSettingError
from mailstack_testing.external import load_external_stack
from mailstack_testing.fixtures import ExternalStackUnderTest

STACK_ENV = {
    "GATEWAY_URL": "http://127.0.0.1:8000",
    "ELASTICEMAIL_STUB_URL": "http://127.0.0.1:8101",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
    "EMAIL_QUEUE_URL": "http://127.0.0.1:4566/queue/us-east-1/000000000000/mailstack-emails",
    "ARCHIVE_BUCKET": "mailstack-archive",
    "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/mailstack",
}


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "stack.env"
    write_env_file(path, STACK_ENV)
    return path


def test_reads_the_urls_make_up_wrote(env_file: Path) -> None:
    stack = load_external_stack({}, env_file)
    assert stack.gateway_url == "http://127.0.0.1:8000"
    assert stack.elasticemail_stub_url == "http://127.0.0.1:8101"
    assert stack.email_queue_url == STACK_ENV["EMAIL_QUEUE_URL"]
    assert stack.database_url == STACK_ENV["DATABASE_URL"]
    assert stack.profile == "default"


def test_the_environment_wins_over_the_file(env_file: Path) -> None:
    stack = load_external_stack({"GATEWAY_URL": "https://mail.example.com/"}, env_file)
    assert stack.gateway_url == "https://mail.example.com"
    assert stack.aws_endpoint_url == "http://127.0.0.1:4566"


def test_works_from_the_environment_alone(tmp_path: Path) -> None:
    stack = load_external_stack({"GATEWAY_URL": "http://gw"}, tmp_path / "absent.env")
    assert stack.gateway_url == "http://gw"
    assert stack.get("SENDGRID_STUB_URL") is None
    assert stack.get("DATABASE_URL") is None
    assert "absent.env (not found)" in stack.source


def test_a_missing_setting_names_itself_and_where_it_was_looked_for(env_file: Path) -> None:
    stack = load_external_stack({}, env_file)
    with pytest.raises(MissingStackSettingError, match="SENDGRID_STUB_URL is not given") as error:
        _ = stack.sendgrid_stub_url
    assert str(env_file) in str(error.value)
    empty = load_external_stack({"EMAIL_DLQ_URL": ""}, env_file)
    assert empty.get("EMAIL_DLQ_URL") is None
    with pytest.raises(AttributeError):
        _ = stack.not_a_setting


def test_under_pytest_a_missing_setting_skips_the_test_with_the_reason(env_file: Path) -> None:
    loaded = load_external_stack({}, env_file)
    stack = ExternalStackUnderTest(values=loaded.values, source=loaded.source)
    with pytest.raises(pytest.skip.Exception, match=r"--stack=external: EMAIL_DLQ_URL is not"):
        _ = stack.email_dlq_url


def test_the_profile_a_stack_was_started_with_is_read(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    write_env_file(path, {**STACK_ENV, "STACK_PROFILE": "contract-tests"})
    assert load_external_stack({}, path).profile == "contract-tests"

"""Settings and wiring of the jobs: what a Lambda's environment must hold."""

from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from mailstack_jobs.bootstrap import resolve_database_url
from mailstack_jobs.cleanup import effective_retention_days
from mailstack_jobs.settings import CleanupSettings, RetrySettings

URL = "postgresql+psycopg://mailstack:secret@db.internal:5432/mailstack"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mailstack-database-url-AbCdEf"


class FakeSecrets:
    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.asked: list[str] = []

    def get_secret_value(self, *, SecretId: str) -> Mapping[str, Any]:  # noqa: N803
        self.asked.append(SecretId)
        return {"ARN": SecretId, "SecretString": self.values[SecretId]}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "DATABASE_URL_SECRET_ARN",
        "ARCHIVE_BUCKET",
        "RETENTION_DAYS",
        "EMAIL_QUEUE_URL",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_cleanup_reads_the_variables_the_pulumi_program_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL_SECRET_ARN", SECRET_ARN)
    monkeypatch.setenv("ARCHIVE_BUCKET", "mailstack-prod-archive")
    monkeypatch.setenv("RETENTION_DAYS", "365")

    settings = CleanupSettings()

    assert settings.database_url_secret_arn == SECRET_ARN
    assert settings.archive_bucket == "mailstack-prod-archive"
    assert settings.retention_days == 365
    assert settings.cleanup_batch_size == 500


def test_retention_defaults_to_six_months(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("ARCHIVE_BUCKET", "bucket")

    assert CleanupSettings().retention_days == 183
    assert CleanupSettings().webhook_event_retention_days == 30
    monkeypatch.setenv("WEBHOOK_EVENT_RETENTION_DAYS", "7")
    assert CleanupSettings().webhook_event_retention_days == 7
    monkeypatch.setenv("WEBHOOK_EVENT_RETENTION_DAYS", "0")
    with pytest.raises(ValidationError):
        CleanupSettings()


def test_retry_reads_the_variables_the_pulumi_program_sets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL_SECRET_ARN", SECRET_ARN)
    monkeypatch.setenv("EMAIL_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/mailstack")

    settings = RetrySettings()

    assert settings.email_queue_url.endswith("/mailstack")
    assert (settings.retry_job_max_rounds, settings.retry_job_backoff_base_seconds) == (3, 900)


def test_a_job_without_any_database_setting_fails_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_QUEUE_URL", "http://localhost:4566/000000000000/q")

    with pytest.raises(ValidationError, match="DATABASE_URL or DATABASE_URL_SECRET_ARN"):
        RetrySettings()


def test_a_cleanup_without_a_bucket_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)

    with pytest.raises(ValidationError, match="archive_bucket"):
        CleanupSettings()


def test_the_database_url_comes_from_the_secret_when_only_its_arn_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL_SECRET_ARN", SECRET_ARN)
    monkeypatch.setenv("EMAIL_QUEUE_URL", "q")
    secrets = FakeSecrets({SECRET_ARN: URL + "\n"})

    assert resolve_database_url(RetrySettings(), secrets) == URL
    assert secrets.asked == [SECRET_ARN]


def test_a_direct_database_url_needs_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("EMAIL_QUEUE_URL", "q")
    secrets = FakeSecrets({})

    assert resolve_database_url(RetrySettings(), secrets) == URL
    assert secrets.asked == []


@pytest.mark.parametrize(
    ("configured", "database", "expected"), [(183, 183, 183), (90, 183, 183), (400, 183, 400)]
)
def test_retention_is_never_shorter_than_the_database_floor(
    configured: int, database: int, expected: int
) -> None:
    assert effective_retention_days(configured, database) == expected

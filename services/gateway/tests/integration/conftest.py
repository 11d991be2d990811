"""Integration tests talk to LocalStack, which accepts any credentials but needs some."""

import pytest


@pytest.fixture(autouse=True)
def _localstack_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

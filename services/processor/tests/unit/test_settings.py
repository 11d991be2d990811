"""ProcessorSettings: what a misconfigured environment looks like at start."""

import httpx
import pytest
from pydantic import ValidationError

from mailstack_processor.main import build_senders, database_engine, pool_sizes
from mailstack_processor.settings import ProcessorSettings

REQUIRED = {
    "DATABASE_URL": "postgresql://mailstack@127.0.0.1:9/mailstack",
    "EMAIL_QUEUE_URL": "http://127.0.0.1:9/000000000000/emails",
    "ATTACHMENTS_BUCKET": "mailstack-attachments",
    "ELASTICEMAIL_API_KEY": "ee-key",
    "SENDGRID_API_KEY": "sg-key",
}


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ProcessorSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_reads_the_required_values_and_keeps_the_keys_secret() -> None:
    settings = ProcessorSettings()

    assert settings.database_url == REQUIRED["DATABASE_URL"]
    assert settings.providers == ["elasticemail", "sendgrid"]
    assert settings.sendgrid_api_key.get_secret_value() == "sg-key"
    assert "sg-key" not in repr(settings)


@pytest.mark.parametrize("missing", list(REQUIRED))
def test_a_missing_required_variable_fails_naming_it(
    environment: pytest.MonkeyPatch, missing: str
) -> None:
    environment.delenv(missing)

    with pytest.raises(ValidationError) as caught:
        ProcessorSettings()

    (error,) = caught.value.errors()
    assert error["loc"] == (missing.lower(),)
    assert error["type"] == "missing"


@pytest.mark.parametrize(
    "order",
    ["elasticemail,mailgun", "sendgrid,sendgrid", "elasticemail, elasticemail", "", " , "],
)
def test_rejects_an_unknown_or_duplicated_provider_order(
    environment: pytest.MonkeyPatch, order: str
) -> None:
    environment.setenv("PROVIDER_ORDER", order)

    with pytest.raises(ValidationError) as caught:
        ProcessorSettings()

    assert [error["loc"] for error in caught.value.errors()] == [("provider_order",)]


def test_accepts_a_reordered_or_single_provider_list(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PROVIDER_ORDER", " sendgrid , elasticemail ")
    assert ProcessorSettings().providers == ["sendgrid", "elasticemail"]

    environment.setenv("PROVIDER_ORDER", "sendgrid")
    assert ProcessorSettings().providers == ["sendgrid"]


async def test_builds_the_senders_in_the_configured_order(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("PROVIDER_ORDER", "sendgrid,elasticemail")

    async with httpx.AsyncClient() as client:
        senders = build_senders(ProcessorSettings(), client)

    assert [sender.name for sender in senders] == ["sendgrid", "elasticemail"]


async def test_the_pools_default_to_one_connection_per_concurrent_delivery() -> None:
    assert pool_sizes(ProcessorSettings()) == (19, 1)
    engine = database_engine(ProcessorSettings())
    try:
        assert engine.pool.size() == 1  # type: ignore[attr-defined]  # QueuePool's
        assert engine.pool._max_overflow == 10  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_a_deployment_sizes_the_pool_to_fit_the_database(
    environment: pytest.MonkeyPatch,
) -> None:
    """What the Pulumi program sets: every task at full scale fits max_connections."""
    environment.setenv("DATABASE_POOL_SIZE", "7")
    environment.setenv("DATABASE_MAX_OVERFLOW", "0")
    assert pool_sizes(ProcessorSettings()) == (6, 1)
    engine = database_engine(ProcessorSettings())
    try:
        assert engine.pool.size() == 1  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()

"""The queue message contract: versioned, ids only, strict on what it accepts."""

import uuid

import pytest

from mailstack_core.messages import EmailQueuedMessage, InvalidQueueMessageError


def test_round_trips_through_json() -> None:
    email_id = uuid.uuid4()
    raw = EmailQueuedMessage(email_id=email_id).to_json()
    assert EmailQueuedMessage.from_json(raw).email_id == email_id


def test_carries_the_schema_version_and_type_and_no_body() -> None:
    message = EmailQueuedMessage(email_id=uuid.uuid4())
    assert set(message.model_dump()) == {"version", "type", "email_id"}
    assert message.version == 1
    assert message.type == "email.queued"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "{}",
        '{"version": 2, "type": "email.queued",'
        ' "email_id": "7f1b7e0e-5a1f-4c3e-9d63-2b0c1f6b9a10"}',
        '{"version": 1, "type": "email.queued", "email_id": "nope"}',
        '{"version": 1, "type": "email.queued", "email_id": "7f1b7e0e-5a1f-4c3e-9d63-2b0c1f6b9a10",'
        ' "body": "x"}',
    ],
)
def test_rejects_what_is_not_a_known_message(raw: str) -> None:
    with pytest.raises(InvalidQueueMessageError):
        EmailQueuedMessage.from_json(raw)

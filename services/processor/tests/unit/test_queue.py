"""SqsEmailQueue over a fake SQS client: deletes and visibility changes share batch calls."""

import asyncio
from typing import Any

import pytest

from mailstack_processor.queue import ReceivedMessage, SqsBatchEntryError, SqsEmailQueue

QUEUE_URL = "https://sqs.test/000000000000/emails"


class FakeSqsClient:
    """Records batch calls; answers each with the entries named in `fail` as failed."""

    def __init__(self) -> None:
        self.delete_calls: list[list[dict[str, Any]]] = []
        self.visibility_calls: list[list[dict[str, Any]]] = []
        self.fail: dict[str, str] = {}  # receipt handle -> error code

    def _answer(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        failed = [
            {"Id": e["Id"], "SenderFault": True, "Code": self.fail[e["ReceiptHandle"]]}
            for e in entries
            if e["ReceiptHandle"] in self.fail
        ]
        ok = [{"Id": e["Id"]} for e in entries if e["ReceiptHandle"] not in self.fail]
        return {"Successful": ok, "Failed": failed}

    async def delete_message_batch(self, QueueUrl: str, Entries: Any) -> dict[str, Any]:  # noqa: N803
        assert QueueUrl == QUEUE_URL
        self.delete_calls.append(list(Entries))
        return self._answer(Entries)

    async def change_message_visibility_batch(
        self,
        QueueUrl: str,  # noqa: N803
        Entries: Any,  # noqa: N803
    ) -> dict[str, Any]:
        assert QueueUrl == QUEUE_URL
        self.visibility_calls.append(list(Entries))
        return self._answer(Entries)


def _message(index: int) -> ReceivedMessage:
    return ReceivedMessage(f"m-{index}", f"rh-{index}", "{}", 1)


@pytest.fixture
def client() -> FakeSqsClient:
    return FakeSqsClient()


@pytest.fixture
def queue(client: FakeSqsClient) -> SqsEmailQueue:
    return SqsEmailQueue(client, QUEUE_URL, 1, flush_seconds=0.01)  # type: ignore[arg-type]


async def test_concurrent_deletes_share_one_batch_call(
    client: FakeSqsClient, queue: SqsEmailQueue
) -> None:
    await asyncio.gather(*(queue.delete(_message(i)) for i in range(3)))

    assert len(client.delete_calls) == 1
    assert [e["ReceiptHandle"] for e in client.delete_calls[0]] == ["rh-0", "rh-1", "rh-2"]
    assert len({e["Id"] for e in client.delete_calls[0]}) == 3


async def test_more_than_ten_deletes_go_out_in_calls_of_at_most_ten(
    client: FakeSqsClient, queue: SqsEmailQueue
) -> None:
    await asyncio.gather(*(queue.delete(_message(i)) for i in range(23)))

    assert sorted(len(call) for call in client.delete_calls) == [3, 10, 10]
    handles = [e["ReceiptHandle"] for call in client.delete_calls for e in call]
    assert sorted(handles) == sorted(f"rh-{i}" for i in range(23))


async def test_a_refused_entry_fails_only_its_own_delete(
    client: FakeSqsClient, queue: SqsEmailQueue
) -> None:
    client.fail["rh-1"] = "ReceiptHandleIsInvalid"

    results = await asyncio.gather(
        *(queue.delete(_message(i)) for i in range(3)), return_exceptions=True
    )

    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], SqsBatchEntryError)
    assert results[1].code == "ReceiptHandleIsInvalid"


async def test_a_failed_call_fails_every_delete_in_it(queue: SqsEmailQueue) -> None:
    async def unreachable(**_: Any) -> dict[str, Any]:
        raise ConnectionError("sqs is down")

    queue._client = type("Down", (), {"delete_message_batch": staticmethod(unreachable)})()  # type: ignore[assignment]

    results = await asyncio.gather(
        *(queue.delete(_message(i)) for i in range(2)), return_exceptions=True
    )

    assert all(isinstance(result, ConnectionError) for result in results)


async def test_visibility_changes_are_batched_each_with_its_own_timeout(
    client: FakeSqsClient, queue: SqsEmailQueue
) -> None:
    await asyncio.gather(
        queue.change_visibility(_message(0), 0),
        queue.change_visibility(_message(1), 40),
        queue.change_visibility(_message(2), 99_999),
    )

    [call] = client.visibility_calls
    assert [(e["ReceiptHandle"], e["VisibilityTimeout"]) for e in call] == [
        ("rh-0", 0),
        ("rh-1", 40),
        ("rh-2", 43_200),
    ]
    assert client.delete_calls == []

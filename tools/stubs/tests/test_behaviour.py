"""Both stubs obey the control API: modes, delays, held requests, the record, reset, health."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from mailstack_testing.waiting import eventually

if TYPE_CHECKING:
    from conftest import RunningStub

GENEROUS_S = 10.0


def _is_provider_error(stub: RunningStub, body: Any) -> bool:
    if stub.provider == "elasticemail":
        return set(body) == {"Error"} and isinstance(body["Error"], str)
    return all(set(error) == {"message", "field", "help"} for error in body["errors"])


def test_reports_its_health_and_provider(stub: RunningStub) -> None:
    assert stub.control.health() == {"status": "ok", "provider": stub.provider}


def test_starts_in_ok_mode_without_delay(stub: RunningStub) -> None:
    assert stub.control.behaviour() == {
        "mode": "ok",
        "status": None,
        "delay_ms": 0,
        "held_requests": 0,
    }


def test_error_mode_answers_500_by_default_in_the_provider_shape(stub: RunningStub) -> None:
    stub.control.set_behaviour("error")

    response = stub.send()

    assert response.status_code == 500
    assert _is_provider_error(stub, response.json())
    assert [m["status"] for m in stub.control.messages()] == [500]


@pytest.mark.parametrize("status", [503, 429])
def test_error_mode_answers_the_given_status(stub: RunningStub, status: int) -> None:
    stub.control.set_behaviour("error", status=status)

    response = stub.send()

    assert response.status_code == status
    assert _is_provider_error(stub, response.json())
    assert [m["status"] for m in stub.control.messages()] == [status]


def test_sendgrid_rate_limit_carries_the_reset_headers(sendgrid: RunningStub) -> None:
    sendgrid.control.set_behaviour("error", status=429)

    response = sendgrid.send()

    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) > time.time()


def test_reject_mode_answers_a_400_validation_error_to_a_valid_body(stub: RunningStub) -> None:
    stub.control.set_behaviour("reject")

    response = stub.send()

    assert response.status_code == 400
    assert _is_provider_error(stub, response.json())
    if stub.provider == "sendgrid":
        assert response.json()["errors"][0]["field"] == "personalizations.0.to.0.email"


def test_hang_holds_a_request_until_the_mode_changes(stub: RunningStub) -> None:
    stub.control.set_behaviour("hang")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(stub.send, timeout_s=30)
        stub.control.wait_for_held_requests(1, timeout_s=GENEROUS_S)
        assert not pending.done()
        assert stub.control.messages() == []

        stub.control.set_behaviour("error", status=503)

        assert pending.result(timeout=GENEROUS_S).status_code == 503
    assert [m["status"] for m in stub.control.messages()] == [503]
    assert stub.control.behaviour()["held_requests"] == 0


def test_reset_releases_held_requests_as_ok(stub: RunningStub) -> None:
    stub.control.set_behaviour("hang")
    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(stub.send, timeout_s=30) for _ in range(2)]
        stub.control.wait_for_held_requests(2, timeout_s=GENEROUS_S)

        stub.control.reset()

        statuses = [future.result(timeout=GENEROUS_S).status_code for future in pending]
    assert statuses == [200 if stub.provider == "elasticemail" else 202] * 2


def test_records_a_held_request_whose_client_gave_up_once_it_is_answered(
    stub: RunningStub,
) -> None:
    # The provider's side of a client read timeout: the email may still go out.
    stub.control.set_behaviour("hang")
    with pytest.raises(httpx.ReadTimeout):
        stub.send(timeout_s=0.5)
    stub.control.wait_for_held_requests(1, timeout_s=GENEROUS_S)

    stub.control.set_behaviour("ok")

    recorded = eventually(stub.control.messages, GENEROUS_S, what="the released request recorded")
    assert recorded[0]["status"] in (200, 202)


def test_delay_holds_every_answer_at_least_that_long(stub: RunningStub) -> None:
    stub.control.set_behaviour("ok", delay_ms=300)

    started = time.monotonic()
    response = stub.send()
    elapsed = time.monotonic() - started

    assert response.is_success
    assert 0.3 <= elapsed < GENEROUS_S
    assert stub.control.behaviour()["delay_ms"] == 300


def test_delay_applies_to_injected_errors_too(stub: RunningStub) -> None:
    stub.control.set_behaviour("error", status=502, delay_ms=200)

    started = time.monotonic()
    response = stub.send()

    assert response.status_code == 502
    assert time.monotonic() - started >= 0.2


def test_lists_every_send_oldest_first_with_the_status_answered(stub: RunningStub) -> None:
    stub.send(headers=stub.auth("wrong"))
    stub.send(headers=stub.auth() | {"Idempotency-Key": "k-1", "User-Agent": "probe"})
    stub.control.set_behaviour("error", status=503)
    stub.send()

    sends = stub.control.messages()

    success = 200 if stub.provider == "elasticemail" else 202
    assert [s["status"] for s in sends] == [401, success, 503]
    assert sends[1]["headers"]["idempotency-key"] == "k-1"
    assert sends[1]["headers"]["user-agent"] == "probe"
    assert all("authorization" not in s["headers"] for s in sends)
    assert all("x-elasticemail-apikey" not in s["headers"] for s in sends)
    received = [s["received_at"] for s in sends]
    assert received == sorted(received)
    assert all("+00:00" in moment for moment in received)


def test_clearing_messages_keeps_the_behaviour(stub: RunningStub) -> None:
    stub.send()
    stub.control.set_behaviour("error", status=503)

    stub.control.clear()

    assert stub.control.messages() == []
    assert stub.control.behaviour()["mode"] == "error"


def test_reset_restores_ok_mode_and_empties_the_record(stub: RunningStub) -> None:
    stub.control.set_behaviour("error", status=503, delay_ms=50)
    stub.send()

    stub.control.reset()

    assert stub.control.messages() == []
    assert stub.control.behaviour()["mode"] == "ok"
    assert stub.control.behaviour()["delay_ms"] == 0
    assert stub.send().is_success


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"mode": "down"},
        {"mode": "ok", "status": 503},
        {"mode": "error", "status": 200},
        {"mode": "error", "status": "503"},
        {"mode": "ok", "delay_ms": -1},
        {"mode": "ok", "colour": "red"},
        ["ok"],
    ],
)
def test_refuses_an_invalid_behaviour_with_422(stub: RunningStub, body: Any) -> None:
    response = httpx.put(f"{stub.base_url}/_stub/behaviour", json=body)

    assert response.status_code == 422
    assert stub.control.behaviour()["mode"] == "ok"


def test_control_client_raises_when_the_stub_refuses(stub: RunningStub) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        stub.control.set_behaviour("ok", status=500)


def test_takes_a_behaviour_sent_without_a_json_content_type(stub: RunningStub) -> None:
    # What `curl -X PUT -d '{"mode": "hang"}'` sends.
    response = httpx.put(f"{stub.base_url}/_stub/behaviour", content=b'{"mode": "reject"}')

    assert response.status_code == 204
    assert stub.control.behaviour()["mode"] == "reject"


def test_documents_the_control_api(stub: RunningStub) -> None:
    schema = httpx.get(f"{stub.base_url}/_stub/openapi.json").json()

    body = schema["paths"]["/_stub/behaviour"]["put"]["requestBody"]
    mode = body["content"]["application/json"]["schema"]["properties"]["mode"]
    assert mode["enum"] == ["ok", "error", "hang", "reject"]

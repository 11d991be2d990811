"""Each command: the request it makes, what it prints (table or JSON), how it fails."""

import json
from typing import Any

import httpx

# What the `run` fixture puts in the environment.
URL = "http://gateway.test"
KEY = "ms_0123456789abcdef_secret"
EMAIL_ID = "6f1c2d3e-0000-4000-8000-000000000001"
ACCEPTED = {"id": EMAIL_ID, "status": "QUEUED", "links": {}}


def _summary(email_id: str, status: str, created: str, subject: str = "Hi") -> dict[str, Any]:
    return {
        "id": email_id,
        "status": status,
        "subject": subject,
        "tags": [],
        "provider": "elasticemail" if status == "SENT" else None,
        "attempts": 1,
        "created_at": created,
        "updated_at": created,
        "links": {},
    }


def test_send_posts_the_email_the_flags_describe_and_prints_its_id(gateway: Any, run: Any) -> None:
    gateway.answer("POST", "/v1/emails", 202, ACCEPTED)
    result = run(
        "send",
        "--from", "Example <app@example.com>",
        "--to", "ada@example.com",
        "--to", "Alan <alan@example.com>",
        "--cc", "cc@example.com",
        "--subject", "Hello",
        "--text", "Hi there",
        "--tag", "welcome",
        "--idempotency-key", "order-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ACCEPTED  # not a terminal: JSON
    request = gateway.requests[0]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Idempotency-Key"] == "order-1"
    assert gateway.last_json() == {
        "from": {"email": "app@example.com", "name": "Example"},
        "to": [{"email": "ada@example.com"}, {"email": "alan@example.com", "name": "Alan"}],
        "cc": [{"email": "cc@example.com"}],
        "subject": "Hello",
        "text": "Hi there",
        "tags": ["welcome"],
    }


def test_send_takes_a_json_file_and_lets_flags_override_it(
    gateway: Any, run: Any, tmp_path: Any
) -> None:
    gateway.answer("POST", "/v1/emails", 202, ACCEPTED)
    body = {"from": {"email": "a@example.com"}, "to": [{"email": "b@example.com"}],
            "subject": "From the file", "html": "<p>x</p>"}  # fmt: skip
    (tmp_path / "email.json").write_text(json.dumps(body))
    result = run("send", "--file", "email.json", "--subject", "From a flag", "--table")
    assert result.exit_code == 0, result.output
    assert gateway.last_json() == body | {"subject": "From a flag"}
    assert EMAIL_ID in result.stdout
    assert "QUEUED" in result.stdout
    assert not result.stdout.lstrip().startswith("{")


def test_send_reads_the_body_from_stdin(gateway: Any, run: Any) -> None:
    gateway.answer("POST", "/v1/emails", 202, ACCEPTED)
    result = run("send", "--file", "-", stdin='{"subject": "piped"}')
    assert result.exit_code == 0, result.output
    assert gateway.last_json() == {"subject": "piped"}


def test_every_validation_error_is_shown_and_the_exit_code_says_refused(
    gateway: Any, run: Any
) -> None:
    errors = [
        {"field": "to", "message": "Field required"},
        {"field": "from.email", "message": "not a valid email address"},
    ]
    gateway.answer("POST", "/v1/emails", 422, {"errors": errors})
    result = run("send", "--from", "nobody@invalid", "--subject", "x", "--table")
    assert result.exit_code == 1
    assert "HTTP 422" in result.stderr
    assert "to: Field required" in result.stderr
    assert "from.email: not a valid email address" in result.stderr

    as_json = run("send", "--from", "nobody@invalid", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {"status": 422, "body": {"errors": errors}}


def test_a_problem_answer_is_shown_with_its_status_and_message(gateway: Any, run: Any) -> None:
    gateway.answer(
        "GET",
        f"/v1/emails/{EMAIL_ID}",
        404,
        {"error": "not_found", "message": f"no email with id {EMAIL_ID}"},
    )
    result = run("get", EMAIL_ID)
    assert result.exit_code == 1
    assert f"HTTP 404 not_found: no email with id {EMAIL_ID}" in result.stderr


def test_an_unreachable_gateway_is_exit_code_3(gateway: Any, run: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    gateway.routes[("GET", "/v1/admin/breakers")] = refuse
    result = run("breakers")
    assert result.exit_code == 3
    assert f"the gateway at {URL} did not answer" in result.stderr


def test_get_prints_an_email_as_fields(gateway: Any, run: Any) -> None:
    email = {
        "id": EMAIL_ID, "status": "SENT", "provider": "sendgrid", "provider_message_id": "m-1",
        "from": {"email": "app@example.com", "name": "App"}, "to": [{"email": "a@example.com"}],
        "cc": [], "bcc": [], "subject": "Hello", "tags": ["welcome"], "attempts": 2,
        "last_error": None, "send_at": None, "created_at": "2026-12-01T10:00:00Z",
        "updated_at": "2026-12-01T10:00:01Z",
    }  # fmt: skip
    gateway.answer("GET", f"/v1/emails/{EMAIL_ID}", 200, email)
    table = run("get", EMAIL_ID, "--table")
    assert table.exit_code == 0, table.output
    for shown in ("SENT", "sendgrid", "App <app@example.com>", "a@example.com", "welcome"):
        assert shown in table.stdout
    assert json.loads(run("get", EMAIL_ID).stdout) == email


def test_history_is_a_table_oldest_first(gateway: Any, run: Any) -> None:
    history = [
        {"status": "QUEUED", "provider": None, "detail": {"outcome": "accepted"}, "at": "t1"},
        {"status": "SENT", "provider": "elasticemail", "detail": {"message_id": "x"}, "at": "t2"},
    ]
    gateway.answer(
        "GET", f"/v1/emails/{EMAIL_ID}/history", 200, {"id": EMAIL_ID, "history": history}
    )
    result = run("history", EMAIL_ID, "--table")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    queued = next(i for i, line in enumerate(lines) if "QUEUED" in line)
    sent = next(i for i, line in enumerate(lines) if "SENT" in line)
    assert queued < sent
    assert '{"outcome":"accepted"}' in lines[queued]
    assert "elasticemail" in lines[sent]


def test_list_passes_its_filters_and_prints_the_next_cursor(gateway: Any, run: Any) -> None:
    page = {"items": [_summary(EMAIL_ID, "SENT", "2026-12-01T10:00:00Z")], "next_cursor": "abc"}
    gateway.answer("GET", "/v1/emails", 200, page)
    result = run("list", "--status", "sent", "--tag", "welcome", "--limit", "5", "--table")
    assert result.exit_code == 0, result.output
    params = gateway.requests[0].url.params
    assert dict(params) == {"status": "SENT", "tag": "welcome", "limit": "5"}
    assert EMAIL_ID in result.stdout
    assert "mailstack list --cursor abc" in result.stderr
    run("list", "--cursor", "abc", "--json")
    assert gateway.requests[-1].url.params["cursor"] == "abc"


def test_tail_prints_new_emails_and_status_changes_until_it_stops(gateway: Any, run: Any) -> None:
    old = _summary("old", "SENT", "2026-12-01T09:00:00Z")
    first = _summary("e1", "QUEUED", "2026-12-01T10:00:00Z")
    gateway.answers(
        "GET",
        "/v1/emails",
        [
            {"items": [old], "next_cursor": None},  # the first look only records
            {"items": [first, old], "next_cursor": None},
            {"items": [first | {"status": "SENT", "provider": "elasticemail"}, old],
             "next_cursor": None},
        ],
    )  # fmt: skip
    result = run("tail", "--polls", "3", "--interval", "0.1", "--table")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert "e1" in lines[0]
    assert "new" in lines[0]
    assert "QUEUED" in lines[0]
    assert "QUEUED -> SENT via elasticemail" in lines[1]
    assert "old" not in result.stdout


def test_tail_json_is_one_event_a_line(gateway: Any, run: Any) -> None:
    email = _summary("e1", "QUEUED", "2026-12-01T10:00:00Z")
    gateway.answers(
        "GET",
        "/v1/emails",
        [{"items": [], "next_cursor": None}, {"items": [email], "next_cursor": None}],
    )
    result = run("tail", "--polls", "2", "--json")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events == [{"event": "new", "before": None, "email": email}]


def test_keys_create_shows_the_key_once_and_sends_what_was_asked(gateway: Any, run: Any) -> None:
    created = {
        "id": "0123456789abcdef", "tenant": "acme", "name": "ci", "scopes": ["emails:send"],
        "created_at": "t", "expires_at": None, "revoked_at": None, "last_used_at": None,
        "key": "ms_0123456789abcdef_new",
    }  # fmt: skip
    gateway.answer("POST", "/v1/admin/keys", 201, created)
    result = run(
        "keys", "create", "--tenant", "acme", "--name", "ci", "--scope", "emails:send",
        "--create-tenant", "--table",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert gateway.last_json() == {
        "tenant": "acme",
        "name": "ci",
        "scopes": ["emails:send"],
        "create_tenant": True,
    }
    assert result.stdout.splitlines()[-1] == "ms_0123456789abcdef_new"
    assert "shown once" in result.stderr


def test_keys_list_and_revoke(gateway: Any, run: Any) -> None:
    key = {
        "id": "0123456789abcdef", "tenant": "acme", "name": "ci", "scopes": ["admin"],
        "created_at": "2026-12-01", "expires_at": None, "revoked_at": None, "last_used_at": None,
    }  # fmt: skip
    gateway.answer("GET", "/v1/admin/keys", 200, {"items": [key]})
    listed = run("keys", "list", "--tenant", "acme", "--table")
    assert listed.exit_code == 0
    assert "0123456789abcdef" in listed.stdout
    assert gateway.requests[-1].url.params["tenant"] == "acme"
    revoked = key | {"revoked_at": "2026-12-02"}
    gateway.answer("POST", "/v1/admin/keys/0123456789abcdef/revoke", 200, revoked)
    result = run("keys", "revoke", "0123456789abcdef")
    assert json.loads(result.stdout) == revoked


def test_breakers_table_and_the_empty_case(gateway: Any, run: Any) -> None:
    gateway.answer("GET", "/v1/admin/breakers", 200, {"items": [], "read_at": None})
    assert "every breaker is closed" in run("breakers", "--table").stdout
    breaker = {
        "provider": "elasticemail", "state": "open", "consecutive_failures": 3,
        "opened_until": "2026-12-01T10:00:30Z", "last_error": "HTTP 503",
        "updated_at": "2026-12-01T10:00:00Z",
    }  # fmt: skip
    gateway.answer("GET", "/v1/admin/breakers", 200, {"items": [breaker], "read_at": "now"})
    table = run("breakers", "--table").stdout
    assert "elasticemail" in table
    assert "open" in table
    assert "HTTP 503" in table


def test_redrive_waits_for_the_move_and_reports_counts(gateway: Any, run: Any) -> None:
    gateway.answer(
        "POST", "/v1/admin/dead-letters/redrive", 202, {"task_handle": "h", "messages_to_move": 2}
    )
    running = {"status": "RUNNING", "messages_moved": 1, "failure_reason": None}
    done = {"status": "COMPLETED", "messages_moved": 2, "failure_reason": None}
    gateway.answers(
        "GET",
        "/v1/admin/dead-letters",
        [{"messages": 1, "redrives": [running]}, {"messages": 0, "redrives": [done]}],
    )
    result = run("redrive", "--max-per-second", "10")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "started": {"task_handle": "h", "messages_to_move": 2},
        "redrive": done,
    }
    assert gateway.requests[0].content == b'{"max_messages_per_second":10}'


def test_a_failed_redrive_is_reported_and_exits_1(gateway: Any, run: Any) -> None:
    gateway.answer(
        "POST", "/v1/admin/dead-letters/redrive", 202, {"task_handle": "h", "messages_to_move": 2}
    )
    failed = {"status": "FAILED", "messages_moved": 0, "failure_reason": "AccessDenied"}
    gateway.answer("GET", "/v1/admin/dead-letters", 200, {"messages": 2, "redrives": [failed]})
    result = run("redrive", "--table")
    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    assert "AccessDenied" in result.stdout


def test_a_running_redrive_is_a_conflict(gateway: Any, run: Any) -> None:
    problem = {"error": "redrive_running", "message": "a redrive is running already"}
    gateway.answer("POST", "/v1/admin/dead-letters/redrive", 409, problem)
    result = run("redrive", "--no-wait")
    assert result.exit_code == 1
    assert "HTTP 409 redrive_running" in result.stderr


def test_json_and_table_exclude_each_other(gateway: Any, run: Any) -> None:
    result = run("breakers", "--json", "--table")
    assert result.exit_code == 2
    assert gateway.requests == []


def test_dead_letters_shows_the_depth_and_the_redrives(gateway: Any, run: Any) -> None:
    redrive = {
        "status": "COMPLETED", "started_at": "2026-12-01T10:00:00Z", "messages_moved": 7,
        "messages_to_move": 7, "failure_reason": None, "task_handle": None,
    }  # fmt: skip
    body = {"messages": 3, "messages_in_flight": 1, "redrives": [redrive]}
    gateway.answer("GET", "/v1/admin/dead-letters", 200, body)
    table = run("dead-letters", "--table")
    assert table.exit_code == 0, table.output
    assert "messages" in table.stdout
    assert "COMPLETED" in table.stdout
    assert json.loads(run("dead-letters").stdout) == body

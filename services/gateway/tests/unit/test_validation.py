"""intake.parse_email: every problem of a request body, each named by its field, at once."""

from typing import Any

import pytest

from mailstack_gateway import intake


def _errors(raw: object) -> dict[str, str]:
    with pytest.raises(intake.InvalidEmailError) as caught:
        intake.parse_email(raw)
    return {error.field: error.message for error in caught.value.errors}


def _addresses(count: int, domain: str) -> list[dict[str, str]]:
    return [{"email": f"user{index}@{domain}"} for index in range(count)]


def test_parses_a_valid_email_with_every_field(valid_email: dict[str, Any]) -> None:
    raw = valid_email | {
        "cc": [{"email": "bo@example.com"}],
        "bcc": [{"email": "cy@example.com", "name": "Cy"}],
        "reply_to": {"email": "help@example.com"},
        "html": "<p>Thanks</p>",
    }

    email = intake.parse_email(raw)

    assert email.sender.email == "orders@example.com"
    assert email.sender.name == "Shop"
    assert [a.email for a in email.to] == ["alex@example.com"]
    assert [a.email for a in email.cc] == ["bo@example.com"]
    assert [(a.email, a.name) for a in email.bcc] == [("cy@example.com", "Cy")]
    assert email.reply_to is not None
    assert email.reply_to.email == "help@example.com"
    assert (email.subject, email.text, email.html) == (
        "Your order",
        "Thanks for your order.",
        "<p>Thanks</p>",
    )


def test_accepts_html_without_text(valid_email: dict[str, Any]) -> None:
    raw = {key: value for key, value in valid_email.items() if key != "text"}
    email = intake.parse_email(raw | {"html": "<p>Hi</p>"})
    assert (email.text, email.html) == (None, "<p>Hi</p>")


def test_reports_every_error_at_once_with_field_paths() -> None:
    raw = {
        "from": {"email": "not-an-address"},
        "to": [{"email": "also-bad"}, {"email": "fine@example.com"}],
        "cc": [
            {"email": "ok@example.com"},
            {"email": "b@example.com", "name": "B\r\nBcc: x@e.com"},
        ],
        "subject": "Hello",
    }

    errors = _errors(raw)

    assert set(errors) == {"from.email", "to[0].email", "cc[1].name", "text"}
    assert "valid email" in errors["from.email"]
    assert "CR or LF" in errors["cc[1].name"]
    assert "text or html" in errors["text"]


@pytest.mark.parametrize("subject", ["Hi\nBcc: victim@example.com", "Hi\rthere", "Hi\r\n"])
def test_rejects_cr_or_lf_in_the_subject(valid_email: dict[str, Any], subject: str) -> None:
    errors = _errors(valid_email | {"subject": subject})
    assert list(errors) == ["subject"]
    assert "CR or LF" in errors["subject"]


@pytest.mark.parametrize("field", ["from", "to", "reply_to"])
def test_rejects_cr_or_lf_in_a_display_name(valid_email: dict[str, Any], field: str) -> None:
    address = {"email": "x@example.com", "name": "X\nBcc: victim@example.com"}
    value: object = [address] if field == "to" else address
    path = "to[0].name" if field == "to" else f"{field}.name"

    errors = _errors(valid_email | {field: value})

    assert list(errors) == [path]


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("subject", "subject"),
        ("text", "text"),
        ("html", "html"),
        ("from", "from.name"),
        ("to", "to[0].name"),
        ("reply_to", "reply_to.name"),
    ],
)
def test_rejects_a_lone_surrogate_in_any_text_field(
    valid_email: dict[str, Any], field: str, path: str
) -> None:
    # json.loads turns the valid JSON escape "\ud800" into a str that no UTF-8 encoder (the
    # database driver, the provider clients) can encode: it must be a 422, not a 500 later.
    broken = "Hi \ud800"
    address = {"email": "x@example.com", "name": broken}
    value: object = {"subject": broken, "text": broken, "html": broken, "to": [address]}.get(
        field, address
    )

    errors = _errors(valid_email | {field: value})

    assert path in errors


def test_requires_text_or_html(valid_email: dict[str, Any]) -> None:
    raw = {key: value for key, value in valid_email.items() if key != "text"}
    assert list(_errors(raw)) == ["text"]


def test_rejects_more_than_fifty_recipients_across_to_cc_and_bcc(
    valid_email: dict[str, Any],
) -> None:
    raw = valid_email | {
        "to": _addresses(20, "to.example.com"),
        "cc": _addresses(20, "cc.example.com"),
        "bcc": _addresses(11, "bcc.example.com"),
    }

    errors = _errors(raw)

    assert list(errors) == ["to"]
    assert "at most 50" in errors["to"]
    assert "got 51" in errors["to"]


def test_rejects_an_address_named_twice_across_to_cc_and_bcc(
    valid_email: dict[str, Any],
) -> None:
    raw = valid_email | {
        "to": [{"email": "user@example.com"}],
        "cc": [{"email": "other@example.com"}],
        "bcc": [{"email": "User@Example.com"}],
    }

    errors = _errors(raw)

    assert list(errors) == ["bcc[0].email"]
    assert "once" in errors["bcc[0].email"]


def test_accepts_exactly_fifty_recipients(valid_email: dict[str, Any]) -> None:
    raw = valid_email | {
        "to": _addresses(20, "to.example.com"),
        "cc": _addresses(20, "cc.example.com"),
        "bcc": _addresses(10, "bcc.example.com"),
    }
    email = intake.parse_email(raw)
    assert len(email.to) + len(email.cc) + len(email.bcc) == 50


def test_rejects_unknown_fields_at_the_top_and_in_addresses(valid_email: dict[str, Any]) -> None:
    raw = valid_email | {
        "priority": "high",
        "to": [{"email": "alex@example.com", "nickname": "Al"}],
    }

    errors = _errors(raw)

    assert set(errors) == {"priority", "to[0].nickname"}
    assert all("Extra inputs" in message for message in errors.values())


def test_requires_from_to_and_subject() -> None:
    errors = _errors({"text": "hello"})
    assert set(errors) == {"from", "to", "subject"}


def test_rejects_an_empty_recipient_list(valid_email: dict[str, Any]) -> None:
    assert list(_errors(valid_email | {"to": []})) == ["to"]


@pytest.mark.parametrize("raw", [[], ["a"], "an email", 42, None, True])
def test_rejects_a_body_that_is_not_a_json_object(raw: object) -> None:
    assert _errors(raw) == {"body": "must be a JSON object"}


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (("to", 0, "email"), "to[0].email"),
        (("from", "email"), "from.email"),
        (("cc", 1, "name"), "cc[1].name"),
        (("subject",), "subject"),
        (("to", 3), "to[3]"),
        ((), "body"),
    ],
)
def test_field_path_names_fields_the_way_the_api_does(
    location: tuple[int | str, ...], expected: str
) -> None:
    assert intake.field_path(location) == expected

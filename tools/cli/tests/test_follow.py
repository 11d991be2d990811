"""tail's follower: pages read until the oldest email still open, nothing reported twice."""

from typing import Any

from mailstack_cli.follow import Follower


def _email(email_id: str, status: str, minute: int) -> dict[str, Any]:
    return {"id": email_id, "status": status, "created_at": f"2026-12-01T10:{minute:02d}:00Z"}


class Pages:
    """The list API over `emails` (newest first), `size` a page; counts the pages read."""

    def __init__(self, size: int) -> None:
        self.emails: list[dict[str, Any]] = []
        self.size = size
        self.read = 0

    def __call__(self, cursor: str | None) -> dict[str, Any]:
        self.read += 1
        start = int(cursor or 0)
        ordered = sorted(self.emails, key=lambda email: email["created_at"], reverse=True)
        more = start + self.size < len(ordered)
        return {
            "items": ordered[start : start + self.size],
            "next_cursor": str(start + self.size) if more else None,
        }


def test_an_open_email_pushed_off_the_first_page_is_still_followed() -> None:
    pages = Pages(size=2)
    pages.emails = [_email("a", "QUEUED", 0)]
    follower = Follower(pages)
    assert follower.poll() == []
    pages.emails += [_email("b", "QUEUED", 1), _email("c", "QUEUED", 2)]
    assert [(c.email["id"], c.before) for c in follower.poll()] == [("b", None), ("c", None)]
    pages.emails[0] = _email("a", "SENT", 0)  # now on the second page
    changes = follower.poll()
    assert [(c.email["id"], c.before, c.after) for c in changes] == [("a", "QUEUED", "SENT")]


def test_final_emails_behind_the_horizon_are_not_read_again() -> None:
    pages = Pages(size=1)
    pages.emails = [_email(f"e{n}", "FAILED", n) for n in range(5)]
    follower = Follower(pages)
    follower.poll()
    pages.read = 0
    assert follower.poll() == []
    # The newest one's page, and the next, which shows the horizon is reached; not all five.
    assert pages.read == 2


def test_a_sent_email_is_still_followed_for_its_provider_events() -> None:
    pages = Pages(size=1)
    pages.emails = [_email("a", "SENT", 0)]
    follower = Follower(pages)
    follower.poll()
    pages.emails = [_email("b", "BOUNCED", 1), _email("a", "DELIVERED", 0)]
    changes = [(c.email["id"], c.before, c.after) for c in follower.poll()]
    assert changes == [("a", "SENT", "DELIVERED"), ("b", None, "BOUNCED")]


def test_a_status_that_does_not_change_is_not_reported_again() -> None:
    pages = Pages(size=10)
    follower = Follower(pages)
    follower.poll()
    pages.emails = [_email("a", "PROCESSING", 0)]
    assert len(follower.poll()) == 1
    assert follower.poll() == []

"""`mailstack tail`: new emails and their status changes, from successive pages of the list API.

The list is newest first. Each poll reads pages until it reaches emails older than the oldest
one still worth watching (not yet final), so an email is followed until it is final even when
newer ones push it off the first page; the first poll only records what is there.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailstack_core.status import EmailStatus

Page = dict[str, Any]
FetchPage = Callable[[str | None], Page]
# A poll reads at most this many pages (of the list's largest size): a burst bigger than that
# is reported in part.
MAX_PAGES_PER_POLL = 10


@dataclass(frozen=True)
class Change:
    """`before` None: a new email."""

    email: dict[str, Any]
    before: str | None

    @property
    def after(self) -> str:
        status: str = self.email["status"]
        return status


def _created(email: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(email["created_at"])


def _is_final(status: str) -> bool:
    """No later change: SENT and most provider events may still be followed by others (a
    delivery, an open, a bounce), days later."""
    if status not in EmailStatus.__members__:
        return False
    value = EmailStatus(status)
    return value in (EmailStatus.FAILED, EmailStatus.CANCELED) or value.is_delivery_final


class Follower:
    def __init__(self, fetch_page: FetchPage) -> None:
        self._fetch_page = fetch_page
        self._statuses: dict[str, str] = {}
        # Emails created before this are not read again: all of them were final.
        self._horizon: datetime | None = None
        self._started = False

    def _emails(self) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        for _ in range(MAX_PAGES_PER_POLL):
            page = self._fetch_page(cursor)
            for email in page["items"]:
                if self._horizon is not None and _created(email) < self._horizon:
                    return
                yield email
            cursor = page.get("next_cursor")
            if not cursor or not self._started:
                return

    def poll(self) -> list[Change]:
        """What changed since the last poll, oldest first; nothing on the first."""
        changes = []
        seen = list(self._emails())
        for email in seen:
            before = self._statuses.get(email["id"])
            if self._started and before != email["status"]:
                changes.append(Change(email, before))
            self._statuses[email["id"]] = email["status"]
        self._advance_horizon(seen)
        self._started = True
        return list(reversed(changes))

    def _advance_horizon(self, seen: list[dict[str, Any]]) -> None:
        open_ones = [_created(email) for email in seen if not _is_final(email["status"])]
        if open_ones:
            self._horizon = min(open_ones)
        elif seen:
            self._horizon = max(_created(email) for email in seen)
        # What is behind the horizon is final and never read again: forget it.
        kept = {email["id"] for email in seen}
        self._statuses = {key: value for key, value in self._statuses.items() if key in kept}

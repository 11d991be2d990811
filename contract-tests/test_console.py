"""The web console in a real browser: Debian's headless Chromium, driven by Playwright, signs
in with the stack's key, finds an email it sent, opens its timeline, looks at the providers.
Screenshots are kept in .stack/artifacts/console/ each run."""

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from email_flows import SENT_OR_LATER, an_email, history, submit, wait_for_final
from mailstack_stubs.control import StubControl
from mailstack_testing.waiting import eventually

pytestmark = pytest.mark.e2e

# Debian's package (`make browser` installs it); Playwright never downloads a browser here.
CHROMIUM = Path("/usr/bin/chromium")
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the console's browser test needs Debian's chromium. "
            "Run `make browser` (as root or with sudo), or `apt-get install chromium`.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture
def artifacts(repo_root: Path) -> Path:
    folder = repo_root / ".stack" / "artifacts" / "console"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1180, "height": 860})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def _sign_in(page: Page, stack: Any, api_key: str) -> None:
    page.goto(f"{stack.gateway_url}/console/sign-in")
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()


def _wait_for_status(gateway: httpx.Client, email_id: str, status: str) -> None:
    eventually(
        lambda: gateway.get(f"/v1/emails/{email_id}").json()["status"],
        30,
        interval=0.2,
        until=lambda current: current == status,
        what=f"email {email_id} {status}",
    )


def _timeline(page: Page) -> list[tuple[str, list[str], list[str]]]:
    """Each timeline row: its status, its provider (if any), its failover note (if any)."""
    return [
        (
            item.locator(".badge").inner_text(),
            item.locator(".provider").all_inner_texts(),
            item.locator(".failover").all_inner_texts(),
        )
        for item in page.locator("ol.timeline > li.entry").all()
    ]


def test_an_email_is_followed_from_the_list_to_its_timeline(
    stack: Any,
    gateway: httpx.Client,
    api_key: str,
    elasticemail: StubControl,
    page: Page,
    artifacts: Path,
) -> None:
    tag = f"console-{uuid.uuid4().hex[:10]}"
    subject = f"Console receipt {tag}"
    email_id = submit(gateway, an_email(subject=subject, tags=[tag]))
    assert wait_for_final(gateway, email_id)["status"] in SENT_OR_LATER
    sent_by = [
        entry["provider"] for entry in history(gateway, email_id) if entry["status"] == "SENT"
    ]
    elasticemail.set_behaviour("error", status=503)
    failed_over = submit(gateway, an_email(subject=f"Failover {tag}", tags=[tag]))
    assert wait_for_final(gateway, failed_over)["status"] in SENT_OR_LATER
    elasticemail.reset()
    # The stubs report each delivery as the providers do; the timelines end with that event.
    for delivered in (email_id, failed_over):
        _wait_for_status(gateway, delivered, "DELIVERED")

    _sign_in(page, stack, api_key)
    expect(page).to_have_url(re.compile(r"/console/emails$"))
    expect(page.get_by_role("heading", name="Emails")).to_be_visible()
    page.get_by_label("Tag").fill(tag)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.emails tbody tr")).to_have_count(2)
    link = page.get_by_role("link", name=subject)
    expect(link).to_have_count(1)
    page.screenshot(path=artifacts / "console-emails.png", full_page=True)

    link.click()
    expect(page).to_have_url(re.compile(f"/console/emails/{email_id}$"))
    expect(page.get_by_test_id("email-status")).to_have_text("DELIVERED")
    expect(page.locator("ol.timeline > li.entry")).to_have_count(4)
    rows = _timeline(page)
    assert rows[:2] == [("QUEUED", [], []), ("PROCESSING", [], [])]
    # The provider's event may be recorded just before the processor's own SENT row.
    assert sorted(rows[2:]) == [("DELIVERED", sent_by, []), ("SENT", sent_by, [])]
    page.screenshot(path=artifacts / "console-email.png", full_page=True)

    page.goto(f"{stack.gateway_url}/console/emails/{failed_over}")
    expect(page.locator("ol.timeline > li.entry")).to_have_count(5)
    rows = _timeline(page)
    assert rows[:3] == [
        ("QUEUED", [], []),
        ("PROCESSING", [], []),
        ("FAILED", ["elasticemail"], []),
    ]
    assert sorted((status, provider) for status, provider, _ in rows[3:]) == [
        ("DELIVERED", ["sendgrid"]),
        ("SENT", ["sendgrid"]),
    ]
    # The first row after the failure names the provider that failed.
    assert [note for _, _, note in rows[3:] if note] == [["failover from elasticemail"]]
    page.screenshot(path=artifacts / "console-failover.png", full_page=True)

    page.get_by_role("link", name="Providers").click()
    expect(page.get_by_role("heading", name="Providers")).to_be_visible()
    expect(page.locator("table.providers")).to_be_visible()
    for provider in ("elasticemail", "sendgrid"):
        expect(page.locator(f'tr[data-provider="{provider}"]')).to_be_visible()
    chart = page.locator("figure.chart svg")
    expect(chart).to_be_visible()
    expect(chart.locator("g.minute")).to_have_count(60)
    assert int(page.get_by_test_id("chart-sent").inner_text()) >= 2
    page.screenshot(path=artifacts / "console-providers.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    page.goto(f"{stack.gateway_url}/console/emails")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))


def test_a_wrong_key_is_refused_with_a_message(stack: Any, page: Page, artifacts: Path) -> None:
    _sign_in(page, stack, f"ms_{'0' * 16}_{'A' * 43}")
    expect(page.get_by_role("alert")).to_have_text("That API key is not valid.")
    expect(page.get_by_label("API key")).to_be_visible()
    page.screenshot(path=artifacts / "console-wrong-key.png", full_page=True)


def test_a_post_without_its_csrf_token_is_refused(stack: Any, api_key: str) -> None:
    with httpx.Client(base_url=stack.gateway_url, timeout=10) as client:
        assert client.post("/console/sign-in", data={"api_key": api_key}).status_code == 403
        form = client.get("/console/sign-in")
        token = CSRF_FIELD.search(form.text)
        assert token, form.text
        signed_in = client.post(
            "/console/sign-in", data={"api_key": api_key, "csrf_token": token.group(1)}
        )
        assert signed_in.status_code == 303
        assert client.post("/console/sign-out").status_code == 403
        assert client.get("/console/emails").status_code == 200  # the session stands

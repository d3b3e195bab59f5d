"""End to end in a real Chromium (Debian's), driven by Playwright, against a
live server: two users in two tabs of one browser.

Chromium must be installed (``make test`` installs Debian's ``chromium`` when
it runs as root); if it is missing these tests fail, they never skip.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from session_ng.backends.redis import SessionStore

# The browser flow runs once, in the standalone pass.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.standalone]

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not path:
        raise RuntimeError(
            "Chromium is needed for the browser tests: apt-get install chromium "
            "(or set CHROMIUM to its path)."
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API runs an event loop on this thread, which makes
    # Django refuse ORM calls here (fixtures, flushes); they are not async.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(
                executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS
            )
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    # One context is one browser profile: both tabs share its cookie jar.
    ctx = browser.new_context()
    yield ctx
    ctx.close()


@pytest.fixture
def users(django_user_model) -> None:  # type: ignore[no-untyped-def]
    # A transactional test empties tables afterwards; make the users here.
    for name in ("alice", "bob"):
        user = django_user_model.objects.get_or_create(username=name)[0]
        user.set_password(f"{name}-password")
        user.save()


def sign_in(page: Page, base: str, username: str, alias: str | None = None) -> None:
    page.goto(base + ("/login/" if alias is None else f"/login/?_s={alias}"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", f"{username}-password")
    page.click("button:has-text('Sign in')")


def open_chooser(page: Page) -> None:
    """Open the account menu at the top right (a <details>)."""
    if page.locator("#account-chooser").get_attribute("open") is None:
        page.click("#account-chooser summary")


def other_accounts(page: Page) -> list[str]:
    return [
        f"{a.locator('.account-name').text_content()} ({a.get_attribute('data-alias')})"
        for a in page.locator("#accounts a[data-alias]").all()
    ]


def test_two_users_in_two_tabs_of_one_browser(context: BrowserContext, live_server, users) -> None:  # type: ignore[no-untyped-def]
    base = live_server.url
    first, second = context.new_page(), context.new_page()

    sign_in(first, base, "alice")
    expect(first.locator("#who")).to_have_text("alice")
    expect(first.locator("#alias")).to_have_text("0")

    # The second tab signs in through the first tab's "add another account" link.
    first.reload()
    add = first.locator("#add-account").get_attribute("href")
    assert add == "/login/?_s=1"
    sign_in(second, base, "bob", alias="1")
    expect(second.locator("#who")).to_have_text("bob")
    assert second.url == base + "/?_s=1"

    # Following links keeps each tab's account.
    for _ in range(2):
        first.click("#again")
        second.click("#again")
    expect(first.locator("#who")).to_have_text("alice")
    expect(second.locator("#who")).to_have_text("bob")
    expect(first.locator("#visits")).to_have_text("4")  # sign-in, reload, two clicks
    expect(second.locator("#visits")).to_have_text("3")  # sign-in, two clicks
    assert second.url == base + "/?_s=1"

    # Each tab's account menu offers the other account.
    open_chooser(first)
    assert other_accounts(first) == ["bob (1)"]
    screenshot(first, "account-chooser")
    first.click("#accounts a[data-alias='1']")
    expect(first.locator("#who")).to_have_text("bob")
    open_chooser(first)
    assert other_accounts(first) == ["alice (0)"]
    first.click("#accounts a[data-alias='0']")
    expect(first.locator("#who")).to_have_text("alice")

    # One browser, one cookie holding both sessions.
    (cookie,) = [c for c in context.cookies() if c["name"] == "sessionid"]
    assert cookie["value"].startswith("0.")
    assert "~1." in cookie["value"]
    assert cookie["httpOnly"] is True

    # Signing out of one keeps the other.
    bob_key = cookie["value"].split("~1.")[1]
    open_chooser(second)
    second.click("#logout")
    expect(second.locator("#who")).to_have_text("not signed in")
    first.reload()
    expect(first.locator("#who")).to_have_text("alice")
    # The page after sign-out counts a visit: alias 1 is a new, anonymous session.
    assert other_accounts(first) == ["guest (1)"]
    (cookie,) = [c for c in context.cookies() if c["name"] == "sessionid"]
    assert bob_key not in cookie["value"]
    assert not SessionStore().exists(bob_key)


SCREENSHOTS = Path(__file__).resolve().parent.parent / ".cache" / "screenshots"


def screenshot(page: Page, name: str) -> None:
    """Saved under .cache/screenshots/ to be looked at (docs/images/ has the
    README's copies)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def admin_user(page: Page) -> str:
    return page.locator("#user-tools strong").inner_text()


def test_the_real_admin_keeps_each_tabs_account(
    context: BrowserContext, live_server, users
) -> None:  # type: ignore[no-untyped-def]
    # The admin never heard of aliases: its links and its logout form carry
    # no _s. The Referer keeps each tab on its own account.
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username__in=["alice", "bob"]).update(
        is_staff=True, is_superuser=True
    )
    base = live_server.url
    first, second = context.new_page(), context.new_page()
    sign_in(first, base, "alice")
    sign_in(second, base, "bob", alias="1")

    first.goto(base + "/admin/")
    second.goto(base + "/admin/?_s=1")
    assert admin_user(first) == "ALICE"  # the admin shows it upper-case
    assert admin_user(second) == "BOB"

    # Its own links: the index, a changelist, a sort order, a change form.
    second.click("a[href='/admin/auth/user/']")
    expect(second).to_have_url(base + "/admin/auth/user/?_s=1")
    assert admin_user(second) == "BOB"
    second.click("th.column-username div.text a")  # href="?o=...": a new query string
    expect(second).to_have_url(re.compile(r".*/admin/auth/user/\?o=[-\d.]+&_s=1$"))
    second.click("a:text-is('alice')")
    expect(second).to_have_url(re.compile(r".*/admin/auth/user/\d+/change/\?.*_s=1"))
    assert admin_user(second) == "BOB"
    screenshot(second, "admin-bob-tab")
    first.click("a[href='/admin/auth/group/']")
    assert admin_user(first) == "ALICE"
    screenshot(first, "admin-alice-tab")

    # Its logout form (action="/admin/logout/") signs out this tab's account only.
    (cookie,) = [c for c in context.cookies() if c["name"] == "sessionid"]
    bob_key = cookie["value"].split("~1.")[1]
    second.click("#logout-form button")
    expect(second.locator("h1")).to_have_text("Logged out")
    assert "_s=1" in second.url
    screenshot(second, "admin-bob-logged-out")
    assert not SessionStore().exists(bob_key)
    first.reload()
    assert admin_user(first) == "ALICE"
    second.goto(base + "/admin/?_s=1")
    expect(second.locator("#id_username")).to_be_visible()  # bob's tab: the login form

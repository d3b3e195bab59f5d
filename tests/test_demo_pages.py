"""testproject's active-sessions page and event log, through real requests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from session_ng import api
from session_ng.aliases import parse_cookie
from session_ng.backends.redis import SessionStore
from testproject.demo import events
from testproject.demo.models import SessionEvent

pytestmark = pytest.mark.django_db
ALICE = {"username": "alice", "password": "alice-password"}
BOB = {"username": "bob", "password": "bob-password"}


@pytest.fixture
def event_log() -> Iterator[None]:
    events.connect()
    yield
    events.disconnect()


def signed_in(credentials: dict[str, str], agent: str) -> Client:
    client = Client(HTTP_USER_AGENT=agent)
    client.post("/login/", credentials)
    return client


def test_active_sessions_lists_devices_and_ends_one(django_user_model) -> None:  # type: ignore[no-untyped-def]
    laptop = signed_in(ALICE, "Laptop/1.0")
    phone = signed_in(ALICE, "Phone/2.0")
    page = laptop.get("/sessions/")
    rows = [s.info for s in page.context["sessions"]]
    assert {(s.user_agent, s.ip) for s in rows} == {
        ("Laptop/1.0", "127.0.0.1"),
        ("Phone/2.0", "127.0.0.1"),
    }
    assert b"this browser" in page.content
    phone_key = phone.cookies["sessionid"].value
    laptop_key = laptop.cookies["sessionid"].value
    # Session keys are credentials: the page names sessions by public_id only.
    assert phone_key.encode() not in page.content
    assert laptop_key.encode() not in page.content
    response = laptop.post(f"/sessions/{api.public_id(phone_key)}/end/")
    assert response.status_code == 302
    assert [
        s.user_agent for s in api.find_sessions(django_user_model.objects.get(username="alice"))
    ] == ["Laptop/1.0"]
    assert phone.get("/api/session/").json()["user"] is None


def test_a_user_cannot_end_someone_elses_session() -> None:
    alice = signed_in(ALICE, "A")
    bob = signed_in(BOB, "B")
    response = alice.post(f"/sessions/{api.public_id(bob.cookies['sessionid'].value)}/end/")
    assert response.status_code == 404
    assert bob.get("/api/session/").json()["user"] == "bob"


def test_sign_out_everywhere_else() -> None:
    here = signed_in(ALICE, "Here")
    elsewhere = [signed_in(ALICE, f"Other/{i}") for i in range(3)]
    here.post("/sessions/end-others/")
    assert [s.info.user_agent for s in here.get("/sessions/").context["sessions"]] == ["Here"]
    assert all(c.get("/api/session/").json()["user"] is None for c in elsewhere)


def test_the_event_log_shows_created_and_deleted(event_log) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.post("/login/", ALICE)
    key = client.cookies["sessionid"].value
    client.post("/logout/")
    kinds = [(e.kind, e.session_key_prefix) for e in SessionEvent.objects.order_by("pk")]
    assert kinds == [("created", key[:6]), ("deleted", key[:6])]
    page = client.get("/events/")
    row = (
        f'<tr><td>{{}}</td><td>deleted</td><td class="user">alice</td>'
        f"<td><code>{key[:6]}…</code></td></tr>"
    )
    at = SessionEvent.objects.get(kind="deleted").at.strftime("%H:%M:%S")
    assert row.format(at) in page.content.decode()


CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"


def test_active_sessions_name_devices_and_sign_in_times() -> None:
    chrome = signed_in(ALICE, CHROME_LINUX)
    signed_in(ALICE, FIREFOX_WINDOWS)
    signed_in(ALICE, "")
    page = chrome.get("/sessions/")
    devices = sorted(s.device for s in page.context["sessions"])
    assert devices == ["Chrome on Linux", "Firefox on Windows", "Unknown device"]
    html = page.content.decode()
    assert '<td class="device">Chrome on Linux</td>' in html
    for s in page.context["sessions"]:
        assert s.info.signed_in is not None
        assert abs((s.info.signed_in - s.info.created).total_seconds()) < 60


def test_sign_out_of_all_accounts_of_this_browser(r) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.post("/login/", ALICE)
    client.post("/login/?_s=1", BOB)
    client.get("/?_s=2")  # an anonymous one too
    keys = list(parse_cookie(client.cookies["sessionid"].value).values())
    assert len(keys) == 3
    response = client.post("/logout/all/?_s=1")
    assert response.status_code == 302
    assert response["Location"] == "/?_s=0"
    assert response.cookies["sessionid"].value == ""  # deleted: no session left
    assert not any(SessionStore().exists(k) for k in keys)


def test_the_chat_page_needs_a_login_and_sets_the_short_idle_timeout(settings) -> None:  # type: ignore[no-untyped-def]
    settings.DEMO_CHAT_IDLE_SECONDS = 45
    client = Client()
    assert client.get("/chat/")["Location"] == "/login/?next=/chat/"
    client.post("/login/", ALICE)
    page = client.get("/chat/")
    assert page.status_code == 200
    assert b"a 45-second idle timeout" in page.content
    assert b'<script id="chat-alias" type="application/json">"0"</script>' in page.content
    assert client.session.get_expiry_age() == 45

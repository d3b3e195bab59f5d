"""testproject's active-sessions page and event log, through real requests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from session_ng import api
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
    rows = page.context["sessions"]
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
    assert [s.user_agent for s in here.get("/sessions/").context["sessions"]] == ["Here"]
    assert all(c.get("/api/session/").json()["user"] is None for c in elsewhere)


def test_the_event_log_shows_created_and_deleted(event_log) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.post("/login/", ALICE)
    key = client.cookies["sessionid"].value
    client.post("/logout/")
    kinds = [(e.kind, e.session_key_prefix) for e in SessionEvent.objects.order_by("pk")]
    assert kinds == [("created", key[:6]), ("deleted", key[:6])]
    page = client.get("/events/")
    assert f"deleted — session {key[:6]}".encode() in page.content


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

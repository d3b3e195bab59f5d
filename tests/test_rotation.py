"""Key rotation (cycle_key, login) never brings back or forks a session.

Runs on every topology: on Redis Cluster the new key lives in another slot
than the old one, and the rotation takes another path (session_ng.store.sessions._save_split).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model, login
from django.contrib.sessions.backends.base import UpdateError
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.signals import session_rotated

pytestmark = pytest.mark.django_db
NS = "session_ng"


def stored_sessions(r: Any) -> list[str]:
    """Every session key with a hash or shadow key in Redis."""
    names = [n.decode() for n in r.keys(f"{NS}:sessions:*")]
    return sorted({n.split("{")[1].split("}")[0] for n in names if not n.endswith(":event")})


def logged_in(user_id: str, **data: Any) -> str:
    s = SessionStore()
    s.update({"_auth_user_id": user_id, **data})
    s.save()
    assert s.session_key is not None
    return s.session_key


def loaded(key: str) -> SessionStore:
    s = SessionStore(key)
    assert "_auth_user_id" in s  # loaded, as by a request that read it
    return s


def test_cycle_key_of_a_session_deleted_meanwhile_refuses(r: Any) -> None:
    key = logged_in("21", cart=[1])
    rotating = loaded(key)
    SessionStore(key).delete()  # logged out in another request
    with pytest.raises(UpdateError):
        rotating.cycle_key()
    assert stored_sessions(r) == []
    assert set(r.hkeys(keys.user_index(NS, "21"))) == set()
    # The store holds nothing any more: a save makes no session either.
    assert rotating.session_key is None
    assert rotating.is_empty()


async def test_acycle_key_of_a_session_deleted_meanwhile_refuses(r: Any) -> None:
    key = logged_in("22")
    rotating = SessionStore(key)
    assert await rotating.ahas_key("_auth_user_id")
    await SessionStore(key).adelete()
    with pytest.raises(UpdateError):
        await rotating.acycle_key()
    assert stored_sessions(r) == []
    assert set(r.hkeys(keys.user_index(NS, "22"))) == set()


def test_two_rotations_of_one_session_leave_one_live_session(r: Any) -> None:
    """A double-submitted login form: both requests loaded the old session."""
    key = logged_in("23", cart=[1])
    first, second = loaded(key), loaded(key)
    rotated: list[str] = []

    def on_rotated(sender: Any, new_session_key: str, **kwargs: Any) -> None:
        rotated.append(new_session_key)

    session_rotated.connect(on_rotated)
    try:
        first.cycle_key()
        with pytest.raises(UpdateError):
            second.cycle_key()
    finally:
        session_rotated.disconnect(on_rotated)
    assert first.session_key is not None
    assert rotated == [first.session_key]
    assert stored_sessions(r) == [first.session_key]
    assert set(r.hkeys(keys.user_index(NS, "23"))) == {first.session_key.encode()}
    assert SessionStore(first.session_key).load() == {"_auth_user_id": "23", "cart": [1]}


async def test_two_async_rotations_of_one_session_leave_one_live_session(r: Any) -> None:
    key = logged_in("24")
    first, second = SessionStore(key), SessionStore(key)
    for s in (first, second):
        assert await s.ahas_key("_auth_user_id")
    await second.acycle_key()
    with pytest.raises(UpdateError):
        await first.acycle_key()
    assert second.session_key is not None
    assert stored_sessions(r) == [second.session_key]


def test_many_concurrent_rotations_leave_one_live_session(r: Any) -> None:
    key = logged_in("25")
    stores = [loaded(key) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def rotate(s: SessionStore) -> None:
        barrier.wait()
        try:
            s.cycle_key()
        except UpdateError:
            outcomes.append("refused")
        else:
            outcomes.append("rotated")

    threads = [threading.Thread(target=rotate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["rotated"]
    (winner,) = [s.session_key for s in stores if s.session_key is not None]
    assert stored_sessions(r) == [winner]
    assert set(r.hkeys(keys.user_index(NS, "25"))) == {winner.encode()}


# --- through the middleware: login() of a session logged out meanwhile ----------


def login_after_logout_elsewhere(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = 1  # the request has the session loaded
    assert request.session.session_key is not None
    SessionStore(request.session.session_key).delete()  # "sign out everywhere"
    login(request, get_user_model().objects.get(username="alice"))
    return HttpResponse("signed in")


def count_visit(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]))


urlpatterns = [
    path("visit/", count_visit),
    path("login-after-logout/", login_after_logout_elsewhere),
]


@pytest.mark.urls(__name__)
def test_login_into_a_session_deleted_meanwhile_answers_400(r: Any) -> None:
    client = Client()
    assert client.get("/visit/").content == b"1"
    response = client.post("/login-after-logout/")
    assert response.status_code == 400
    assert stored_sessions(r) == []
    assert client.cookies["sessionid"].value == ""  # told to forget it
    assert r.keys(f"{NS}:users:*") == []

"""Real requests through testproject (Django's SessionMiddleware + this engine)."""

from __future__ import annotations

import pytest
import redis
from django.http import HttpResponse
from django.test import AsyncClient, Client

from session_ng import keys

pytestmark = pytest.mark.django_db


def session_keys_in(r: redis.Redis) -> list[str]:
    prefix = b"session_ng:sessions:{"
    names = [k for k in r.scan_iter() if k.startswith(prefix) and k.endswith(b"}")]
    return sorted(k.decode()[len(prefix) : -1] for k in names)


def test_visits_are_counted_in_one_hash(r: redis.Redis) -> None:
    client = Client()
    for _ in range(3):
        response = client.get("/")
    assert response.context["visits"] == 3
    (key,) = session_keys_in(r)
    assert client.cookies["sessionid"].value == key
    assert r.hget(keys.session_hash("session_ng", key), ".visits") == b"3"


def test_login_rotates_the_key_and_indexes_the_user(r: redis.Redis, django_user_model) -> None:  # type: ignore[no-untyped-def]
    user = django_user_model.objects.get(username="alice")
    client = Client()
    client.get("/")
    before = client.cookies["sessionid"].value
    response = client.post("/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    after = client.cookies["sessionid"].value
    assert after != before
    assert session_keys_in(r) == [after]
    stored = r.hgetall(keys.session_hash("session_ng", after))
    assert stored[b"u"] == str(user.pk).encode()
    assert stored[b".visits"] == b"1"  # carried over by cycle_key
    assert set(r.hkeys(keys.user_index("session_ng", str(user.pk)))) == {after.encode()}
    assert client.get("/api/session/").json()["user"] == "alice"


def test_logout_ends_the_session_and_its_index_entry(r: redis.Redis, django_user_model) -> None:  # type: ignore[no-untyped-def]
    user = django_user_model.objects.get(username="bob")
    client = Client()
    client.post("/login/", {"username": "bob", "password": "bob-password"})
    logged_in = client.cookies["sessionid"].value
    client.post("/logout/")
    assert r.exists(keys.session_hash("session_ng", logged_in)) == 0
    assert r.exists(keys.user_index("session_ng", str(user.pk))) == 0
    assert client.get("/api/session/").json()["user"] is None


def test_a_forged_cookie_gets_a_fresh_session_and_writes_no_junk(r: redis.Redis) -> None:
    client = Client()
    for forged in ("x" * 32, "../../etc/passwd", "{abc}*", "A" * 40):
        client.cookies["sessionid"] = forged
        response = client.get("/")
        assert response.context["visits"] == 1
        new = client.cookies["sessionid"].value
        assert new != forged
        assert keys.is_valid_session_key(new)
    assert len(session_keys_in(r)) == 4
    assert all(keys.is_valid_session_key(k) for k in session_keys_in(r))


async def test_requests_through_asgi(r: redis.Redis) -> None:
    client = AsyncClient()
    response = await client.post("/api/session/", {"colour": "blue"})
    assert response.json()["session"] == {"colour": "blue"}
    key = client.cookies["sessionid"].value
    assert r.hget(keys.session_hash("session_ng", key), ".colour") == b'"blue"'
    response = await client.get("/api/session/")
    assert response.json()["session"] == {"colour": "blue"}


@pytest.mark.parametrize(
    ("stored", "age"),
    [
        *((value, 1209600) for value in (b'"garbage"', b"[1]", b"{}", b"1e400", b"NaN", b"true")),
        (b"-Infinity", 1209600),
        # A number, only too large: capped at MAX_INACTIVE_SECONDS (31 years).
        (b"1e30", 10**9),
    ],
)
async def test_a_corrupted_expiry_means_the_default_one(
    r: redis.Redis, stored: bytes, age: int
) -> None:
    # _session_expiry is handed to Django's expiry code, which trusts it: a
    # stored value no set_expiry() writes failed the request, or (true) gave
    # the cookie a one-second life while Redis kept the session two weeks.
    for client in (Client(), AsyncClient()):
        r.flushdb()
        first = client.get("/")
        if not isinstance(first, HttpResponse):
            first = await first
        key = client.cookies["sessionid"].value
        name = keys.session_hash("session_ng", key)
        r.hset(name, "X", stored)
        response = client.get("/")
        if not isinstance(response, HttpResponse):
            response = await response
        assert response.status_code == 200
        assert response.context["visits"] == 2
        assert response.cookies["sessionid"]["max-age"] == age
        # Written by nobody since: the server-side timeout is as it was.
        assert r.hget(name, "i") == b"1209600"


def test_a_naive_expiry_datetime_is_read_in_the_default_time_zone(r: redis.Redis) -> None:
    from datetime import datetime, timedelta

    from django.utils import timezone

    from session_ng.backends.redis import SessionStore

    s = SessionStore()
    s["a"] = 1
    when = timezone.make_naive(timezone.now() + timedelta(hours=1))
    s.set_expiry(when)  # naive, with USE_TZ = True
    assert 3590 <= s.get_expiry_age() <= 3600
    assert timezone.is_aware(s.get_expiry_date())
    s.save()
    expires_at = int(r.hget(keys.session_hash("session_ng", s.session_key), "e") or 0)
    aware = timezone.make_aware(when, timezone.get_default_timezone())
    assert expires_at == int(aware.timestamp() * 1000)
    assert isinstance(when, datetime)

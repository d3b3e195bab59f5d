"""Stored values no save writes (by hand, another program, a bad restore) get a
clear answer, never a 500: a timestamp past the calendar, a user index or an
expiration bucket of the wrong type, a ``_session_expiry`` in year 1."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client

from session_ng import api, keys
from session_ng.backends.redis import SessionStore
from session_ng.store.records import bucket_minute

pytestmark = pytest.mark.django_db
NS = "session_ng"
ALICE = {"username": "alice", "password": "alice-password"}


def signed_in() -> tuple[Client, str]:
    client = Client()
    assert client.post("/login/", ALICE).status_code == 302
    return client, client.cookies["sessionid"].value


def alice_pk(django_user_model: Any) -> str:
    return str(django_user_model.objects.get(username="alice").pk)


def test_a_15_digit_expires_at_does_not_fail_the_sessions_page(
    r: Any, django_user_model: Any
) -> None:
    client, key = signed_in()
    r.hset(keys.session_hash(NS, key), "e", "999999999999999")  # year 33658
    response = client.get("/sessions/")
    assert response.status_code == 200
    (info,) = api.find_sessions(alice_pk(django_user_model))
    assert info.session_key == key
    assert info.expires == datetime.max.replace(tzinfo=UTC)


def test_a_15_digit_accessed_and_created_do_not_fail_find_sessions(
    r: Any, django_user_model: Any
) -> None:
    _, key = signed_in()
    r.hset(keys.session_hash(NS, key), mapping={"c": "-99999999999999"})
    (info,) = api.find_sessions(alice_pk(django_user_model))
    assert info.created == datetime.min.replace(tzinfo=UTC)


def test_login_repairs_a_user_index_of_the_wrong_type(
    r: Any, django_user_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    index = keys.user_index(NS, alice_pk(django_user_model))
    r.set(index, "junk")
    with caplog.at_level(logging.WARNING, logger="session_ng"):
        client, key = signed_in()
    assert client.get("/api/session/").json()["user"] == "alice"
    # Replaced by a hash that lists the session: "sign out everywhere" finds it.
    assert r.hkeys(index) == [key.encode()]
    assert f"{index} was a key of the wrong type; replaced" in caplog.text
    assert api.delete_sessions(alice_pk(django_user_model)) == 1


def test_logout_with_a_user_index_of_the_wrong_type(r: Any, django_user_model: Any) -> None:
    client, key = signed_in()
    r.delete(keys.user_index(NS, alice_pk(django_user_model)))
    r.set(keys.user_index(NS, alice_pk(django_user_model)), "junk")
    assert client.post("/logout/").status_code == 302
    assert r.exists(keys.session_hash(NS, key)) == 0
    assert client.get("/api/session/").json()["user"] is None


def test_sessions_are_made_while_their_bucket_is_of_the_wrong_type(
    r: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Every minute a session made in the next few seconds could be filed under.
    now = int(time.time() * 1000)
    first = bucket_minute(now + settings.SESSION_COOKIE_AGE * 1000)
    junk = [keys.expiration_bucket(NS, m) for m in range(first, first + 2)]
    for bucket in junk:
        r.set(bucket, "junk")
    client = Client()
    with caplog.at_level(logging.WARNING, logger="session_ng"):
        assert client.get("/").status_code == 200
        assert client.get("/").status_code == 200
    key = client.cookies["sessionid"].value
    assert SessionStore(key).load()["visits"] == 2
    assert "is a key of the wrong type; skipped" in caplog.text
    # Left for the sweep, which deletes a bucket that is no set when its minute comes.
    assert [r.type(b) for b in junk] == [b"string", b"string"]


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Pacific/Kiritimati"])
@pytest.mark.parametrize(
    "stored", ["0001-01-01T00:00:00", "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59"]
)
def test_a_session_expiry_at_the_ends_of_the_calendar_answers_without_a_500(
    r: Any, settings: Any, stored: str, zone: str
) -> None:
    settings.TIME_ZONE = zone
    client = Client()
    assert client.get("/").status_code == 200
    key = client.cookies["sessionid"].value
    r.hset(keys.session_hash(NS, key), "X", json.dumps(stored))
    response = client.get("/")
    assert response.status_code == 200
    cookie = response.cookies["sessionid"]
    if stored.startswith("0001"):
        assert cookie["max-age"] == 0  # the browser drops it: the session is over
    else:
        assert cookie["max-age"] > 365 * 24 * 3600


def test_the_sessions_page_with_a_user_index_of_the_wrong_type(
    r: Any, django_user_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = signed_in()
    index = keys.user_index(NS, alice_pk(django_user_model))
    r.delete(index)
    r.set(index, "junk")
    with caplog.at_level(logging.WARNING, logger="session_ng"):
        assert client.get("/sessions/").status_code == 200
        assert api.find_sessions(alice_pk(django_user_model)) == []
    assert f"{index} is a key of the wrong type; no sessions listed" in caplog.text


def test_junk_in_a_user_index_is_dropped_and_the_sessions_listed(
    r: Any, django_user_model: Any
) -> None:
    client, key = signed_in()
    other = SessionStore()
    other["_auth_user_id"] = alice_pk(django_user_model)
    other.save()
    assert other.session_key is not None
    r.set(keys.session_hash(NS, other.session_key), "junk")  # corrupt: not listed
    index = keys.user_index(NS, alice_pk(django_user_model))
    r.hset(index, mapping={b"\xff\xfe": "", "short": ""})
    assert client.get("/sessions/").status_code == 200
    (info,) = api.find_sessions(alice_pk(django_user_model))
    assert info.session_key == key
    assert r.hkeys(index) == [key.encode()]

"""Corrupted stored data and hostile input: logged, dropped, never a crash."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from session_ng import keys
from session_ng.backends.redis import SessionStore


def make(**attrs: object) -> tuple[SessionStore, str]:
    s = SessionStore()
    s.update(attrs)
    s.save()
    assert s.session_key is not None
    return s, keys.session_hash("session_ng", s.session_key)


def test_undecodable_attribute_is_logged_dropped_and_left_in_place(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    s, name = make(good=1, bad=2)
    r.hset(name, ".bad", b"\xff{not json")
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        t = SessionStore(s.session_key)
        assert dict(t.items()) == {"good": 1}
    (rec,) = caplog.records
    assert rec.name == "django.security.SuspiciousSession"
    assert "attribute 'bad'" in rec.getMessage()
    assert s.session_key not in rec.getMessage()  # keys are secrets
    # Saving other changes does not destroy the unreadable field.
    t["good"] = 5
    t.save()
    assert r.hget(name, ".bad") == b"\xff{not json"
    assert r.hget(name, ".good") == b"5"
    # Setting it again overwrites it.
    t["bad"] = 7
    t.save()
    assert SessionStore(s.session_key)["bad"] == 7


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("i", b"soon"),
        ("a", b""),
        ("a", b"\x00\x01"),
        ("c", b"yesterday"),
        ("e", b"never"),
        ("b", b"{}"),
        # Numbers Lua's tonumber() takes but no save writes; "inf" and the
        # huge ones made PEXPIRE fail (a 500), the others slid the timer
        # before Python found the record corrupt.
        ("i", b"inf"),
        ("i", b"1e300"),
        ("i", b"1209600.0001"),
        ("i", b"99999999999999"),
        ("c", b"1.5"),
        ("a", b"0x10"),
        ("r", b"x"),
    ],
)
def test_unreadable_metadata_means_no_session_and_nothing_written(
    r: redis.Redis, caplog: pytest.LogCaptureFixture, field: str, value: bytes
) -> None:
    s, name = make(a=1)
    r.hset(name, field, value)
    time.sleep(0.06)
    before = r.hgetall(name)
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        t = SessionStore(s.session_key)
        assert t.get("a") is None
    assert t.session_key is None
    assert "unreadable metadata" in caplog.text
    assert r.hgetall(name) == before  # "accessed" not bumped: nothing written
    assert r.pttl(name) < (1209600 + 60) * 1000 + 300_000 - 50  # TTL not slid either


def test_missing_metadata_field_is_corrupt(r: redis.Redis) -> None:
    s, name = make(a=1)
    r.hdel(name, "i")
    assert SessionStore(s.session_key).load() == {}


def test_undecodable_field_name_is_dropped(r: redis.Redis) -> None:
    s, name = make(a=1)
    r.hset(name, b".\xff\xfe", b"1")
    assert dict(SessionStore(s.session_key).items()) == {"a": 1}


def test_a_key_of_the_wrong_type_is_treated_as_corrupt(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    key = "b" * 32
    r.set(keys.session_hash("session_ng", key), "junk")
    r.set(keys.session_shadow("session_ng", key), "")
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        s = SessionStore(key)
        assert s.load() == {}
    assert s.session_key is None
    assert "wrong type" in caplog.text
    # A save then makes a new session under a new key; the junk is left alone.
    s["a"] = 1
    s.save()
    assert s.session_key != key
    assert r.get(keys.session_hash("session_ng", key)) == b"junk"
    assert SessionStore(s.session_key)["a"] == 1


def test_attribute_names_with_odd_characters_round_trip(r: redis.Redis) -> None:
    odd = {"a:b": 1, "{x}": 2, "ü": 3, "": 4, "sp ace": 5}
    s, name = make(**odd)
    assert dict(SessionStore(s.session_key).items()) == odd
    assert r.hget(name, ".{x}") == b"2"
    assert r.hget(name, ".ü".encode()) == b"3"


@pytest.mark.parametrize("stored", [b'"abc"', b"{}", b"[1]", b"99999999999999999999999"])
@pytest.mark.django_db
def test_a_user_id_that_is_no_pk_is_dropped_not_a_500(
    r: redis.Redis, caplog: pytest.LogCaptureFixture, stored: bytes
) -> None:
    from django.test import Client

    client = Client()
    client.get("/")  # a session with a visit counter
    name = keys.session_hash("session_ng", client.cookies["sessionid"].value)
    r.hset(name, "I", stored)
    r.hset(name, "B", b'"django.contrib.auth.backends.ModelBackend"')
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        response = client.get("/api/session/")
    assert response.status_code == 200
    assert response.json()["user"] is None  # anonymous
    assert "is no user id" in caplog.text
    assert r.hget(name, "I") == stored  # left as it is

"""Which incoming session keys may reach Redis: Django's minimum of 8
characters, restricted to [a-z0-9] and at most 128 (docs/engine.rst)."""

from __future__ import annotations

import pytest
import redis
from django.test import Client

from session_ng import keys
from session_ng.aliases import format_cookie, parse_cookie
from session_ng.backends.redis import SessionStore

pytestmark = pytest.mark.django_db

REFUSED = [
    "a" * 7,
    "1234567",
    "a" * 129,
    "Abcdefgh",
    "abcd-efgh",
    "abcd.efgh",
    "abc{defg}h",
    "abcdefg*",
    "abcd:efgh",
    "abcdéfgh",
]


@pytest.mark.parametrize("key", ["abcdefgh", "12345678", "a" * 128, "z0" * 16])
def test_keys_django_accepts_in_a_a_z0_9_up_to_128_are_accepted(key: str) -> None:
    assert keys.is_valid_session_key(key)
    session = SessionStore(key)
    assert session.session_key == key


@pytest.mark.parametrize("key", REFUSED)
def test_other_keys_are_refused(key: str) -> None:
    assert not keys.is_valid_session_key(key)
    assert SessionStore(key).session_key is None


@pytest.mark.parametrize("key", ["abcdefgh", "a" * 128])
def test_a_short_or_long_key_round_trips_through_redis(key: str, r: redis.Redis) -> None:
    session = SessionStore(key)
    session.save(must_create=True)  # as create() does, with this key
    assert session.session_key == key
    session["colour"] = "blue"
    session.save()
    assert r.hget(keys.session_hash("session_ng", key), ".colour") == b'"blue"'
    assert SessionStore(key).load() == {"colour": "blue"}


@pytest.mark.parametrize("key", REFUSED)
@pytest.mark.parametrize("shape", ["bare", "default pair", "alias pair"])
def test_a_refused_key_in_the_cookie_never_reaches_redis(
    key: str, shape: str, r: redis.Redis, roundtrips
) -> None:  # type: ignore[no-untyped-def]
    value = {"bare": key, "default pair": f"0.{key}", "alias pair": f"0.{'b' * 32}~1.{key}"}[shape]
    client = Client()
    client.cookies["sessionid"] = value
    # "/" counts visits: the request writes a new session, so Redis is talked to.
    response = client.get("/?_s=1" if shape == "alias pair" else "/")
    assert response.status_code == 200
    assert response.context["visits"] == 1
    sent = b"".join(roundtrips.commands)
    assert sent, "the request wrote its new session"
    assert key.encode() not in sent
    (written,) = [k for k in r.scan_iter() if k.endswith(b":expires")]
    new_key = written.decode().split("{")[1].split("}")[0]
    assert len(new_key) == 32
    assert all(key.encode() not in name for name in r.scan_iter())


@pytest.mark.parametrize("key", REFUSED)
def test_a_refused_key_in_the_header_never_reaches_redis(
    key: str, r: redis.Redis, roundtrips
) -> None:  # type: ignore[no-untyped-def]
    response = Client().get("/api/session/", headers={"X-Auth-Token": key})
    assert response.json() == {"user": None, "session": {}}
    assert roundtrips.count == 0
    assert r.dbsize() == 0


def test_the_alias_cookie_stays_unambiguous_with_8_character_keys() -> None:
    # A bare key never holds "." or "~", and every pair does: the two shapes
    # cannot be mistaken for each other, however short the key.
    assert parse_cookie("abcdefgh") == {"0": "abcdefgh"}
    assert parse_cookie("0.abcdefgh") == {"0": "abcdefgh"}
    assert parse_cookie("1.abcdefgh") == {"1": "abcdefgh"}
    assert parse_cookie("0.abcdefgh~1.12345678") == {"0": "abcdefgh", "1": "12345678"}
    assert parse_cookie("1.abcdefg") == {}  # 7 characters
    assert parse_cookie("0.abcdefgh~1.abcdefg") == {"0": "abcdefgh"}
    assert parse_cookie(f"0.abcdefgh~1.{'a' * 129}") == {"0": "abcdefgh"}
    # A dot always makes a pair, even where both halves could be keys.
    assert parse_cookie("abcdefgh.12345678") == {"abcdefgh": "12345678"}
    sessions = {"0": "abcdefgh", "1": "12345678", "work": "a" * 128}
    assert parse_cookie(format_cookie(sessions)) == sessions

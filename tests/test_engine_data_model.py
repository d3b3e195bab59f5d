"""What the engine writes to Redis: every key, field and TTL, exactly."""

from __future__ import annotations

import math
import time

import pytest
import redis

from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.repository import BUCKET_KEEP_MS, GRACE_MS

NS = "session_ng"
AGE_MS = 1209600 * 1000  # Django's default SESSION_COOKIE_AGE
# Its renewal period (a hundredth, at most a minute): each save or renewal
# grants the idle timeout plus this, so no read in between need renew it.
PERIOD_MS = 60_000
LIFE_MS = AGE_MS + PERIOD_MS


def hash_key(session_key: str) -> str:
    return keys.session_hash(NS, session_key)


def shadow_key(session_key: str) -> str:
    return keys.session_shadow(NS, session_key)


def test_new_session_writes_hash_shadow_bucket_and_nothing_else(r: redis.Redis) -> None:
    before = int(time.time() * 1000)
    s = SessionStore()
    s["cart"] = [1, 2]
    s.save()
    after = int(time.time() * 1000)
    key = s.session_key
    assert key is not None

    stored = r.hgetall(hash_key(key))
    created = int(stored[b"created"])
    assert before <= created <= after
    bucket = math.ceil((created + LIFE_MS) / 60000)
    assert stored == {
        b"created": str(created).encode(),
        b"accessed": str(created).encode(),
        b"max_inactive": b"1209600",
        b"bucket": str(bucket).encode(),
        b"attr:cart": b"[1,2]",
    }
    assert r.get(shadow_key(key)) == b""
    # The shadow key lives exactly the session's life, the hash 300 s longer.
    assert LIFE_MS - 2000 < r.pttl(shadow_key(key)) <= LIFE_MS
    assert LIFE_MS + GRACE_MS - 2000 < r.pttl(hash_key(key)) <= LIFE_MS + GRACE_MS
    bucket_key = keys.expiration_bucket(NS, bucket)
    assert r.smembers(bucket_key) == {key.encode()}
    assert abs(r.pexpiretime(bucket_key) - (bucket * 60000 + BUCKET_KEEP_MS)) <= 1
    assert sorted(r.keys()) == sorted(
        [hash_key(key).encode(), shadow_key(key).encode(), bucket_key.encode()]
    )


def test_logged_in_session_is_in_its_users_index(r: redis.Redis) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "42"
    s.save()
    key = s.session_key
    assert key is not None
    assert r.hget(hash_key(key), "user") == b"42"
    index = keys.user_index(NS, "42")
    assert index == "session_ng:users:{42}"
    assert r.smembers(index) == {key.encode()}
    assert LIFE_MS + GRACE_MS - 2000 < r.pttl(index) <= LIFE_MS + GRACE_MS


def test_user_ids_are_quoted_in_index_names() -> None:
    assert keys.user_index(NS, "a}b:{*?") == "session_ng:users:{a%7Db%3A%7B%2A%3F}"


def test_logout_by_removing_the_user_leaves_the_index(r: redis.Redis) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "42"
    s.save()
    del s["_auth_user_id"]
    s.save()
    key = s.session_key
    assert key is not None
    assert r.hget(hash_key(key), "user") is None
    assert r.exists(keys.user_index(NS, "42")) == 0


def test_changing_user_moves_between_indexes(r: redis.Redis) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "1"
    s.save()
    s["_auth_user_id"] = "2"
    s.save()
    key = s.session_key
    assert key is not None
    assert r.exists(keys.user_index(NS, "1")) == 0
    assert r.smembers(keys.user_index(NS, "2")) == {key.encode()}
    assert r.hget(hash_key(key), "user") == b"2"


def test_cycle_key_moves_everything_to_the_new_key(r: redis.Redis) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "5"
    s["a"] = "b"
    s.save()
    old = s.session_key
    assert old is not None
    created = r.hget(hash_key(old), "created")
    s.cycle_key()
    new = s.session_key
    assert new is not None
    assert new != old
    assert r.exists(hash_key(old), shadow_key(old)) == 0
    stored = r.hgetall(hash_key(new))
    assert stored[b"attr:a"] == b'"b"'
    assert stored[b"user"] == b"5"
    # A rotated session is the same session: it keeps its creation time.
    assert stored[b"created"] == created
    assert r.smembers(keys.user_index(NS, "5")) == {new.encode()}
    bucket_key = keys.expiration_bucket(NS, int(stored[b"bucket"]))
    assert r.smembers(bucket_key) == {new.encode()}


def test_delete_removes_session_keys_and_index_entry(r: redis.Redis) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "9"
    s.save()
    key = s.session_key
    assert key is not None
    other = SessionStore()
    # A store that never loaded it still cleans the owner's index.
    other.delete(key)
    assert r.exists(hash_key(key), shadow_key(key), keys.user_index(NS, "9")) == 0


def test_flush_ends_the_session(r: redis.Redis) -> None:
    s = SessionStore()
    s["x"] = 1
    s.save()
    key = s.session_key
    assert key is not None
    s.flush()
    assert s.session_key is None
    assert r.exists(hash_key(key), shadow_key(key)) == 0


def test_namespace_prefixes_every_key(r: redis.Redis, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "NAMESPACE": "shop.eu"}
    s = SessionStore()
    s["_auth_user_id"] = "3"
    s.save()
    names = sorted(k.decode() for k in r.scan_iter())
    assert len(names) == 4
    assert all(name.startswith("shop.eu:") for name in names)


def test_load_of_unknown_key_writes_nothing(r: redis.Redis) -> None:
    s = SessionStore("a" * 32)
    assert s.load() == {}
    assert s.session_key is None
    assert r.dbsize() == 0


@pytest.mark.parametrize(
    "bad",
    [
        *("", "short", "a" * 7, "1234567", "a" * 129, "A" * 32, "Abcdefgh"),
        *("{" + "a" * 32 + "}", "a" * 31 + "*", "abcd:efgh", "abcdefg?", "é" * 32, "abcdefg\n"),
    ],
)
def test_malformed_keys_never_reach_redis(r: redis.Redis, bad: str, roundtrips) -> None:  # type: ignore[no-untyped-def]
    s = SessionStore(bad)
    assert s.session_key is None
    assert s.exists(bad) is False
    s.delete(bad)
    assert s.load() == {}
    assert roundtrips.count == 0
    assert r.dbsize() == 0

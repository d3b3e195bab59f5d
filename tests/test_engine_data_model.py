"""What the engine writes to Redis: every key, field and TTL, exactly."""

from __future__ import annotations

import math
import time

import pytest
import redis

from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.store.records import BUCKET_KEEP_MS, GRACE_MS

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
    created = int(stored[b"c"])
    assert before <= created <= after
    bucket = math.ceil((created + LIFE_MS) / 60000)
    assert stored == {
        b"c": str(created).encode(),
        b"a": str(created).encode(),
        b"i": b"1209600",
        b"b": str(bucket).encode(),
        b".cart": b"[1,2]",
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
    assert r.hget(hash_key(key), "u") == b"42"
    index = keys.user_index(NS, "42")
    assert index == "session_ng:users:{42}"
    assert r.hgetall(index) == {key.encode(): b""}
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
    assert r.hget(hash_key(key), "u") is None
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
    assert set(r.hkeys(keys.user_index(NS, "2"))) == {key.encode()}
    assert r.hget(hash_key(key), "u") == b"2"


def test_cycle_key_moves_everything_to_the_new_key(r: redis.Redis) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "5"
    s["a"] = "b"
    s.save()
    old = s.session_key
    assert old is not None
    created = r.hget(hash_key(old), "c")
    s.cycle_key()
    new = s.session_key
    assert new is not None
    assert new != old
    assert r.exists(hash_key(old), shadow_key(old)) == 0
    stored = r.hgetall(hash_key(new))
    assert stored[b".a"] == b'"b"'
    assert stored[b"u"] == b"5"
    # A rotated session is the same session: it keeps its creation time.
    assert stored[b"c"] == created
    assert set(r.hkeys(keys.user_index(NS, "5"))) == {new.encode()}
    bucket_key = keys.expiration_bucket(NS, int(stored[b"b"]))
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


# --- the compact layout --------------------------------------------------------

CART = [
    {"sku": "A-100", "qty": 1, "price": "19.90"},
    {"sku": "B-220", "qty": 2, "price": "4.50"},
    {"sku": "C-314", "qty": 1, "price": "112.00"},
]
DIGEST = "0123456789abcdef" * 4  # what Django's _auth_user_hash looks like


def test_a_typical_signed_in_session_is_stored_compactly(r: redis.Redis) -> None:
    """One-letter metadata, Django's own attributes and its default backend
    as codes, a digest as its bytes, a long value in chunks of 64 bytes: so
    the hash, and the user index, keep Redis's listpack encoding."""
    data = {
        "cart": CART,
        "_auth_user_id": "42",
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": DIGEST,
    }
    s = SessionStore()
    s.update(data)
    s.save()
    key = s.session_key
    assert key is not None
    stored = r.hgetall(hash_key(key))
    cart = b'[{"sku":"A-100","qty":1,"price":"19.90"},{"sku":"B-220","qty":2,"price":"4.50"},{"sku":"C-314","qty":1,"price":"112.00"}]'  # noqa: E501
    assert stored == {
        b"c": stored[b"c"],
        b"a": stored[b"c"],
        b"i": b"1209600",
        b"b": stored[b"b"],
        b"u": b"42",
        b"I": b'"42"',
        b"B": b"\x02\x01",
        b"H": b"\x01" + bytes.fromhex(DIGEST),
        b".cart": b"\x00\x02" + cart[:62],
        b",1.cart": cart[62:],
    }
    assert r.object("encoding", hash_key(key)) == b"listpack"
    assert r.object("encoding", keys.user_index(NS, "42")) == b"listpack"
    assert SessionStore(key).load() == data


@pytest.mark.parametrize("size", [1, 62, 63, 64, 65, 126, 127, 128, 190, 191, 16_000, 20_000])
def test_values_of_every_length_come_back(r: redis.Redis, size: int) -> None:
    value = "x" * (size - 2)  # JSON adds the quotes
    s = SessionStore()
    s["v"] = value
    s.save()
    assert s.session_key is not None
    fields = r.hgetall(hash_key(s.session_key))
    assert all(len(f) <= 64 and len(v) <= 64 for f, v in fields.items()) == (size <= 16_000)
    assert SessionStore(s.session_key).load() == {"v": value}


def test_a_value_that_shrinks_or_goes_takes_its_chunks_along(r: redis.Redis) -> None:
    s = SessionStore()
    s["v"] = "x" * 200  # 4 fields
    s["w"] = "y" * 100  # 2 fields
    s.save()
    assert s.session_key is not None
    name = hash_key(s.session_key)
    assert {f for f in r.hkeys(name) if f[:1] in b".,"} == {
        b".v",
        b",1.v",
        b",2.v",
        b",3.v",
        b".w",
        b",1.w",
    }
    t = SessionStore(s.session_key)
    t["v"] = "x" * 80  # 2 fields
    del t["w"]
    t.save()
    assert {f for f in r.hkeys(name) if f[:1] in b".,"} == {b".v", b",1.v"}
    assert SessionStore(s.session_key).load() == {"v": "x" * 80}


def test_hex_strings_that_do_not_fit_the_rule_are_stored_as_they_are(r: redis.Redis) -> None:
    values = {"odd": "abc" * 11, "upper": "ABCDEF" * 6, "short": "ab" * 15}
    s = SessionStore()
    s.update(values)
    s.save()
    assert s.session_key is not None
    stored = r.hgetall(hash_key(s.session_key))
    assert stored[b".upper"] == b'"' + b"ABCDEF" * 6 + b'"'
    assert stored[b".short"] == b'"' + b"ab" * 15 + b'"'
    assert stored[b".odd"] == b'"' + b"abc" * 11 + b'"'
    assert SessionStore(s.session_key).load() == values


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (b".v", b"\x00\x03" + b"x" * 62),  # says 3 fields, one chunk is missing
        (b".v", b"\x02\x09"),  # an unknown code
        (b".v", b"\x02"),  # a code cut short
        (b".v", b"\x00"),  # a chunk count cut short
    ],
)
def test_a_value_that_cannot_be_decoded_is_dropped(
    r: redis.Redis, field: bytes, value: bytes
) -> None:
    s = SessionStore()
    s["v"] = "x" * 150
    s["keep"] = 1
    s.save()
    assert s.session_key is not None
    r.hset(hash_key(s.session_key), field, value)
    r.hdel(hash_key(s.session_key), ",2.v")
    assert SessionStore(s.session_key).load() == {"keep": 1}


def test_serialized_values_that_start_like_an_encoding_are_kept_apart() -> None:
    from session_ng.store.records import Record, attribute_fields, parse_record

    for raw in (b"\x00abc", b"\x01", b"\x02\x01", b"", b"\x00" * 300):
        fields = attribute_fields("v", raw)
        hash_fields = {f.encode(): v for f, v in fields}
        hash_fields.update({b"c": b"1", b"a": b"1", b"i": b"60"})
        record = parse_record("k" * 32, hash_fields)
        assert isinstance(record, Record)
        assert record.attributes == {"v": raw}

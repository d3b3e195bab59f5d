"""Per-attribute delta writes: what a save sends, and that nothing is lost."""

from __future__ import annotations

import json
import threading
from typing import ClassVar

import pytest
import redis
from django.contrib.sessions.backends.base import UpdateError

from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.store import driver


def stored(r: redis.Redis, session_key: str | None) -> dict[bytes, bytes]:
    assert session_key is not None
    return r.hgetall(keys.session_hash("session_ng", session_key))


def test_save_writes_only_changed_attributes(r: redis.Redis, roundtrips) -> None:  # type: ignore[no-untyped-def]
    s = SessionStore()
    s.update({"a": 1, "b": 2, "c": 3})
    s.save()
    t = SessionStore(s.session_key)
    t.load()
    t._session_cache = t.load()
    t["b"] = 20
    r.script_load(driver.UPDATE.source)  # no NOSCRIPT round trip below
    roundtrips.reset()
    t.save()
    (sent,) = roundtrips.commands
    assert b"$2\r\n.b\r\n$2\r\n20\r\n" in sent
    assert b".a" not in sent
    assert b".c" not in sent
    # Another writer changes "a" behind t's back; t's later save must not undo it.
    u = SessionStore(s.session_key)
    u["a"] = 100
    u.save()
    t["c"] = 30
    t.save()
    data = stored(r, s.session_key)
    assert data[b".a"] == b"100"
    assert data[b".b"] == b"20"
    assert data[b".c"] == b"30"


def test_in_place_mutation_is_saved_without_modified(r: redis.Redis) -> None:
    s = SessionStore()
    s["cart"] = ["apple"]
    s.save()
    t = SessionStore(s.session_key)
    t["cart"].append("pear")  # Django would not mark this modified
    assert t.modified is False
    t.save()
    assert stored(r, s.session_key)[b".cart"] == b'["apple","pear"]'


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.get("cart").append("pear"),
        lambda t: t.setdefault("cart", []).append("pear"),
        lambda t: next(iter(v for v in t.values() if isinstance(v, list))).append("pear"),
        lambda t: dict(t.items())["cart"].append("pear"),
    ],
    ids=["get", "setdefault", "values", "items"],
)
def test_every_way_of_handing_out_a_value_catches_in_place_changes(r: redis.Redis, mutate) -> None:  # type: ignore[no-untyped-def]
    s = SessionStore()
    s.update({"cart": ["apple"], "other": {"n": 1}})
    s.save()
    t = SessionStore(s.session_key)
    mutate(t)
    t.save()
    assert stored(r, s.session_key)[b".cart"] == b'["apple","pear"]'


async def test_async_reads_catch_in_place_changes_too(r: redis.Redis) -> None:
    s = SessionStore()
    await s.aset("cart", ["apple"])
    await s.asave()
    t = SessionStore(s.session_key)
    (await t.aget("cart")).append("pear")
    (await t.asetdefault("seen", [])).append(1)
    await t.asave()
    assert stored(r, s.session_key)[b".cart"] == b'["apple","pear"]'
    assert stored(r, s.session_key)[b".seen"] == b"[1]"


@pytest.mark.parametrize("midway", ["save", "cycle_key"])
def test_a_value_changed_in_place_after_a_save_in_the_same_request_is_kept(
    r: redis.Redis, midway: str
) -> None:
    s = SessionStore()
    cart: list[int] = []
    s["cart"] = cart
    getattr(s, midway)()  # as login() does with cycle_key()
    cart.append(1)  # the view still holds the list it set
    s.save()  # what the middleware does at the end of the request
    assert stored(r, s.session_key)[b".cart"] == b"[1]"


class CountingSerializer:
    dumped: ClassVar[list[object]] = []

    def dumps(self, obj: object) -> bytes:
        CountingSerializer.dumped.append(obj)
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> object:
        return json.loads(data)


def test_values_nobody_was_handed_are_not_serialized_again(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_SERIALIZER = "tests.test_engine_delta.CountingSerializer"
    s = SessionStore()
    s.update({"theme": "dark", "cart": [1, 2], "flags": {"beta": True}})
    s.save()
    t = SessionStore(s.session_key)
    CountingSerializer.dumped.clear()
    assert t.get("theme") == "dark"  # a read, as most requests are
    t.save()  # what the middleware does after a request that read the session
    assert CountingSerializer.dumped == []
    assert t.get("flags") == {"beta": True}  # handed out: it could change in place
    t.save()
    assert CountingSerializer.dumped == [{"beta": True}]


def test_removed_attributes_are_hdeled(r: redis.Redis) -> None:
    s = SessionStore()
    s.update({"keep": 1, "drop": 2})
    s.save()
    t = SessionStore(s.session_key)
    del t["drop"]
    t.save()
    data = stored(r, s.session_key)
    assert b".drop" not in data
    assert data[b".keep"] == b"1"


def test_clear_removes_every_attribute_but_keeps_the_session(r: redis.Redis) -> None:
    s = SessionStore()
    s.update({"a": 1, "b": 2})
    s.save()
    t = SessionStore(s.session_key)
    t.clear()
    t.save()
    data = stored(r, s.session_key)
    assert not [name for name in data if name.startswith(b".")]
    assert SessionStore(s.session_key).exists(s.session_key) is True


def test_save_of_a_session_deleted_meanwhile_raises_and_writes_nothing(r: redis.Redis) -> None:
    s = SessionStore()
    s["a"] = 1
    s.save()
    key = s.session_key
    SessionStore(key).delete()
    s["a"] = 2
    with pytest.raises(UpdateError):
        s.save()
    assert key is not None
    # All that is left is the claim on the end event (so a worker does not
    # report the delete a second time): the bucket entry went with it.
    assert [k.decode() for k in r.scan_iter()] == [keys.session_event("session_ng", key)]
    assert r.get(keys.session_event("session_ng", key)) == b"deleted"
    assert stored(r, key) == {}


def test_save_after_expiry_does_not_resurrect(r: redis.Redis) -> None:
    s = SessionStore()
    s["a"] = 1
    s.save()
    key = s.session_key
    assert key is not None
    # Its idle timeout ran out: the hash's fields say so, and Redis expired
    # the shadow key (the hash stays for the grace period).
    r.hincrby(keys.session_hash("session_ng", key), "a", -(1_209_660_000 + 1))
    r.delete(keys.session_shadow("session_ng", key))
    s["a"] = 2
    with pytest.raises(UpdateError):
        s.save()
    assert stored(r, key)[b".a"] == b"1"
    assert SessionStore(key).load() == {}


def test_concurrent_writers_of_different_attributes_lose_nothing(r: redis.Redis) -> None:
    """16 threads x 50 read-modify-write cycles, each on its own attribute."""
    s = SessionStore()
    s["seed"] = True
    s.save()
    key = s.session_key
    threads_n, writes = 16, 50
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def writer(i: int) -> None:
        try:
            start.wait()
            for j in range(writes):
                t = SessionStore(key)
                t[f"t{i}"] = [*t.get(f"t{i}", []), j]
                t.save()
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    final = SessionStore(key)
    for i in range(threads_n):
        assert final[f"t{i}"] == list(range(writes))
    assert final["seed"] is True


def test_custom_serializer_is_used_per_attribute(r: redis.Redis, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_SERIALIZER = "tests.serializers.UpperJSONSerializer"
    s = SessionStore()
    s["word"] = "hello"
    s.save()
    assert stored(r, s.session_key)[b".word"] == b'"HELLO"'
    assert SessionStore(s.session_key)["word"] == "hello"

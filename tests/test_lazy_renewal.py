"""Lazy renewal: a read is one plain HGETALL; the idle timer is renewed at
most once per renewal period, and each renewal grants that period on top of
the idle timeout, so a session never ends before its idle timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
from django.contrib.sessions.backends.base import UpdateError

from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.store.records import GRACE_MS, renewal_period_ms

NS = "session_ng"


def saved(age: int | None = None, **attributes: Any) -> str:
    s = SessionStore()
    s.update(attributes or {"a": 1})
    if age is not None:
        s.set_expiry(age)
    s.save()
    assert s.session_key is not None
    return s.session_key


def older(r: redis.Redis, key: str, ms: int) -> int:
    """Make the session look as if its last renewal was ``ms`` earlier (what
    Redis holds after that much time passed without one); its new ``accessed``."""
    hash_name, shadow = keys.session_hash(NS, key), keys.session_shadow(NS, key)
    accessed = int(r.hincrby(hash_name, "a", -ms))
    r.pexpire(shadow, r.pttl(shadow) - ms)
    r.pexpire(hash_name, r.pttl(hash_name) - ms)
    return accessed


def sent(roundtrips: Any) -> list[bytes]:
    """The command names of each round trip (EVALSHA for scripts)."""
    return [c.split(b"\r\n")[2] for c in roundtrips.commands]


def test_the_default_period_is_a_hundredth_of_the_idle_timeout_at_most_a_minute() -> None:
    assert renewal_period_ms(1_209_600) == 60_000
    assert renewal_period_ms(600) == 6_000
    assert renewal_period_ms(1) == 10
    assert renewal_period_ms(-1) == 0
    assert renewal_period_ms(600, 0) == 0
    assert renewal_period_ms(600, 30_000) == 30_000
    assert renewal_period_ms(-1, 30_000) == 0


def test_a_read_within_the_period_is_one_hgetall_and_writes_nothing(
    r: redis.Redis, roundtrips: Any
) -> None:
    key = saved(600)
    older(r, key, 5_000)  # the period is 6 s
    before = r.hgetall(keys.session_hash(NS, key))
    roundtrips.reset()
    s = SessionStore(key)
    assert s["a"] == 1
    s.save_changes()
    assert sent(roundtrips) == [b"HGETALL"]
    assert r.hgetall(keys.session_hash(NS, key)) == before
    assert 600_000 < r.pttl(keys.session_shadow(NS, key)) <= 601_000


def test_a_read_after_the_period_renews_once(r: redis.Redis, roundtrips: Any) -> None:
    warm = saved(600)  # Redis learns the touch script (NOSCRIPT, then EVAL)
    older(r, warm, 6_000)
    SessionStore(warm).load()
    key = saved(600)
    stale = older(r, key, 6_000)
    roundtrips.reset()
    before = int(time.time() * 1000)
    assert SessionStore(key)["a"] == 1
    assert sent(roundtrips) == [b"HGETALL", b"EVALSHA"]
    accessed = int(r.hget(keys.session_hash(NS, key), "a") or 0)
    assert accessed >= before > stale
    # The idle timeout plus one period, from the renewal.
    assert 604_000 < r.pttl(keys.session_shadow(NS, key)) <= 606_000
    assert 604_000 + GRACE_MS < r.pttl(keys.session_hash(NS, key)) <= 606_000 + GRACE_MS
    # The next read is within the new period: nothing more is written.
    roundtrips.reset()
    assert SessionStore(key)["a"] == 1
    assert sent(roundtrips) == [b"HGETALL"]
    assert int(r.hget(keys.session_hash(NS, key), "a") or 0) == accessed


def test_an_expired_session_is_never_served(r: redis.Redis) -> None:
    """Judged by the clock from the hash's fields, even while Redis has not
    expired the shadow key yet, and whatever a renewal would do."""
    key = saved(600)
    r.hincrby(keys.session_hash(NS, key), "a", -(606_000 + 1))
    s = SessionStore(key)
    assert s.load() == {}
    assert s.session_key is None
    assert r.pttl(keys.session_shadow(NS, key)) > 600_000  # nothing renewed it


def test_a_session_is_alive_until_its_idle_timeout_plus_a_period(r: redis.Redis) -> None:
    key = saved(600)
    # The last renewal was 6 s + 10 min - 1 s ago: a second to go.
    older(r, key, 605_000)
    s = SessionStore(key)
    assert s["a"] == 1  # served, and renewed (the renewal was due)
    assert 604_000 < r.pttl(keys.session_shadow(NS, key)) <= 606_000


def test_a_deleted_session_never_comes_back(r: redis.Redis) -> None:
    key = saved(600)
    # Loaded within the period (a lean save would follow), then deleted.
    lean = SessionStore(key)
    lean.load()
    lean._session_cache = lean.load()
    # Loaded with the renewal due (a full save would follow), then deleted.
    older(r, key, 6_000)
    full = SessionStore(key)
    full._session_cache = full.load()
    SessionStore().delete(key)
    for store in (lean, full):
        store["a"] = 2
        with pytest.raises(UpdateError):
            store.save()
    assert SessionStore(key).load() == {}
    assert [k.decode() for k in r.scan_iter(match=f"{NS}:sessions:*")] == [
        keys.session_event(NS, key)
    ]


def test_a_session_deleted_between_the_read_and_its_renewal_is_not_served(
    r: redis.Redis,
) -> None:
    from session_ng.store import driver, sessions

    key = saved(600)
    older(r, key, 6_000)
    # The load operation, driven step by step with a delete in between.
    operation = sessions.load(NS, key, int(time.time() * 1000), refresh=True)
    assert next(operation) == driver.Command(("HGETALL", keys.session_hash(NS, key)))
    fields = r.hgetall(keys.session_hash(NS, key))
    renewal = operation.send(fields)
    assert isinstance(renewal, driver.Batch)
    SessionStore().delete(key)
    touched = driver.run(_one(renewal.calls[0]))
    assert touched == [0]
    with pytest.raises(StopIteration) as done:
        operation.send([touched])
    assert done.value.value == (None, set())
    assert r.exists(keys.session_hash(NS, key), keys.session_shadow(NS, key)) == 0


def _one(call: Any) -> Any:
    reply = yield call
    return reply


def test_an_attribute_write_within_the_period_writes_just_that_field(
    r: redis.Redis, roundtrips: Any
) -> None:
    key = saved(600, a=1, b="x")
    stale = older(r, key, 5_000)
    hash_name = keys.session_hash(NS, key)
    before = r.hgetall(hash_name)
    ttl = r.pttl(keys.session_shadow(NS, key))
    s = SessionStore(key)
    s["a"] = 2
    del s["b"]
    roundtrips.reset()
    s.save()
    assert len(roundtrips.commands) == 1
    assert b"HSET" not in roundtrips.commands[0]  # the lean script, by its sha
    after = r.hgetall(hash_name)
    expected = {**before, b".a": b"2"}
    del expected[b".b"]
    assert after == expected  # accessed, bucket and the rest as they were
    assert int(after[b"a"]) == stale
    assert ttl - 1_000 < r.pttl(keys.session_shadow(NS, key)) <= ttl


def test_a_write_with_the_renewal_due_renews_in_the_same_save(r: redis.Redis) -> None:
    key = saved(600)
    stale = older(r, key, 6_000)
    s = SessionStore(key)
    s.load()
    s._session_cache = s.load()
    # The load renewed it; make this store's baseline as old again.
    assert s._record is not None
    s._record.accessed = stale
    s["a"] = 2
    s.save()
    assert int(r.hget(keys.session_hash(NS, key), "a") or 0) > stale
    assert 604_000 < r.pttl(keys.session_shadow(NS, key)) <= 606_000


def test_the_renewal_period_setting(r: redis.Redis, settings: Any) -> None:
    settings.SESSION_NG = {**settings.SESSION_NG, "RENEWAL_PERIOD": 0}
    key = saved(600)
    assert 599_000 < r.pttl(keys.session_shadow(NS, key)) <= 600_000
    accessed = int(r.hget(keys.session_hash(NS, key), "a") or 0)
    time.sleep(0.002)
    SessionStore(key).load()  # 0: every read renews
    assert int(r.hget(keys.session_hash(NS, key), "a") or 0) > accessed
    settings.SESSION_NG = {**settings.SESSION_NG, "RENEWAL_PERIOD": 30}
    key = saved(600)
    assert 629_000 < r.pttl(keys.session_shadow(NS, key)) <= 630_000
    older(r, key, 29_000)
    before = r.hgetall(keys.session_hash(NS, key))
    SessionStore(key).load()
    assert r.hgetall(keys.session_hash(NS, key)) == before
    older(r, key, 1_000)
    SessionStore(key).load()
    assert 629_000 < r.pttl(keys.session_shadow(NS, key)) <= 630_000


def test_absolute_and_no_expiry_are_never_renewed(r: redis.Redis) -> None:
    from datetime import timedelta

    absolute = saved(timedelta(seconds=120))
    never = saved(-1)
    for key in (absolute, never):
        r.hincrby(keys.session_hash(NS, key), "a", -100_000)
        before = r.hgetall(keys.session_hash(NS, key))
        ttl = r.pttl(keys.session_shadow(NS, key))
        assert SessionStore(key)["a"] == 1
        assert r.hgetall(keys.session_hash(NS, key)) == before
        assert r.pttl(keys.session_shadow(NS, key)) <= ttl
    assert r.pttl(keys.session_shadow(NS, never)) == -1


def test_an_async_read_renews_by_the_same_rule(r: redis.Redis) -> None:
    key = saved(600)
    older(r, key, 5_000)
    before = r.hgetall(keys.session_hash(NS, key))

    async def read() -> Any:
        return await SessionStore(key).aget("a")

    assert asyncio.run(read()) == 1
    assert r.hgetall(keys.session_hash(NS, key)) == before
    older(r, key, 1_000)
    assert asyncio.run(read()) == 1
    assert 604_000 < r.pttl(keys.session_shadow(NS, key)) <= 606_000

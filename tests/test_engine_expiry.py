"""Expiry: every set_expiry form, the sliding idle timer, absolute expiry."""

from __future__ import annotations

import time
from datetime import UTC as utc
from datetime import datetime, timedelta

import redis

from session_ng import keys
from session_ng.backends.redis import NEVER_EXPIRES_COOKIE_AGE, SessionStore
from session_ng.store.records import GRACE_MS


def hash_key(s: SessionStore) -> str:
    assert s.session_key is not None
    return keys.session_hash("session_ng", s.session_key)


def shadow_key(s: SessionStore) -> str:
    assert s.session_key is not None
    return keys.session_shadow("session_ng", s.session_key)


def older(r: redis.Redis, s: SessionStore, ms: int) -> None:
    """Make ``s`` look as if its last renewal was ``ms`` earlier: what Redis
    holds after that much time passed without one."""
    r.hincrby(hash_key(s), "a", -ms)
    r.pexpire(shadow_key(s), r.pttl(shadow_key(s)) - ms)
    r.pexpire(hash_key(s), r.pttl(hash_key(s)) - ms)


def saved_with(expiry: object) -> SessionStore:
    s = SessionStore()
    s["a"] = 1
    s.set_expiry(expiry)
    s.save()
    return s


def test_int_sets_the_idle_timeout(r: redis.Redis) -> None:
    s = saved_with(600)
    assert r.hget(hash_key(s), "i") == b"600"
    assert r.hget(hash_key(s), "e") is None
    # The idle timeout plus its renewal period: a hundredth of it, 6 s.
    assert 604_000 < r.pttl(shadow_key(s)) <= 606_000
    assert 604_000 + GRACE_MS < r.pttl(hash_key(s)) <= 606_000 + GRACE_MS
    assert s.get_expiry_age() == 600


def test_zero_means_browser_session_with_the_default_server_life(r: redis.Redis) -> None:
    s = saved_with(0)
    assert r.hget(hash_key(s), "i") == b"1209600"
    assert s.get_expire_at_browser_close() is True


def test_none_restores_the_default(r: redis.Redis) -> None:
    s = saved_with(600)
    s.set_expiry(None)
    s.save()
    assert r.hget(hash_key(s), "i") == b"1209600"
    assert 1209658_000 < r.pttl(shadow_key(s)) <= 1209660_000


def test_datetime_is_an_absolute_expiry(r: redis.Redis) -> None:
    when = datetime.now(tz=utc).replace(microsecond=0) + timedelta(minutes=30)
    s = saved_with(when)
    assert r.hget(hash_key(s), "e") == str(int(when.timestamp() * 1000)).encode()
    assert 1_798_000 < r.pttl(shadow_key(s)) <= 1_800_000
    bucket = keys.expiration_bucket("session_ng", -(-int(when.timestamp() * 1000) // 60000))
    assert r.smembers(bucket) == {s.session_key.encode()}  # type: ignore[union-attr]


def test_timedelta_is_absolute_from_now_as_in_django(r: redis.Redis) -> None:
    s = saved_with(timedelta(seconds=90))
    expires_at = int(r.hget(hash_key(s), "e") or 0)
    assert abs(expires_at - (time.time() * 1000 + 90_000)) < 2000


def test_reads_slide_the_idle_timer_without_writing_data(r: redis.Redis) -> None:
    s = saved_with(600)
    older(r, s, 500_000)  # most of the idle time has passed
    before = r.hgetall(hash_key(s))
    time.sleep(0.01)
    assert SessionStore(s.session_key)["a"] == 1
    after = r.hgetall(hash_key(s))
    assert 604_000 < r.pttl(shadow_key(s)) <= 606_000
    assert int(after[b"a"]) > int(before[b"a"])
    assert {k: v for k, v in after.items() if k != b"a"} == {
        k: v for k, v in before.items() if k != b"a"
    }


def test_reads_do_not_slide_when_refresh_is_off(r: redis.Redis, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "REFRESH_ON_ACCESS": False}
    s = saved_with(600)
    older(r, s, 500_000)
    assert SessionStore(s.session_key)["a"] == 1
    assert r.pttl(shadow_key(s)) <= 106_000
    # An explicit save still renews it (the SESSION_SAVE_EVERY_REQUEST idiom).
    t = SessionStore(s.session_key)
    t.load()
    t.modified = True
    t.save()
    assert r.pttl(shadow_key(s)) > 604_000


def test_absolute_expiry_is_never_extended(r: redis.Redis) -> None:
    s = saved_with(timedelta(seconds=120))
    ttl = r.pttl(shadow_key(s))
    assert SessionStore(s.session_key)["a"] == 1
    assert r.pttl(shadow_key(s)) <= ttl


def test_negative_expiry_never_expires(r: redis.Redis) -> None:
    s = saved_with(-1)
    assert r.hget(hash_key(s), "i") == b"-1"
    assert r.hget(hash_key(s), "b") is None
    assert r.pttl(shadow_key(s)) == -1
    assert r.pttl(hash_key(s)) == -1
    assert [k for k in r.scan_iter() if b"expirations" in k] == []
    # A page load does not give it a TTL either, and the cookie gets 400 days.
    t = SessionStore(s.session_key)
    assert t["a"] == 1
    assert r.pttl(shadow_key(s)) == -1
    assert t.get_expiry_age() == NEVER_EXPIRES_COOKIE_AGE
    assert t.get_expire_at_browser_close() is False


def test_never_expiring_then_expiring_gets_ttls_back(r: redis.Redis) -> None:
    s = saved_with(-1)
    s.set_expiry(300)
    s.save()
    assert 301_000 < r.pttl(shadow_key(s)) <= 303_000
    assert r.hget(hash_key(s), "b") is not None


def test_a_short_session_really_expires(r: redis.Redis) -> None:
    s = saved_with(1)
    key = s.session_key
    assert SessionStore(key)["a"] == 1
    time.sleep(1.1)
    late = SessionStore(key)
    assert late.get("a") is None
    assert late.session_key is None
    assert late.exists(key) is False
    # The hash is kept for the grace period (for the expired event), the shadow is gone.
    assert r.exists(hash_key(s)) == 1
    assert r.exists(shadow_key(s)) == 0


def test_expiry_in_the_past_ends_the_session_at_once(r: redis.Redis) -> None:
    s = saved_with(-timedelta(seconds=10))
    # The shadow key is left to expire within a millisecond (not deleted), so
    # the end is reported as an expiry.
    assert r.pttl(shadow_key(s)) in (-2, 0, 1)
    assert SessionStore(s.session_key).load() == {}
    time.sleep(0.005)  # a few of its milliseconds later it is gone
    assert r.exists(shadow_key(s)) == 0


def test_a_stale_writer_does_not_undo_a_concurrent_set_expiry(r: redis.Redis) -> None:
    s = saved_with(None)
    a, b = SessionStore(s.session_key), SessionStore(s.session_key)
    a.load()
    a._session_cache = a.load()
    b._session_cache = b.load()
    a.set_expiry(600)
    a.save()
    bucket = r.hget(hash_key(s), "b")
    b["other"] = 1  # b never touched the expiry
    b.save()
    stored = r.hgetall(hash_key(s))
    assert stored[b"i"] == b"600"
    assert stored[b"X"] == b"600"
    assert stored[b".other"] == b"1"
    assert stored[b"b"] == bucket
    assert 604_000 < r.pttl(shadow_key(s)) <= 606_000


def test_a_writer_that_sets_the_expiry_wins_over_what_is_stored(r: redis.Redis) -> None:
    s = saved_with(600)
    b = SessionStore(s.session_key)
    b.set_expiry(120)
    b.save()
    assert r.hget(hash_key(s), "i") == b"120"
    assert 119_200 < r.pttl(shadow_key(s)) <= 121_200

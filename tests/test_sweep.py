"""clear_expired() / manage.py clearsessions: the expiration-bucket sweep."""

from __future__ import annotations

import asyncio
import io
import time

import redis
from django.core.management import call_command

from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.events import entry_fields
from session_ng.store import driver, records
from session_ng.store import expiry as store_expiry
from session_ng.store import sessions as store_sessions
from session_ng.store.records import now_ms

NS = "session_ng"


def logged_in(user: str, expiry: int) -> SessionStore:
    s = SessionStore()
    s["_auth_user_id"] = user
    s["data"] = user
    s.set_expiry(expiry)
    s.save()
    return s


def test_sweep_reports_expired_sessions_and_prunes_the_user_index(r: redis.Redis) -> None:
    gone = logged_in("1", 1)
    alive = logged_in("1", 3600)
    time.sleep(1.05)
    # Sweep as if we were past the minute the short session was filed under.
    bucket = int(r.hget(keys.session_hash(NS, gone.session_key), "b") or 0)  # type: ignore[arg-type]
    report = driver.run(store_expiry.sweep(NS, bucket * 60000 + 1, entry_fields))
    assert [e.session_key for e in report.expired] == [gone.session_key]
    (ended,) = report.expired
    assert isinstance(ended.record, records.Record)
    assert ended.record.user == "1"
    assert ended.record.attributes["data"] == b'"1"'
    assert set(r.hkeys(keys.user_index(NS, "1"))) == {alive.session_key.encode()}  # type: ignore[union-attr]
    assert r.exists(keys.expiration_bucket(NS, bucket)) == 0
    assert r.get(keys.sweep_cursor(NS)) == str(bucket).encode()


def test_a_slid_session_is_refiled_not_expired(r: redis.Redis) -> None:
    s = logged_in("2", 120)
    key = s.session_key
    assert key is not None
    hash_key = keys.session_hash(NS, key)
    old_bucket = int(r.hget(hash_key, "b") or 0)
    # The idle timer slid well past the bucket it was filed under.
    r.pexpire(keys.session_shadow(NS, key), 3_600_000)
    report = driver.run(store_expiry.sweep(NS, old_bucket * 60000 + 1, entry_fields))
    assert report.expired == []
    assert report.refiled == 1
    new_bucket = int(r.hget(hash_key, "b") or 0)
    assert new_bucket - old_bucket >= 55
    assert r.smembers(keys.expiration_bucket(NS, new_bucket)) == {key.encode()}
    assert r.exists(keys.expiration_bucket(NS, old_bucket)) == 0
    # The user index now lives at least as long as the session's new bucket.
    assert r.pexpiretime(keys.user_index(NS, "2")) >= new_bucket * 60000


def test_a_deleted_session_leaves_its_bucket_and_junk_is_dropped(r: redis.Redis) -> None:
    s = logged_in("3", 60)
    key = s.session_key
    assert key is not None
    bucket = int(r.hget(keys.session_hash(NS, key), "b") or 0)
    s.delete()
    assert not r.sismember(keys.expiration_bucket(NS, bucket), key)
    r.sadd(keys.expiration_bucket(NS, bucket), "NOT-A-KEY")
    report = driver.run(store_expiry.sweep(NS, bucket * 60000 + 1, entry_fields))
    assert (report.expired, report.vanished, report.refiled, report.dropped) == ([], [], 0, 1)
    assert r.exists(keys.expiration_bucket(NS, bucket)) == 0


def test_a_member_with_nothing_left_is_reported_as_vanished(r: redis.Redis) -> None:
    s = logged_in("4", 60)
    key = s.session_key
    assert key is not None
    bucket = int(r.hget(keys.session_hash(NS, key), "b") or 0)
    r.delete(keys.session_hash(NS, key), keys.session_shadow(NS, key))  # ended unseen, long ago
    report = driver.run(store_expiry.sweep(NS, bucket * 60000 + 1, entry_fields))
    assert report.vanished == [key]


def test_sweep_only_looks_at_due_buckets_and_remembers_where_it_was(r: redis.Redis) -> None:
    s = logged_in("4", 3600)
    hash_key = keys.session_hash(NS, s.session_key)  # type: ignore[arg-type]
    bucket_key = keys.expiration_bucket(NS, int(r.hget(hash_key, "b") or 0))
    now = now_ms()
    report = driver.run(store_expiry.sweep(NS, now, entry_fields))
    assert (report.expired, report.refiled) == ([], 0)
    assert report.buckets == store_expiry.SWEEP_LOOKBACK_MINUTES + 1
    assert r.sismember(bucket_key, s.session_key)  # type: ignore[arg-type]
    # The cursor means a second sweep in the same minute has nothing to do.
    assert driver.run(store_expiry.sweep(NS, now, entry_fields)).buckets == 0
    assert driver.run(store_expiry.sweep(NS, now + 60_000, entry_fields)).buckets == 1


def test_a_first_sweep_finds_a_days_buckets_in_a_few_round_trips(  # type: ignore[no-untyped-def]
    roundtrips, r: redis.Redis
) -> None:
    # A worker starting on a Redis with no cursor (or back after a day away)
    # walks every minute that may still have a bucket. Two round trips per
    # minute (2,884) kept it from its notifications for about a second.
    s = logged_in("5", 1)
    minute = int(r.hget(keys.session_hash(NS, s.session_key), "b") or 0)  # type: ignore[arg-type]
    r.delete(keys.session_hash(NS, s.session_key), keys.session_shadow(NS, s.session_key))  # type: ignore[arg-type]
    driver.run(store_sessions.exists(NS, "a" * 32))  # the connection is set up
    roundtrips.reset()
    report = driver.run(store_expiry.sweep(NS, minute * 60_000 + 1, entry_fields))
    minutes = store_expiry.SWEEP_LOOKBACK_MINUTES + 1
    spans = -(-minutes // store_expiry.SWEEP_SCAN_MINUTES)
    # The cursor; per span of minutes, which buckets exist, then the cursor
    # moved to its end; for the one bucket there (the last minute: its removal
    # moves the cursor too), its members, their scripts, its end published
    # (the claim looked at, the stream entry, the claim taken), its removal.
    assert roundtrips.count == 1 + spans + (spans - 1) + 3 + 3
    assert (report.buckets, report.vanished) == (minutes, [s.session_key])
    assert r.get(keys.sweep_cursor(NS)) == str(minute).encode()
    assert not r.exists(keys.expiration_bucket(NS, minute))


def test_clearsessions_command_sweeps(r: redis.Redis) -> None:
    s = logged_in("5", 1)
    key = s.session_key
    bucket = int(r.hget(keys.session_hash(NS, key), "b") or 0)  # type: ignore[arg-type]
    time.sleep(1.05)
    # Make that bucket due now by filing the session under the current minute.
    due = now_ms() // 60000
    # (Not RENAME: on a Cluster the two buckets can sit in different slots.)
    members = r.smembers(keys.expiration_bucket(NS, bucket))
    r.delete(keys.expiration_bucket(NS, bucket))
    r.sadd(keys.expiration_bucket(NS, due), *members)
    call_command("clearsessions", stdout=io.StringIO())
    assert r.exists(keys.expiration_bucket(NS, due)) == 0
    assert r.exists(keys.user_index(NS, "5")) == 0


async def test_async_sweep_matches_sync(r: redis.Redis) -> None:
    s = logged_in("6", 1)
    bucket = int(r.hget(keys.session_hash(NS, s.session_key), "b") or 0)  # type: ignore[arg-type]
    await asyncio.sleep(1.05)
    report = await driver.arun(store_expiry.sweep(NS, bucket * 60000 + 1, entry_fields))
    assert [e.session_key for e in report.expired] == [s.session_key]
    assert r.exists(keys.user_index(NS, "6")) == 0


def test_clearsessions_reports_what_it_finds(r: redis.Redis) -> None:
    from session_ng.signals import session_expired

    received: list[dict[str, object]] = []

    def on_expired(sender: object, **kwargs: object) -> None:
        received.append({k: kwargs[k] for k in ("session_key", "user_id", "data")})

    session_expired.connect(on_expired)
    try:
        s = logged_in("18", 1)
        time.sleep(1.05)
        call_command("clearsessions", stdout=io.StringIO())
        call_command("clearsessions", stdout=io.StringIO())  # once, however often it runs
    finally:
        session_expired.disconnect(on_expired)
    assert received == [
        {"session_key": s.session_key, "user_id": "18",
         "data": {"_auth_user_id": "18", "data": "18", "_session_expiry": 1}}
    ]  # fmt: skip


def test_ends_found_together_are_published_and_delivered_together(  # type: ignore[no-untyped-def]
    roundtrips, r: redis.Redis
) -> None:
    from session_ng import events
    from session_ng.signals import session_expired

    sessions = [logged_in(str(10 + i), 1) for i in range(5)]
    session_keys = [s.session_key for s in sessions]
    assert all(session_keys)
    time.sleep(1.05)
    # Someone else reports the second one (an older claim).
    r.set(keys.session_event(NS, session_keys[1]), "deleted", px=60_000)
    heard: list[tuple[str, str | None, dict[str, object]]] = []

    def receiver(sender: object, **event: object) -> None:
        heard.append((event["session_key"], event["user_id"], event["data"]))  # type: ignore[arg-type]

    session_expired.connect(receiver)
    # As a running worker has them: the group, and the claim script loaded.
    driver.run(store_expiry.ensure_group(NS))
    r.script_load(driver.CLAIM.source)
    r.script_load(driver.STREAM_TURN.source)
    try:
        roundtrips.reset()
        # The last key is listed twice (found in two buckets): published once.
        assert events.publish_ends([*session_keys, session_keys[4]], "expired") == 4
        # Claims and hashes read, entries appended, claims and clean-up: one
        # round trip each for all of them.
        assert roundtrips.count == 3
        assert r.xlen(keys.event_stream(NS)) == 4
        roundtrips.reset()
        assert events.deliver_ends("test") == 4
    finally:
        session_expired.disconnect(receiver)
    # Read, claims checked, then one turn per signal (the last one's
    # acknowledgement and this one still ours), the last acknowledgement, and
    # the read that finds nothing left.
    assert roundtrips.count == 2 + 4 + 1 + 1
    assert heard == [
        (
            key,
            str(10 + i),
            {"_auth_user_id": str(10 + i), "data": str(10 + i), "_session_expiry": 1},
        )
        for i, key in enumerate(session_keys)
        if i != 1
    ]
    for i, key in enumerate(session_keys):
        assert not r.hexists(keys.user_index(NS, str(10 + i)), key) or i == 1
        # Each claim holds the id of the entry that reported the end.
        claim = r.get(keys.session_event(NS, key))
        assert claim == b"deleted" if i == 1 else claim is not None and claim.count(b"-") == 1
    assert r.xpending(keys.event_stream(NS), keys.EVENT_GROUP)["pending"] == 0
    # Nothing is left to publish: every end is claimed, in one round trip.
    roundtrips.reset()
    assert events.publish_ends(session_keys, "expired") == 0
    assert roundtrips.count == 1

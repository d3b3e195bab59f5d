"""Session ends go through a Redis Stream and its consumer group: none is lost
when a worker dies, none is sent twice unless it was in flight, and services
outside Django can read them (docs/events.rst, "The event stream")."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path

import pytest
import redis

from session_ng import events, keys
from session_ng.backends.redis import SessionStore
from session_ng.signals import session_deleted, session_expired
from session_ng.store import driver, expiry, records
from tests.worker_process import events as logged_events
from tests.worker_process import wait_until

NS = "session_ng"
STREAM = keys.event_stream(NS)
pytestmark = pytest.mark.django_db


def expiring(user: str, seconds: int = 1, **data: object) -> str:
    s = SessionStore()
    s["_auth_user_id"] = user
    s.update(data)
    s.set_expiry(seconds)
    s.save()
    assert s.session_key is not None
    return s.session_key


def expired_keys(log: Path) -> collections.Counter[str]:
    return collections.Counter(
        e["session_key"] for e in logged_events(log) if e["kind"] == "expired"
    )


@pytest.mark.standalone
def test_a_worker_killed_while_sending_loses_no_end(start, redis_server, log: Path) -> None:  # type: ignore[no-untyped-def]
    # The review that found the loss killed a worker in the middle of 1,200
    # ends: it lost 20 and 181 of them in two runs.
    first = start(redis_server.url, event_delay=0.004)
    users = {expiring(str(i % 50)): str(i % 50) for i in range(1200)}
    assert wait_until(lambda: len(expired_keys(log)) >= 300, 60), first.log()
    first.kill()  # SIGKILL, as the OOM killer does
    sent_by_first = sum(expired_keys(log).values())
    assert sent_by_first < len(users), "the worker finished before it was killed"
    second = start(redis_server.url, options=("--redeliver-after", "1"))
    assert wait_until(lambda: set(expired_keys(log)) >= set(users), 120), second.log()
    time.sleep(1.0)  # a few more sweeps and deliveries: nothing more comes
    found = expired_keys(log)
    assert set(found) == set(users)
    # Twice only what was in flight at the kill: the one end whose receivers
    # had run and whose acknowledgement had not been sent.
    assert sum(found.values()) - len(users) <= 1, [k for k, n in found.items() if n > 1]
    by_key = {e["session_key"]: e for e in logged_events(log) if e["kind"] == "expired"}
    assert all(by_key[key]["user_id"] == user for key, user in users.items())
    assert all(by_key[key]["data"]["_auth_user_id"] == user for key, user in users.items())
    # Everything delivered was acknowledged, and the leader trimmed it away.
    r = redis.Redis.from_url(redis_server.url)
    assert r.xpending(STREAM, keys.EVENT_GROUP)["pending"] == 0
    assert wait_until(lambda: r.xlen(STREAM) == 0, 5)


class Heard:
    def __init__(self) -> None:
        self.ends: list[tuple[str, str, str | None, dict[str, object]]] = []

    def __call__(self, sender: object, signal: object, **event: object) -> None:
        kind = "expired" if signal is session_expired else "deleted"
        self.ends.append((kind, event["session_key"], event["user_id"], event["data"]))  # type: ignore[arg-type]


@pytest.fixture
def heard() -> object:
    receiver = Heard()
    session_expired.connect(receiver)
    session_deleted.connect(receiver)
    yield receiver
    session_expired.disconnect(receiver)
    session_deleted.disconnect(receiver)


def test_an_entry_in_flight_at_a_crash_is_sent_again_by_whoever_takes_it_over(
    heard: Heard, r: redis.Redis
) -> None:
    key = expiring("7", cart=[1])
    time.sleep(1.05)
    assert events.publish_ends([key], "expired") == 1
    # A consumer reads it and dies before acknowledging it.
    ends = driver.run(expiry.take_ends(NS, "dead", 10)).ends
    assert [e.session_key for e in ends] == [key]
    # Another, not waiting long enough, leaves it alone ...
    assert events.deliver_ends("alive", redeliver_after=60) == 0
    # ... and takes it over once it waited that long.
    time.sleep(0.25)
    assert events.deliver_ends("alive", redeliver_after=0.2) == 1
    expected = ("expired", key, "7", {"_auth_user_id": "7", "cart": [1], "_session_expiry": 1})
    assert heard.ends == [expected]
    assert r.xpending(STREAM, keys.EVENT_GROUP)["pending"] == 0
    assert events.deliver_ends("alive", redeliver_after=0) == 0


def test_a_second_entry_for_one_end_is_acknowledged_unsent(heard: Heard, r: redis.Redis) -> None:
    key = expiring("8")
    time.sleep(1.05)
    # Two workers heard the notification and published at the same moment:
    # both entries are in the stream, the claim names the first.
    entry = events.entry_fields("expired", key, None)
    first = r.xadd(STREAM, dict(zip(entry[::2], entry[1::2], strict=True)))  # type: ignore[arg-type]
    second = r.xadd(STREAM, dict(zip(entry[::2], entry[1::2], strict=True)))  # type: ignore[arg-type]
    r.set(keys.session_event(NS, key), first)
    assert events.deliver_ends("w") == 1
    assert heard.ends == [("expired", key, None, {})]
    assert r.get(keys.session_event(NS, key)) == first
    assert second != first
    assert r.xpending(STREAM, keys.EVENT_GROUP)["pending"] == 0


def test_an_entry_whose_publisher_died_before_claiming_is_claimed_and_sent(
    heard: Heard, r: redis.Redis
) -> None:
    key = expiring("9", note="x")
    time.sleep(1.05)
    record = records.parse_record(key, r.hgetall(keys.session_hash(NS, key)))  # type: ignore[arg-type]
    entry = events.entry_fields("expired", key, record)
    entry_id = r.xadd(STREAM, dict(zip(entry[::2], entry[1::2], strict=True)))  # type: ignore[arg-type]
    assert events.deliver_ends("w") == 1
    assert heard.ends == [
        ("expired", key, "9", {"_auth_user_id": "9", "note": "x", "_session_expiry": 1})
    ]
    assert r.get(keys.session_event(NS, key)) == entry_id


def test_session_ngs_own_delete_is_not_sent_again_from_the_stream(
    heard: Heard, r: redis.Redis
) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "10"
    s.save()
    key = s.session_key
    assert key is not None
    # A worker heard the "del" of the hash and published it, racing the claim check.
    entry = events.entry_fields("deleted", key, None)
    s.delete()
    heard.ends.clear()  # the in-process session_deleted
    r.xadd(STREAM, dict(zip(entry[::2], entry[1::2], strict=True)))  # type: ignore[arg-type]
    assert events.deliver_ends("w") == 0
    assert heard.ends == []
    assert r.get(keys.session_event(NS, key)) == b"deleted"


def test_the_stream_format_is_readable_outside_django(heard: Heard, r: redis.Redis) -> None:
    key = expiring("11", cart=["tea"])
    time.sleep(1.05)
    events.sweep_and_publish(touch_current=True)
    # A service with a consumer group of its own, as docs/events.rst shows.
    r.xgroup_create(STREAM, "audit", id="0")
    [[_, [(entry_id, fields)]]] = r.xreadgroup("audit", "a1", {STREAM: ">"}, count=10)
    assert list(fields) == [b"kind", b"session", b"user", b"data"]
    assert fields[b"kind"] == b"expired"
    assert fields[b"session"] == key.encode()
    assert fields[b"user"] == b"11"
    assert json.loads(fields[b"data"]) == {
        "_auth_user_id": "11",
        "cart": ["tea"],
        "_session_expiry": 1,
    }
    # Our group sends it; the stream keeps it until "audit" acknowledges too.
    assert events.deliver_ends("w") == 1
    now = int(time.time() * 1000)
    assert driver.run(expiry.trim_events(NS, now)) == 0
    assert r.xlen(STREAM) == 1
    r.xack(STREAM, "audit", entry_id)
    assert driver.run(expiry.trim_events(NS, now)) == 1
    assert r.xlen(STREAM) == 0


def test_entries_nobody_read_for_a_day_are_trimmed(r: redis.Redis) -> None:
    driver.run(expiry.ensure_group(NS))
    old = r.xadd(STREAM, {"kind": "expired", "session": "a" * 32}, id="1000-0")
    new = r.xadd(STREAM, {"kind": "expired", "session": "b" * 32})
    day_later = 1000 + expiry.EVENTS_KEEP_MS + 1
    assert driver.run(expiry.trim_events(NS, day_later)) == 1
    assert [entry_id for entry_id, _ in r.xrange(STREAM)] == [new]
    assert old != new


def test_junk_in_the_stream_is_skipped_and_the_rest_sent(
    heard: Heard, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    key = expiring("12")
    time.sleep(1.05)
    driver.run(expiry.ensure_group(NS))
    r.xadd(STREAM, {"kind": "expired", "session": "{not a key}"})
    r.xadd(STREAM, {"kind": "exploded", "session": key})
    r.xadd(STREAM, {"something": "else"})
    events.publish_ends([key], "expired")
    assert events.deliver_ends("w") == 1
    assert heard.ends == [("expired", key, "12", {"_auth_user_id": "12", "_session_expiry": 1})]
    assert r.xpending(STREAM, keys.EVENT_GROUP)["pending"] == 0
    skipped = [m for m in caplog.messages if "is no session end; skipped" in m]
    assert len(skipped) == 3
    # Nothing was claimed for the junk.
    assert r.exists(keys.session_event(NS, "{not a key}")) == 0


def test_a_deleted_stream_gets_its_group_back(heard: Heard, r: redis.Redis) -> None:
    driver.run(expiry.ensure_group(NS))
    r.delete(STREAM)
    key = expiring("13")
    time.sleep(1.05)
    assert events.publish_ends([key], "expired") == 1  # XADD makes a stream with no group
    assert events.deliver_ends("w") == 1
    assert [e[1] for e in heard.ends] == [key]


async def test_async_delivery_sends_the_same(heard: Heard, r: redis.Redis) -> None:
    import asyncio

    key = expiring("14", note="a")
    await asyncio.sleep(1.05)
    assert await events.apublish_ends([key], "expired") == 1
    assert await events.adeliver_ends("w") == 1
    assert heard.ends == [
        ("expired", key, "14", {"_auth_user_id": "14", "note": "a", "_session_expiry": 1})
    ]
    assert r.xpending(STREAM, keys.EVENT_GROUP)["pending"] == 0


@pytest.mark.parametrize("seconds", ["0", "600", "-1"])
def test_redeliver_after_must_stay_within_the_claims_life(seconds: str) -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="must be above 0 and below 600 seconds"):
        call_command("session_ng_worker", "--redeliver-after", seconds)

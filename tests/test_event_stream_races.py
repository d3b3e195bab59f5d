"""The event stream under races, corrupt keys and a full Redis: scenarios an
independent review found breaking what docs/events.rst promises. Each test
states the promise it checks; all but the Cluster routing check failed on
6c4bc39, the first version of the stream.

Interleavings between two processes are reproduced by driving one operation
step by step (``drive``) against the real Redis and doing what the other
process does between two of its round trips.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from session_ng import events, keys
from session_ng.backends.redis import SessionStore
from session_ng.signals import session_deleted, session_expired
from session_ng.store import client as store_client
from session_ng.store import driver, expiry, records
from tests.test_event_stream import expiring
from tests.worker_process import events as logged_events
from tests.worker_process import wait_until

NS = "session_ng"
STREAM = keys.event_stream(NS)
pytestmark = pytest.mark.django_db


def drive(operation: Any, before: Callable[[driver.Step], None]) -> Any:
    """driver.run(), calling ``before(step)`` ahead of every round trip."""
    client = store_client.get_client()
    try:
        step = next(operation)
        while True:
            before(step)
            try:
                reply = driver._run_sync(client, step)
            except redis.exceptions.ResponseError as exc:
                step = operation.throw(exc)
            else:
                step = operation.send(reply)
    except StopIteration as done:
        return done.value


def commands_of(step: driver.Step) -> list[str]:
    calls = step.calls if isinstance(step, driver.Batch) else [step]
    return [c.args[0] if isinstance(c, driver.Command) else "EVAL" for c in calls]


class Heard:
    def __init__(self) -> None:
        self.ends: list[tuple[str, str, str | None]] = []

    def __call__(self, sender: object, signal: object, **event: Any) -> None:
        kind = "expired" if signal is session_expired else "deleted"
        self.ends.append((kind, event["session_key"], event["user_id"]))


@pytest.fixture
def heard() -> Iterator[Heard]:
    receiver = Heard()
    session_expired.connect(receiver)
    session_deleted.connect(receiver)
    yield receiver
    session_expired.disconnect(receiver)
    session_deleted.disconnect(receiver)


# --- 1. one corrupt claim key holds back every end read with it ---------------


def test_a_claim_key_of_the_wrong_type_does_not_hold_back_the_other_ends(
    heard: Heard, r: redis.Redis
) -> None:
    # docs/events.rst (Logging): a key session_ng did not write that way is
    # repaired or skipped, "and goes on".
    good = [expiring(str(i)) for i in range(3)]
    bad = expiring("99")
    time.sleep(1.05)
    assert events.publish_ends([bad, *good], "expired") == 4
    claim = keys.session_event(NS, bad)
    r.delete(claim)
    r.hset(claim, "written", "by something else")  # a claim key that is no string
    errors = []
    # A worker's delivery, then another's that takes over what was left pending.
    for consumer, after in (("w1", None), ("w2", 0.05), ("w3", 0.05)):
        try:
            events.deliver_ends(consumer, after)
        except Exception as exc:
            errors.append(repr(exc)[:80])
        time.sleep(0.1)
    pending = r.xpending(STREAM, keys.EVENT_GROUP)["pending"]
    # The corrupt claim is replaced (logged) and its end sent too: a claim
    # that is no claim cannot say someone else reports the end, and an end
    # sent is better than one lost.
    assert sorted(k for _, k, _ in heard.ends) == sorted([bad, *good]), (errors, f"{pending}")
    assert pending == 0
    assert r.type(claim) == b"string"
    assert r.get(claim) is not None


# --- 2. the trim races the acknowledgements -----------------------------------


def test_the_trim_survives_an_acknowledgement_between_its_xinfo_and_its_xpending(
    r: redis.Redis,
) -> None:
    key = expiring("1")
    time.sleep(1.05)
    events.publish_ends([key], "expired")
    [end] = driver.run(expiry.take_ends(NS, "w", 10)).ends

    def another_worker_acknowledges(step: driver.Step) -> None:
        if commands_of(step) == ["XPENDING"]:
            r.xack(STREAM, keys.EVENT_GROUP, end.entry_id)

    now = int(time.time() * 1000)
    drive(expiry.trim_events(NS, now), another_worker_acknowledges)
    assert r.xlen(STREAM) == 0


# --- 3. a delete made outside session_ng loses its long claim -----------------


@pytest.mark.parametrize("publisher", ["races a delivery", "is killed after its XADD"])
def test_an_outside_delete_is_reported_once_whoever_claims_it(
    publisher: str, heard: Heard, r: redis.Redis
) -> None:
    # docs/events.rst: the claim of "a delete made outside session_ng whose
    # hash was gone" lives a day + 366 days, so that the sweep does not take
    # it for an unseen expiry when its bucket comes.
    s = SessionStore()
    s["_auth_user_id"] = "5"
    s.set_expiry(120)
    s.save()
    key = s.session_key
    assert key is not None
    bucket = int(r.hget(keys.session_hash(NS, key), "b") or 0)  # type: ignore[arg-type]
    r.delete(keys.session_hash(NS, key))  # DEL behind session_ng's back: a "del" notification

    class Killed(Exception):
        pass

    def between_xadd_and_claim(step: driver.Step) -> None:
        if "SET" in commands_of(step):  # the claims, after the XADDs
            if publisher == "races a delivery":
                events.deliver_ends("another-worker")  # it polls the stream all the time
            else:
                raise Killed  # SIGKILL

    with contextlib.suppress(Killed):
        drive(
            expiry.publish_ends(NS, "deleted", [key], events.entry_fields),
            between_xadd_and_claim,
        )
    events.deliver_ends("another-worker")
    assert heard.ends == [("deleted", key, None)]
    claim_ttl = r.pttl(keys.session_event(NS, key))
    # The claim outlives any bucket the session could be in ...
    assert claim_ttl > records.BUCKET_KEEP_MS + records.MAX_LIFE_MS - 60_000
    # ... so when the bucket's minute comes, the sweep finds the member gone
    # and its end claimed.
    events.sweep_and_publish(now=bucket * 60_000 + 1)
    events.deliver_ends("another-worker")
    assert heard.ends == [("deleted", key, None)], f"claim lived {claim_ttl} ms"


# --- 4. a batch slower than --redeliver-after is sent twice ----------------------


def test_receivers_much_quicker_than_redeliver_after_are_not_sent_twice(r: redis.Redis) -> None:
    # docs/events.rst: "Keep it [--redeliver-after] longer than your slowest
    # receiver takes, or a slow receiver's end is sent a second time". Here
    # each receiver takes a tenth of it.
    redeliver_after, receiver_takes = 0.5, 0.05
    ended = [expiring(str(i)) for i in range(40)]
    time.sleep(1.05)
    assert events.publish_ends(ended, "expired") == 40
    sent: collections.Counter[str] = collections.Counter()

    def receiver(sender: object, session_key: str, **kw: Any) -> None:
        sent[session_key] += 1
        time.sleep(receiver_takes)

    session_expired.connect(receiver, weak=False)
    try:
        first = threading.Thread(target=events.deliver_ends, args=("worker-1",))
        first.start()
        while first.is_alive():  # a second worker's sweeps, every 0.2 s
            events.deliver_ends("worker-2", redeliver_after)
            time.sleep(0.2)
        first.join()
    finally:
        session_expired.disconnect(receiver)
    assert set(sent) == set(ended)
    twice = [k[:6] for k, n in sent.items() if n > 1]
    assert twice == [], f"{len(twice)} of 40 sent twice"


@pytest.mark.standalone
def test_two_workers_with_quick_receivers_send_each_end_once(  # type: ignore[no-untyped-def]
    start, redis_server, log: Path
) -> None:
    # The same with real workers: receivers of 20 ms, --redeliver-after 1.
    options = ("--redeliver-after", "1")
    start(redis_server.url, event_delay=0.02, options=options)
    start(redis_server.url, event_delay=0.02, options=options)
    ended = {expiring(str(i % 20)) for i in range(300)}

    def found() -> collections.Counter[str]:
        return collections.Counter(
            e["session_key"] for e in logged_events(log) if e["kind"] == "expired"
        )

    assert wait_until(lambda: set(found()) >= ended, 90)
    time.sleep(2.0)
    twice = [k for k, n in found().items() if n > 1]
    assert twice == [], f"{len(twice)} of {len(ended)} sent twice"


# --- 5. a full Redis (noeviction) ------------------------------------------------


@pytest.mark.standalone
def test_a_full_redis_still_delivers_ends_already_claimed(  # type: ignore[no-untyped-def]
    heard: Heard, r: redis.Redis, redis_server
) -> None:
    # Ends published and claimed; one of them waited longer than its claim
    # (10 minutes: a worker outage), so delivering it needs a SET. Redis is
    # full (noeviction): that SET is refused. The others need no write but
    # the XACK, which a full Redis accepts.
    claimed = [expiring(str(i)) for i in range(3)]
    waited = expiring("98")
    driver.run(expiry.ensure_group(NS))  # as a worker made it at its start
    time.sleep(1.05)
    assert events.publish_ends([waited, *claimed], "expired") == 4
    r.delete(keys.session_event(NS, waited))  # its claim ran out
    plain = redis.Redis.from_url(redis_server.url)
    plain.config_set("maxmemory-policy", "noeviction")
    plain.config_set("maxmemory", "1")
    errors = []
    try:
        for consumer, after in (("w1", None), ("w2", 0.05)):
            try:
                events.deliver_ends(consumer, after)
            except Exception as exc:
                errors.append(repr(exc)[:90])
            time.sleep(0.1)
    finally:
        plain.config_set("maxmemory", "0")
    # All four: the claim that ran out is taken again (claim.lua may write
    # on a full Redis: a claim is a few bytes, and the ended sessions free far
    # more).
    assert sorted(k for _, k, _ in heard.ends) == sorted([*claimed, waited]), errors


# --- 7. clearsessions alone never trims the stream --------------------------------


def test_clearsessions_without_a_worker_leaves_no_acknowledged_entries(r: redis.Redis) -> None:
    # docs/engine.rst: "Without a worker, run clearsessions regularly";
    # docs/events.rst: an entry goes once every group acknowledged it, one
    # older than a day whatever the groups did, "so a group nobody reads any
    # more cannot fill Redis". Only the worker that sweeps ever trims.
    for _run in range(3):  # three cron runs
        ended = [expiring(str(i)) for i in range(5)]
        time.sleep(1.05)
        assert events.sweep_and_report(touch_current=True) == 5
    assert r.xpending(STREAM, keys.EVENT_GROUP)["pending"] == 0
    assert r.xlen(STREAM) == 0, f"{r.xlen(STREAM)} entries kept, all acknowledged"
    assert ended


# --- 6. Redis Cluster: the stream commands' routing (passes: a check) --------------

from tests.test_cluster import cluster, on_cluster  # noqa: E402, F401


@pytest.mark.slow
@pytest.mark.standalone
def test_every_stream_command_is_routed_on_a_cluster(on_cluster: Any, heard: Heard) -> None:  # noqa: F811
    ended = [expiring(str(i)) for i in range(6)]
    time.sleep(1.05)
    assert events.publish_ends(ended, "expired") == 6  # XADD, then claims on other nodes
    assert len(driver.run(expiry.take_ends(NS, "dead", 2)).ends) == 2  # XREADGROUP
    now = int(time.time() * 1000)
    # XINFO GROUPS, XPENDING (2 pending), XTRIM, XINFO CONSUMERS
    assert driver.run(expiry.trim_events(NS, now)) == 0
    time.sleep(0.05)
    assert events.deliver_ends("alive", redeliver_after=0.01) == 6  # XAUTOCLAIM, claim.lua, XACK
    assert driver.run(expiry.trim_events(NS, now)) == 6
    assert on_cluster.xlen(STREAM) == 0

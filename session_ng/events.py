"""Session ends, reported durably: publishing them to the event stream and
delivering them as signals (the worker's, and ``clear_expired()``'s).

An end the worker or ``clearsessions`` finds is published (an entry of the
Redis Stream ``NS:events``, then claimed with the entry's id), and delivered
through the consumer group: its signal sent, the entry acknowledged (see
``session_ng.store.expiry`` and docs/events.rst). The worker's loop is ``session_ng.worker``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from session_ng.attributes import decode_all
from session_ng.conf import conf
from session_ng.signals import session_deleted, session_expired
from session_ng.store import driver, expiry, records
from session_ng.store.records import Record

logger = logging.getLogger("session_ng.worker")

# Entries read per round trip of the consumer group.
DELIVER_BATCH = 100
# How long an entry read by a consumer stays unacknowledged before another
# takes it over (the first died, or is stuck in a receiver): the default of
# the worker's --redeliver-after.
REDELIVER_AFTER = 60.0


class Worker:
    """The ``sender`` of the ends the worker and ``clearsessions`` report
    (docs/events.rst); the worker's loop, ``session_ng.worker.Worker``, is a
    subclass."""


# --- publishing and delivering ends (the worker's, and clear_expired()'s) ------


def _serializer() -> Any:
    """SESSION_SERIALIZER, as the session store uses it."""
    return import_string(settings.SESSION_SERIALIZER)()


def entry_fields(
    kind: str, session_key: str, record: Record | records.Corrupt | None
) -> list[str | bytes]:
    """The fields of an end's stream entry (docs/events.rst, "The event
    stream"): what the signal will carry, with the data encoded by
    ``SESSION_SERIALIZER`` (JSON by default), so that services outside Django
    can read it too."""
    data: dict[str, Any] = {}
    user = ""
    serializer = _serializer()
    if isinstance(record, Record):
        data = decode_all(serializer, record)
        user = record.user or ""
    return ["kind", kind, "session", session_key, "user", user, "data", serializer.dumps(data)]


def _event(end: expiry.StreamEnd, serializer: Any) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if end.data:
        try:
            loaded = serializer.loads(end.data)
        except Exception:
            # Published with another SESSION_SERIALIZER, or by someone else.
            logger.warning(
                "event %s: data not readable with SESSION_SERIALIZER; sent as {}", end.entry_id
            )
        else:
            data = loaded if isinstance(loaded, dict) else {}
    return {"session_key": end.session_key, "user_id": end.user, "data": data}


def _log_outcome(kind: str, event: dict[str, Any], results: list[tuple[Any, Any]]) -> None:
    for receiver, outcome in results:
        if isinstance(outcome, Exception):
            logger.error(
                "receiver %r of session_%s raised",
                receiver,
                kind,
                exc_info=(type(outcome), outcome, outcome.__traceback__),
            )
    logger.info("session %s… %s (user %s)", event["session_key"][:6], kind, event["user_id"])


def _signal(kind: str) -> Any:
    return session_expired if kind == "expired" else session_deleted


def publish_ends(session_keys: Sequence[str], kind: str) -> int:
    """Put the ends of ``session_keys`` ("expired" or "deleted") in the event
    stream, each once however many publish it; how many were appended."""
    return driver.run(
        expiry.publish_ends(conf.snapshot().namespace, kind, session_keys, entry_fields)
    )


async def apublish_ends(session_keys: Sequence[str], kind: str) -> int:
    return await driver.arun(
        expiry.publish_ends(conf.snapshot().namespace, kind, session_keys, entry_fields)
    )


def _reads(
    redeliver_after: float | None, limit: int | None
) -> Generator[tuple[int | None, str], expiry.Taken, None]:
    """The reads of one delivery, as (reclaim idle ms or None, cursor): with
    ``redeliver_after``, first the entries dead consumers left (through the
    whole pending list), then the new ones, until none is left or about
    ``limit`` entries were read (the cursor is XAUTOCLAIM's; XREADGROUP
    ignores it). Shared by the sync and the async driver."""
    seen = 0
    if redeliver_after is not None:
        idle_ms, cursor = int(redeliver_after * 1000), "0-0"
        while limit is None or seen < limit:
            taken = yield idle_ms, cursor
            seen += taken.read
            cursor = taken.cursor or "0-0"
            if cursor == "0-0":
                break
    while limit is None or seen < limit:
        taken = yield None, "0-0"
        seen += taken.read
        if not taken.read:
            break


def _delivery(
    consumer: str, redeliver_after: float | None, limit: int | None
) -> Generator[driver.Operation[Any] | expiry.StreamEnd, Any, int]:
    """One delivery, as the steps the sync and the async loop take: it yields
    an operation to run (and receives its result) or an end whose signal to
    send (and receives None once its receivers ran); returns how many were
    sent. Each end is acknowledged in the round trip that checks the next is
    still ours, so only after its receivers ran."""
    ns = conf.snapshot().namespace
    sent = 0
    reads = _reads(redeliver_after, limit)
    try:
        reclaim, cursor = next(reads)
        while True:
            taken = yield expiry.take_ends(ns, consumer, DELIVER_BATCH, reclaim, cursor)
            done: str | None = None
            for end in taken.ends:
                # Acknowledge the last one sent; send this one if still ours.
                mine = yield expiry.turn(ns, consumer, done, end.entry_id)
                done = None
                if mine:
                    yield end
                    done, sent = end.entry_id, sent + 1
            if done is not None:
                yield expiry.turn(ns, consumer, done, None)
            reclaim, cursor = reads.send(taken)
    except StopIteration:
        return sent


def deliver_ends(
    consumer: str, redeliver_after: float | None = None, limit: int | None = None
) -> int:
    """Send the signals of the stream's waiting ends, as ``consumer`` of the
    group, one at a time, each acknowledged once its receivers ran; how many
    were sent. With ``redeliver_after``, entries other consumers left
    unacknowledged for that many seconds are taken over first. Stops after
    about ``limit`` entries (None: when none is left)."""
    serializer = _serializer()
    delivery = _delivery(consumer, redeliver_after, limit)
    reply: Any = None
    try:
        while True:
            step = delivery.send(reply)
            if isinstance(step, expiry.StreamEnd):
                event = _event(step, serializer)
                results = _signal(step.kind).send_robust(sender=Worker, **event)
                _log_outcome(step.kind, event, results)
                reply = None
            else:
                reply = driver.run(step)
    except StopIteration as stop:
        sent: int = stop.value
        return sent


async def adeliver_ends(
    consumer: str, redeliver_after: float | None = None, limit: int | None = None
) -> int:
    serializer = _serializer()
    delivery = _delivery(consumer, redeliver_after, limit)
    reply: Any = None
    try:
        while True:
            step = delivery.send(reply)
            if isinstance(step, expiry.StreamEnd):
                event = _event(step, serializer)
                results = await _signal(step.kind).asend_robust(sender=Worker, **event)
                _log_outcome(step.kind, event, results)
                reply = None
            else:
                reply = await driver.arun(step)
    except StopIteration as stop:
        sent: int = stop.value
        return sent


def _log_sweep(report: expiry.SweepReport, published: int) -> None:
    if report.buckets or published or report.refiled:
        logger.debug(
            "swept %d buckets: %d ended, %d re-filed, %d dropped",
            report.buckets,
            published,
            report.refiled,
            report.dropped,
        )


def sweep_and_publish(now: int | None = None, touch_current: bool = False) -> int:
    """Sweep the due buckets and publish what ended; returns how many ends
    were appended to the stream.

    Sessions found ended with their data still there are published with it;
    those found with nothing left (they ended unseen longer ago than the grace
    period) without data, unless their end was claimed already (session_ng's
    own deletes, rotations). ``touch_current`` also looks at the current
    minute's bucket, so Redis expires its sessions on time.
    """
    ns = conf.snapshot().namespace
    now = int(time.time() * 1000) if now is None else now
    report = driver.run(expiry.sweep(ns, now, entry_fields))
    published = report.published
    if touch_current:
        ended = driver.run(expiry.touch_bucket(ns, records.bucket_minute(now)))
        published += publish_ends(ended, "expired")
    _log_sweep(report, published)
    return published


async def asweep_and_publish(now: int | None = None, touch_current: bool = False) -> int:
    ns = conf.snapshot().namespace
    now = int(time.time() * 1000) if now is None else now
    report = await driver.arun(expiry.sweep(ns, now, entry_fields))
    published = report.published
    if touch_current:
        ended = await driver.arun(expiry.touch_bucket(ns, records.bucket_minute(now)))
        published += await apublish_ends(ended, "expired")
    _log_sweep(report, published)
    return published


# clearsessions' consumer: one name for every run (a cron would otherwise
# add a consumer to the group each time).
CLEARSESSIONS_CONSUMER = "clearsessions"


def sweep_and_report(now: int | None = None, touch_current: bool = False) -> int:
    """What ``clear_expired()`` runs: the sweep, the delivery of every end
    waiting in the stream (those it published, those a worker left), and the
    trim (where no worker runs, nothing else trims); returns how many signals
    were sent."""
    sweep_and_publish(now, touch_current)
    sent = deliver_ends(CLEARSESSIONS_CONSUMER, REDELIVER_AFTER)
    driver.run(expiry.trim_events(conf.snapshot().namespace, int(time.time() * 1000)))
    return sent


async def asweep_and_report(now: int | None = None, touch_current: bool = False) -> int:
    await asweep_and_publish(now, touch_current)
    sent = await adeliver_ends(CLEARSESSIONS_CONSUMER, REDELIVER_AFTER)
    await driver.arun(expiry.trim_events(conf.snapshot().namespace, int(time.time() * 1000)))
    return sent

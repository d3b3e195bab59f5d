"""Ends: the sweep of the expiration buckets, the event stream (publishing,
claiming and delivering ends, trimming), and the sweep lock."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions

from session_ng import keys
from session_ng.store.client import get_client
from session_ng.store.driver import (
    CLAIM,
    FORGET_CONSUMER,
    STREAM_TURN,
    SWEEP_MEMBER,
    Batch,
    Command,
    Eval,
    Operation,
    skip_wrong_types,
    wrong_type,
)
from session_ng.store.records import (
    BUCKET_KEEP_MS,
    CLAIM_MS,
    CORRUPT,
    MAX_LIFE_MS,
    MINUTE_MS,
    Corrupt,
    Record,
    member_keys,
    parse_record,
    short_key,
)
from session_ng.store.sessions import Ended

logger = logging.getLogger("session_ng")


@dataclass
class SweepReport:
    buckets: int = 0
    expired: list[Ended] = field(default_factory=list)
    # Members whose hash and shadow key are both gone: ended unseen longer ago
    # than the grace period, or deleted (those claimed their end).
    vanished: list[str] = field(default_factory=list)
    refiled: int = 0
    dropped: int = 0
    # Ends appended to the event stream (those not claimed already).
    published: int = 0


SWEEP_BATCH = 500
# Minutes whose buckets a catching-up sweep looks for in one round trip.
SWEEP_SCAN_MINUTES = 240
# Buckets live BUCKET_KEEP_MS past their minute; older ones are gone already.
SWEEP_LOOKBACK_MINUTES = BUCKET_KEEP_MS // MINUTE_MS + 1


def sweep(ns: str, now: int, entry: EntryFields) -> Operation[SweepReport]:
    """Process every expiration bucket that is due.

    A bucket lists sessions whose life ended, at the latest, in its minute. Those
    that are over are published to the event stream (``entry`` makes their
    entries) and leave their user's index; those whose idle timer slid since
    they were filed move to the bucket they belong in now; those deleted
    meanwhile are dropped. A bucket is deleted only once its ends are in the
    stream, so a sweep that dies half-way loses none. Safe to run
    concurrently: every member step is idempotent, and an end is published
    once (see ``publish_ends``).
    """
    report = SweepReport()
    due = now // MINUTE_MS
    cursor_key = keys.sweep_cursor(ns)
    first = due - SWEEP_LOOKBACK_MINUTES
    swept = yield from _read_cursor(cursor_key)
    if swept is not None and swept <= due + SWEEP_LOOKBACK_MINUTES:
        first = max(first, swept + 1)
    elif swept is not None:
        logger.warning(
            "session store: sweep cursor %s is a day ahead of the clock (%d); "
            "sweeping the last day's buckets again",
            cursor_key,
            swept,
        )
    minutes = range(first, due + 1)
    for start in range(0, len(minutes), SWEEP_SCAN_MINUTES):
        span = minutes[start : start + SWEEP_SCAN_MINUTES]
        if len(span) == 1:
            filled = list(span)  # the usual sweep: one new minute, read at once
        else:
            # Catching up (a first sweep, a worker back after a while): most
            # of these buckets are empty or gone. One round trip finds the
            # others, instead of two for every minute of up to a day, which
            # kept a starting worker from its notifications for a second.
            found = yield Batch(
                [Command(("EXISTS", keys.expiration_bucket(ns, minute))) for minute in span]
            )
            filled = [minute for minute, exists in zip(span, found, strict=True) if exists]
        for minute in filled:
            seen = len(report.expired), len(report.vanished)
            yield from _sweep_bucket(ns, now, minute, report)
            ends = [(e.session_key, e.record) for e in report.expired[seen[0] :]]
            ends += [(key, None) for key in report.vanished[seen[1] :]]
            report.published += yield from _publish_found(ns, "expired", ends, entry)
            yield Batch(
                [
                    Command(("DEL", keys.expiration_bucket(ns, minute))),
                    Command(("SET", cursor_key, minute)),
                ]
            )
        if not filled or filled[-1] != span[-1]:
            yield Command(("SET", cursor_key, span[-1]))
        report.buckets += len(span)
    return report


def _read_cursor(cursor_key: str) -> Operation[int | None]:
    """The last minute swept, or None (never swept, or the cursor is corrupt:
    logged, and overwritten by the sweep's next SET)."""
    try:
        cursor = yield Command(("GET", cursor_key))
    except redis.exceptions.ResponseError as exc:
        if not wrong_type(exc):
            raise
        cursor = b"(a key of the wrong type)"
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        logger.warning(
            "session store: sweep cursor %s holds no minute (%r); "
            "sweeping the last day's buckets again",
            cursor_key,
            cursor[:40],
        )
        return None


def _bucket_members(ns: str, minute: int) -> Operation[tuple[list[str], int]]:
    """The session keys filed under ``minute``, and how many members were
    no session key (ignored). A bucket that is no set
    (corrupt) is logged and deleted: nothing can be filed in it, and nothing
    that is no session key can be swept."""
    bucket = keys.expiration_bucket(ns, minute)
    try:
        members = yield Command(("SMEMBERS", bucket))
    except redis.exceptions.ResponseError as exc:
        if not wrong_type(exc):
            raise
        logger.warning("session store: expiration bucket %s is no set; deleted", bucket)
        yield Command(("DEL", bucket))
        return [], 0
    return member_keys(members, bucket)


def _sweep_bucket(ns: str, now: int, minute: int, report: SweepReport) -> Operation[None]:
    """Sweep the members of one bucket into ``report`` (the bucket is left)."""
    session_keys, junk = yield from _bucket_members(ns, minute)
    report.dropped += junk
    for start in range(0, len(session_keys), SWEEP_BATCH):
        chunk = session_keys[start : start + SWEEP_BATCH]
        calls = [
            Eval(SWEEP_MEMBER, (keys.session_hash(ns, k), keys.session_shadow(ns, k)), (now,))
            for k in chunk
        ]
        replies = skip_wrong_types(calls, (yield Batch(calls, errors_as_values=True)))
        follow_up: list[Eval | Command] = []
        for session_key, reply in zip(chunk, replies, strict=True):
            if reply is None:
                # Its hash is of the wrong type: a load treats it as absent,
                # so it has ended; reported without data.
                report.expired.append(Ended(session_key, CORRUPT))
                continue
            status = reply[0]
            if status == b"alive":
                report.refiled += 1
                new_minute, user = reply[1].decode(), reply[2].decode()
                if new_minute:
                    new_bucket = keys.expiration_bucket(ns, int(new_minute))
                    follow_up.append(Command(("SADD", new_bucket, session_key)))
                    expire_at = int(new_minute) * MINUTE_MS + BUCKET_KEEP_MS
                    follow_up.append(Command(("PEXPIREAT", new_bucket, expire_at)))
                    if user:
                        # Keep the index alive as long as this session.
                        follow_up.append(
                            Command(("PEXPIREAT", keys.user_index(ns, user), expire_at, "GT"))
                        )
            elif status == b"expired":
                record = parse_record(session_key, reply[1])
                report.expired.append(Ended(session_key, record))
                if isinstance(record, Record) and record.user:
                    follow_up.append(
                        Command(("HDEL", keys.user_index(ns, record.user), session_key))
                    )
            else:
                report.vanished.append(session_key)
        if follow_up:
            skip_wrong_types(follow_up, (yield Batch(follow_up, errors_as_values=True)))


# --- the event stream: ends reported durably -----------------------------------
#
# An end the worker (or clearsessions) finds is *published*: appended to the
# stream, and claimed with the id of its entry (SET NX on the session's claim
# key, which session_ng's own deletes and Cluster rotations take first). It is
# then *delivered*: read through the consumer group, sent as a signal, and
# acknowledged. A worker killed anywhere in between loses nothing:
#
# - before its entry is in the stream, the end is still where it was found
#   (the bucket is deleted only after its ends are published; a notification
#   missed is caught by the sweep);
# - after, the entry waits in the stream, or in the dead consumer's pending
#   list until another consumer reclaims it (XAUTOCLAIM);
# - a claim that holds the entry's own id means "deliver": a reclaimed entry
#   is delivered again only if it was in flight (sent, not yet acknowledged).
#
# Two publishers of the same end (two workers hearing one notification, a
# notification and a sweep) append two entries; the claim holds the id of one,
# and the other is acknowledged unsent. No step needs two slots at once, so
# Redis Cluster works the same way.

# Entries no consumer group has acknowledged are still trimmed once this old,
# as long as the buckets are kept: a day of events waits for a stopped worker.
EVENTS_KEEP_MS = BUCKET_KEEP_MS
# A consumer of the group that has nothing pending and has not been seen for
# this long (a worker that stopped) is removed from the group.
CONSUMER_KEEP_MS = BUCKET_KEEP_MS
END_KINDS = ("expired", "deleted")

# What an end's stream entry holds (built by events.py, which can decode):
# (kind, session key, what the session held) -> the entry's fields and values.
EntryFields = Callable[[str, str, "Record | Corrupt | None"], list[str | bytes]]


def claim_ms(kind: str, record: Record | Corrupt | None) -> int:
    """How long an end's claim lasts.

    Longer than the grace period and than any worker takes to act on a
    notification; one claim lasts longer: a delete made outside session_ng
    whose hash was gone (its bucket is unknown), kept until any bucket the
    session could be filed in has been swept, so the sweep does not take it
    for an unseen expiry.
    """
    if kind == "deleted" and not (isinstance(record, Record) and record.bucket is not None):
        return BUCKET_KEEP_MS + MAX_LIFE_MS
    return CLAIM_MS


def _entry_claim_ms(end: StreamEnd) -> int:
    """``claim_ms`` for a consumer that claims an entry whose publisher did
    not (it died first, or the consumer got there first): from what the
    entry carries, a delete without a user (the hash was gone, or an
    anonymous session's) gets the long claim."""
    return BUCKET_KEEP_MS + MAX_LIFE_MS if end.kind == "deleted" and end.user is None else CLAIM_MS


def _claimed_by(reply: Any, session_key: str) -> str:
    """Who holds a claim, from claim.lua's reply (logging a key it replaced)."""
    held, replaced = reply
    if replaced:
        logger.warning(
            "session store: the claim of session %s was a key of the wrong type; replaced",
            short_key(session_key),
        )
    return _text(held)


def _unclaimed(replies: Sequence[Any]) -> list[bool]:
    """From TYPE replies of claim keys: which ends nobody claimed. A key of
    another type is no claim (claim.lua replaces it): the end is published
    rather than lost."""
    return [_text(reply) != "string" for reply in replies]


def publish_ends(
    ns: str, kind: str, session_keys: Sequence[str], entry: EntryFields
) -> Operation[int]:
    """Publish the ends of ``session_keys`` (found by a notification or by
    looking at a bucket), with what their hashes hold; an end already claimed
    (session_ng's own delete, another publisher) is left out. Returns how many
    entries were appended. Three round trips, whatever the number of keys."""
    unique = list(dict.fromkeys(session_keys))  # a key listed twice: once
    if not unique:
        return 0
    claims = [Command(("TYPE", keys.session_event(ns, k))) for k in unique]
    reads = [Command(("HGETALL", keys.session_hash(ns, k))) for k in unique]
    replies = yield Batch(claims + reads, errors_as_values=True)
    hashes = skip_wrong_types(reads, replies[len(unique) :])
    for reply in replies[: len(unique)]:
        if isinstance(reply, Exception):
            raise reply
    free = _unclaimed(replies[: len(unique)])
    found: list[tuple[str, Record | Corrupt | None]] = []
    for session_key, unclaimed, fields in zip(unique, free, hashes, strict=True):
        if not unclaimed:
            continue
        record: Record | Corrupt | None
        if fields is None:
            record = CORRUPT  # a hash of the wrong type: published without data
        else:
            record = parse_record(session_key, fields) if fields else None
        found.append((session_key, record))
    return (yield from _append_ends(ns, kind, found, entry))


def _publish_found(
    ns: str, kind: str, found: Sequence[tuple[str, Record | Corrupt | None]], entry: EntryFields
) -> Operation[int]:
    """Publish ends whose records the caller read already (the sweep)."""
    first: dict[str, Record | Corrupt | None] = {}
    for session_key, record in found:
        first.setdefault(session_key, record)  # a key found twice: once
    unique = list(first.items())
    if not unique:
        return 0
    types = yield Batch([Command(("TYPE", keys.session_event(ns, k))) for k, _ in unique])
    ends = [end for end, free in zip(unique, _unclaimed(types), strict=True) if free]
    return (yield from _append_ends(ns, kind, ends, entry))


def _append_ends(
    ns: str, kind: str, ends: Sequence[tuple[str, Record | Corrupt | None]], entry: EntryFields
) -> Operation[int]:
    if not ends:
        return 0
    stream = keys.event_stream(ns)
    # The entries first, then the claims: a claim never names an entry that
    # is not in the stream (on Cluster they are on different nodes, and a
    # pipeline to several nodes has no order between them).
    appends = [Command(("XADD", stream, "*", *entry(kind, k, record))) for k, record in ends]
    ids = yield Batch(appends, errors_as_values=True)
    if any(wrong_type(reply) for reply in ids):
        yield from _replace_stream(ns)
        ids = yield Batch(appends)
    for reply in ids:
        if isinstance(reply, Exception):
            raise reply
    claims = [
        Eval(CLAIM, (keys.session_event(ns, key),), (entry_id, claim_ms(kind, record)))
        for (key, record), entry_id in zip(ends, ids, strict=True)
    ]
    follow_up: list[Eval | Command] = []
    for session_key, record in ends:
        follow_up += _end_follow_up(ns, session_key, kind, record)
    calls = [*claims, *follow_up]
    # The ends are in the stream: a corrupt index or bucket must not stop the rest.
    replies = skip_wrong_types(calls, (yield Batch(calls, errors_as_values=True)))
    for (session_key, _), reply in zip(ends, replies[: len(claims)], strict=True):
        _claimed_by(reply, session_key)  # logs a claim key it replaced
    return len(ends)


def _end_follow_up(
    ns: str, session_key: str, kind: str, record: Record | Corrupt | None
) -> list[Eval | Command]:
    """What a published end leaves to clean up: the user's index entry, and
    for a delete, the bucket entry and whatever is left of the session (its
    data is in the stream entry now)."""
    follow_up: list[Eval | Command] = []
    if isinstance(record, Record) and record.user:
        follow_up.append(Command(("HDEL", keys.user_index(ns, record.user), session_key)))
    if kind != "deleted":
        return follow_up
    if isinstance(record, Record) and record.bucket is not None:
        bucket = keys.expiration_bucket(ns, record.bucket)
        follow_up.append(Command(("SREM", bucket, session_key)))
    follow_up.append(
        Command(("DEL", keys.session_hash(ns, session_key), keys.session_shadow(ns, session_key)))
    )
    return follow_up


@dataclass(frozen=True)
class StreamEnd:
    """An entry of the event stream that this consumer is to deliver."""

    entry_id: str
    kind: str
    session_key: str
    user: str | None
    data: bytes


def ensure_group(ns: str) -> Operation[None]:
    """Create the consumer group (and the stream) if they are not there; a
    new group starts at the stream's first entry, so nothing published before
    it existed is missed."""
    try:
        yield Command(
            ("XGROUP", "CREATE", keys.event_stream(ns), keys.EVENT_GROUP, "0", "MKSTREAM")
        )
    except redis.exceptions.ResponseError as exc:
        if wrong_type(exc):
            yield from _replace_stream(ns)
        elif not str(exc).startswith("BUSYGROUP"):
            raise


def _replace_stream(ns: str) -> Operation[None]:
    """The stream's key holds something else (written by hand, a bad
    restore): nothing of ours is in it, and while it is there no end can be
    published. Logged, and replaced by an empty stream with the group."""
    stream = keys.event_stream(ns)
    logger.warning("session store: event stream %s is a key of the wrong type; replaced", stream)
    yield Command(("DEL", stream))
    yield Command(("XGROUP", "CREATE", stream, keys.EVENT_GROUP, "0", "MKSTREAM"))


@dataclass(frozen=True)
class Taken:
    """What one read of the event stream gave a consumer."""

    # Entries read (sent or not): 0 when there was nothing to read.
    read: int
    # Those this consumer is to send, in the stream's order.
    ends: list[StreamEnd]
    # XAUTOCLAIM's cursor: where the next look for idle entries starts
    # ("0-0": the pending list was looked at to its end). None for XREADGROUP.
    cursor: str | None = None


def take_ends(
    ns: str, consumer: str, count: int, reclaim_idle_ms: int | None = None, cursor: str = "0-0"
) -> Operation[Taken]:
    """Read up to ``count`` entries for ``consumer``: those it is to send
    (their claim holds their id) are returned, the others acknowledged here.

    Without ``reclaim_idle_ms``: entries no consumer has read yet. With it:
    entries another consumer read and has not acknowledged for that long (it
    died, or is stuck), taken over, from ``cursor`` on.
    """
    stream = keys.event_stream(ns)
    read: tuple[str | int, ...]
    if reclaim_idle_ms is None:
        read = ("XREADGROUP", "GROUP", keys.EVENT_GROUP, consumer, "COUNT", count)
        read += ("STREAMS", stream, ">")
    else:
        read = ("XAUTOCLAIM", stream, keys.EVENT_GROUP, consumer, reclaim_idle_ms, cursor)
        read += ("COUNT", count)
    try:
        reply = yield Command(read)
    except redis.exceptions.ResponseError as exc:
        if wrong_type(exc):
            yield from _replace_stream(ns)
            return Taken(0, [], None if reclaim_idle_ms is None else "0-0")
        if not str(exc).startswith("NOGROUP"):
            raise
        # The stream was deleted (or never made): make the group and read again.
        yield from ensure_group(ns)
        reply = yield Command(read)
    # XREADGROUP: [[stream, entries]] or nothing; XAUTOCLAIM: [cursor, entries, gone].
    if reclaim_idle_ms is None:
        entries, next_cursor = (reply[0][1] if reply else []), None
    else:
        entries, next_cursor = reply[1], _text(reply[0])
    candidates: list[StreamEnd] = []
    unsent: list[str] = []
    for entry_id, fields in entries:
        end = _stream_end(_text(entry_id), fields)
        if end is None:
            unsent.append(_text(entry_id))
        else:
            candidates.append(end)
    ours: list[StreamEnd] = []
    if candidates:
        calls = [
            Eval(
                CLAIM,
                (keys.session_event(ns, end.session_key),),
                (end.entry_id, _entry_claim_ms(end)),
            )
            for end in candidates
        ]
        claims = yield Batch(calls, errors_as_values=True)
        for end, held in zip(candidates, claims, strict=True):
            if isinstance(held, Exception):
                # Only what Redis refuses now (claim.lua repairs keys of the
                # wrong type and may run on a full Redis): the entry stays
                # pending and is taken over later; the others are sent.
                logger.warning(
                    "session store: the end of session %s not sent now: %s",
                    short_key(end.session_key),
                    str(held)[:300],
                )
            # Our own id: claimed by its publisher, or just now (the
            # publisher died first); if it was delivered before, that delivery
            # was in flight when its consumer died.
            elif _claimed_by(held, end.session_key) == end.entry_id:
                ours.append(end)
            else:
                unsent.append(end.entry_id)
    if unsent:
        yield Command(("XACK", stream, keys.EVENT_GROUP, *unsent))
    return Taken(len(entries), ours, next_cursor)


def turn(ns: str, consumer: str, sent: str | None, next_id: str | None) -> Operation[bool]:
    """Acknowledge the entry ``sent`` (if any) and tell whether ``next_id``
    (if any) is still ``consumer``'s to send, resetting its idle time: one
    round trip between two signals (see stream_turn.lua)."""
    reply = yield Eval(
        STREAM_TURN,
        (keys.event_stream(ns),),
        (keys.EVENT_GROUP, consumer, sent or "", next_id or ""),
    )
    return bool(reply)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _stream_end(entry_id: str, fields: dict[bytes, bytes] | None) -> StreamEnd | None:
    """An entry as published, or None (trimmed meanwhile, or junk that
    something else appended: logged, and acknowledged unsent)."""
    if fields is None:
        return None
    kind = _text(fields.get(b"kind", b""))
    session_key = _text(fields.get(b"session", b""))
    if kind not in END_KINDS or not keys.is_valid_session_key(session_key):
        logger.warning("session store: event stream entry %s is no session end; skipped", entry_id)
        return None
    user = fields.get(b"user") or None
    return StreamEnd(
        entry_id, kind, session_key, _text(user) if user else None, fields.get(b"data", b"")
    )


def _stream_id(value: bytes | str) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return int(ms), int(seq or 0)


def _info(reply: Any) -> dict[str, Any]:
    """One XINFO record: redis-py parses it into a dict, or leaves the flat
    list of names and values (a command it has no parser for)."""
    if isinstance(reply, dict):
        return {_text(k): v for k, v in reply.items()}
    return {_text(k): v for k, v in zip(reply[::2], reply[1::2], strict=True)}


def trim_events(ns: str, now: int) -> Operation[int]:
    """Drop the entries every consumer group has acknowledged (and those older
    than ``EVENTS_KEEP_MS`` whatever the groups did), and the group's consumers
    that left; returns how many entries went."""
    stream = keys.event_stream(ns)
    try:
        groups = yield Command(("XINFO", "GROUPS", stream))
    except redis.exceptions.ResponseError as exc:
        if wrong_type(exc):
            yield from _replace_stream(ns)
            return 0
        if "no such key" in str(exc).lower():
            return 0
        raise
    floor = (now - EVENTS_KEEP_MS, 0)
    bound: tuple[int, int] | None = None
    infos = [_info(group) for group in groups]
    for info in infos:
        name, pending = info["name"], int(info["pending"])
        summary = (yield Command(("XPENDING", stream, name))) if pending else None
        if summary and summary["min"] is not None:
            oldest = _stream_id(summary["min"])
        else:  # nothing pending (maybe acknowledged since XINFO looked)
            oldest = _stream_id(info["last-delivered-id"])
            oldest = (oldest[0], oldest[1] + 1)
        bound = oldest if bound is None else min(bound, oldest)
    minid = floor if bound is None else max(bound, floor)
    trimmed = yield Command(("XTRIM", stream, "MINID", f"{minid[0]}-{minid[1]}"))
    if not any(_text(info["name"]) == keys.EVENT_GROUP for info in infos):
        return int(trimmed)
    consumers = yield Command(("XINFO", "CONSUMERS", stream, keys.EVENT_GROUP))
    for consumer in map(_info, consumers):
        if int(consumer["pending"]) == 0 and int(consumer["idle"]) > CONSUMER_KEEP_MS:
            yield Eval(FORGET_CONSUMER, (stream,), (keys.EVENT_GROUP, consumer["name"]))
    return int(trimmed)


def touch_bucket(ns: str, minute: int) -> Operation[list[str]]:
    """Look at every session filed under ``minute``: Redis expires those whose
    time has come as they are looked at. Returns the keys found ended."""
    session_keys, _ = yield from _bucket_members(ns, minute)
    if not session_keys:
        return []
    replies = yield Batch([Command(("EXISTS", keys.session_shadow(ns, k))) for k in session_keys])
    # Every member whose shadow key is gone ended; those session_ng deleted
    # left the bucket as they went, and deletes made behind its back hold a
    # claim, so the caller's claim sorts out who reports what.
    return [k for k, alive in zip(session_keys, replies, strict=True) if not alive]


def sweep_lock(ns: str, ttl_ms: int) -> Any:
    """The lock of the one worker that sweeps: redis-py's ``Lock`` (``SET NX
    PX`` with the holder's token, renewed and released by its own scripts)
    on the sync client, lasting ``ttl_ms`` unless renewed."""
    return get_client().lock(keys.worker_lock(ns), timeout=ttl_ms / 1000, thread_local=False)


# What the worker needs Redis to publish: E keyevent channel, g generic
# commands (del), x expired.

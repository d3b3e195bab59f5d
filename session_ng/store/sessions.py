"""The request path's operations: load, renewal, save (full, lean, split on
Cluster), import, delete, the user index, and looks at other sessions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions

from session_ng import keys
from session_ng.conf import conf
from session_ng.store.driver import (
    DELETE,
    INDEX_ADD,
    RETIRE,
    SAVE,
    TOUCH,
    UPDATE,
    Batch,
    Command,
    Eval,
    Operation,
    is_outage,
    log_notes,
    skip_wrong_types,
    split_slots,
    wrong_type,
)
from session_ng.store.records import (
    BUCKET_KEEP_MS,
    CLAIM_MS,
    CORRUPT,
    F_ACCESSED,
    F_RENEWED,
    F_USER,
    GRACE_MS,
    MINUTE_MS,
    Corrupt,
    Record,
    SavePlan,
    attribute_field,
    attribute_fields,
    chunk_fields,
    ends_at,
    log_corrupt,
    member_keys,
    now_ms,
    parse_record,
    renewal_due,
    renewal_period_ms,
    short_key,
)

logger = logging.getLogger("session_ng")


def load(
    ns: str,
    session_key: str,
    now: int,
    refresh: bool,
    others: Sequence[str] = (),
    period_ms: int | None = None,
) -> Operation[tuple[Record | Corrupt | None, set[str]]]:
    """Load one session, plus which of ``others`` are still alive, in one
    round trip: a plain HGETALL, whose fields say whether the session is
    still alive (no script, no write).

    With ``refresh``, a session whose last renewal is a renewal period old
    (``period_ms``: RENEWAL_PERIOD, None for the default) is renewed in a
    second round trip (the touch script): once per period, not per read. A
    renewal that Redis refuses (a read-only replica, too few replicas, gone)
    is logged and does not fail the read: the session is alive by the clock,
    and the next read tries the renewal again.

    ``others`` are a browser's other aliases' keys: the cookie can drop dead
    ones on this very response.
    """
    hash_key = keys.session_hash(ns, session_key)
    try:
        if others:
            replies = yield Batch(
                [
                    Command(("HGETALL", hash_key)),
                    *(Command(("EXISTS", keys.session_shadow(ns, o))) for o in others),
                ]
            )
            fields = replies[0]
            alive = {o for o, exists in zip(others, replies[1:], strict=True) if exists}
        else:
            fields = yield Command(("HGETALL", hash_key))
            alive = set()
    except redis.exceptions.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        log_corrupt(session_key, "a key of the wrong type")
        return CORRUPT, set(others)
    if not fields:
        return None, alive
    record = parse_record(session_key, fields)
    if not isinstance(record, Record):
        return record, alive
    period = renewal_period_ms(record.max_inactive, period_ms)
    end = ends_at(record, period)
    # Redis expires the shadow key to the millisecond, and the hash only a
    # grace period later: the clock says whether the session is over.
    if end is not None and end <= now:
        return None, alive
    if refresh and renewal_due(record, now, period_ms):
        replies = yield Batch(
            [_touch_call(ns, [session_key], now, period_ms)],
            errors_as_values=True,
            best_effort=True,
        )
        reply = replies[0] if replies is not None else None
        if isinstance(reply, Exception):
            if not is_outage(reply):
                raise reply
            reply = None
        if reply is None:
            # Refused (a read-only replica, too few replicas) or Redis went
            # away: the session is alive by the clock, so the read goes on,
            # and the next read tries the renewal again.
            logger.warning(
                "session store: the renewal of session %s was skipped, Redis refused it",
                short_key(session_key),
            )
            return record, alive
        if reply[0] != 1:
            # Deleted (or found corrupt) since the HGETALL: no session.
            if reply[0] == -1:
                log_corrupt(session_key, "a key of the wrong type or unreadable metadata")
            return None, alive
        record.accessed = now
    return record, alive


def touch(
    ns: str, session_key: str, now: int, period_ms: int | None = None, force: bool = False
) -> Operation[bool]:
    """Renew a session's idle timer without reading its data, if its renewal
    is due (or with ``force``, whenever it is alive); False if it ended (or
    its keys are corrupt: it is treated as absent, as a load would)."""
    return (yield from touch_many(ns, [session_key], now, period_ms, force))[0]


def touch_now(session_keys: Sequence[str], force: bool = False) -> Operation[list[bool]]:
    """``touch_many`` now, under the current settings (namespace, renewal
    period): the one place a renewal's call is built, for a load that finds
    one due, a save that confirms its session, and websocket refreshes."""
    snap = conf.snapshot()
    period = snap.renewal_period_ms
    return (yield from touch_many(snap.namespace, session_keys, now_ms(), period, force))


def _touch_call(
    ns: str, session_keys: Sequence[str], now: int, period_ms: int | None, force: bool = False
) -> Eval:
    pairs = [
        k
        for key in session_keys
        for k in (keys.session_hash(ns, key), keys.session_shadow(ns, key))
    ]
    period = "" if period_ms is None else period_ms
    return Eval(TOUCH, pairs, (now, GRACE_MS, period, "1" if force else "0"))


def touch_many(
    ns: str,
    session_keys: Sequence[str],
    now: int,
    period_ms: int | None = None,
    force: bool = False,
) -> Operation[list[bool]]:
    """``touch`` for several sessions in one round trip; which are still
    alive, in order. One script for them all, or on Redis Cluster, where each
    session has its own slot, a pipeline of one script per session.

    ``force`` is for a websocket's refresh, sent once per interval whatever
    the messages in between: renewing only when due would let a session end
    up to a period before its idle timeout after the last message."""
    if split_slots() and len(session_keys) > 1:
        calls = [_touch_call(ns, [key], now, period_ms, force) for key in session_keys]
        replies = yield Batch(calls)
        states = [state for reply in replies for state in reply]
    else:
        states = yield _touch_call(ns, session_keys, now, period_ms, force)
    alive = []
    for key, state in zip(session_keys, states, strict=True):
        if state == -1:
            # That session only; the script wrote nothing to it.
            log_corrupt(key, "a key of the wrong type or unreadable metadata")
        alive.append(state == 1)
    return alive


def exists(ns: str, session_key: str) -> Operation[bool]:
    count = yield Command(
        ("EXISTS", keys.session_hash(ns, session_key), keys.session_shadow(ns, session_key))
    )
    return bool(count == 2)


@dataclass
class Glance:
    """What peek() sees of a live session without loading it."""

    user: str | None
    accessed: int  # epoch ms of its last renewal (0 if unreadable)


def peek(ns: str, session_keys: Sequence[str]) -> Operation[dict[str, Glance]]:
    """Which of these sessions are alive, their users and last renewals: one
    round trip.

    Read-only: it neither slides idle timers nor loads attributes.
    """
    calls: list[Eval | Command] = []
    for key in session_keys:
        calls.append(Command(("EXISTS", keys.session_shadow(ns, key))))
        calls.append(Command(("HMGET", keys.session_hash(ns, key), F_USER, F_ACCESSED)))
    # One corrupt session (a hash of the wrong type) must not fail the others.
    replies = yield Batch(calls, errors_as_values=True)
    alive: dict[str, Glance] = {}
    for i, key in enumerate(session_keys):
        exists, fields = replies[2 * i], replies[2 * i + 1]
        for reply in (exists, fields):
            if isinstance(reply, Exception) and not wrong_type(reply):
                raise reply
        if not exists or isinstance(exists, Exception):
            continue
        if isinstance(fields, Exception):
            log_corrupt(key, "a key of the wrong type")
            continue  # treated as absent, as a load would
        user, accessed = fields
        try:
            alive[key] = Glance(
                user=user.decode() if user else None,
                accessed=int(accessed) if accessed and accessed.isdigit() else 0,
            )
        except (UnicodeDecodeError, ValueError):
            log_corrupt(key, "unreadable metadata")
    return alive


def user_sessions(ns: str, user_id: str) -> Operation[list[Record]]:
    """The live sessions in a user's index, read without touching them.

    Entries whose session ended, or that belong to another user by now, are
    removed from the index as they are found (so it never grows stale).
    """
    index = keys.user_index(ns, user_id)
    try:
        members = yield Command(("HKEYS", index))
    except redis.exceptions.ResponseError as exc:
        if not wrong_type(exc):
            raise
        # Corrupt: who it listed is unknown. The user's next login replaces it.
        logger.warning("session store: %s is a key of the wrong type; no sessions listed", index)
        return []
    candidates, _ = member_keys(members, index)
    # Members that are no session key (junk) go, as raw as they came.
    valid = set(candidates)
    stale: list[str | bytes] = [m for m in members if m.decode(errors="replace") not in valid]
    records: list[Record] = []
    if candidates:
        calls: list[Eval | Command] = []
        for key in candidates:
            calls.append(Command(("EXISTS", keys.session_shadow(ns, key))))
            calls.append(Command(("HGETALL", keys.session_hash(ns, key))))
        # A session whose keys are of the wrong type is corrupt: not listed.
        replies = skip_wrong_types(calls, (yield Batch(calls, errors_as_values=True)))
        for i, key in enumerate(candidates):
            exists, fields = replies[2 * i], replies[2 * i + 1]
            record = parse_record(key, fields) if exists and fields is not None else None
            if isinstance(record, Record) and record.user == user_id:
                records.append(record)
            else:
                stale.append(key)
    if stale:
        yield Command(("HDEL", index, *stale))
    return records


def save(ns: str, plan: SavePlan) -> Operation[str]:
    """Returns "ok", "exists" (create: key taken) or "gone" (update: deleted).

    On Redis Cluster (``split_slots()``) the session's own keys are written by
    the script and what lives in other slots (bucket, user indexes, the old
    key of a rotation) by a second, pipelined step.
    """
    if plan.lean:
        return _save_status((yield _update_eval(ns, plan)))
    if split_slots():
        return (yield from _save_split(ns, plan))
    return _save_status((yield _save_eval(ns, plan)))


def _update_eval(ns: str, plan: SavePlan) -> Eval:
    """The lean save's script call (update.lua): the changed fields only."""
    return Eval(
        UPDATE,
        (keys.session_hash(ns, plan.session_key), keys.session_shadow(ns, plan.session_key)),
        _field_args(plan),
    )


def _field_args(plan: SavePlan) -> list[str | int | bytes]:
    """The fields a save writes and deletes, as the scripts take them: the
    number of (name, value) pairs, the pairs, the number of names to delete,
    the names. Attributes become their fields (chunked when long), and the
    chunks a value no longer needs are deleted."""
    pairs: list[str | int | bytes] = []
    deleted: list[str | int | bytes] = []
    stale = plan.stale_chunks
    for name, value in plan.to_set.items():
        fields = attribute_fields(name, value)
        for field_name, field_value in fields:
            pairs += [field_name, field_value]
        old = stale.get(name, 0)
        if old >= len(fields):
            deleted += chunk_fields(name, len(fields), old)
    if plan.renewed is not None:
        pairs += [F_RENEWED, plan.renewed]  # metadata: written as it is
    for name in plan.to_delete:
        deleted.append(attribute_field(name))
        deleted += chunk_fields(name, 1, stale.get(name, 0))
    return [len(pairs) // 2, *pairs, len(deleted), *deleted]


def import_sessions(ns: str, plans: Sequence[SavePlan]) -> Operation[list[str]]:
    """Save the imported sessions ``plans`` (each with ``import_life``): "ok"
    or "exists" (imported before, or being imported) for each, in order.

    One pipelined round trip for them all on one server. On Redis Cluster
    each is saved on its own: a batch sent again because its node missed the
    script would find the sessions it did save "exists" and skip the writes
    to their buckets and indexes.
    """
    if split_slots():
        statuses = []
        for plan in plans:
            statuses.append((yield from save(ns, plan)))
        return statuses
    if not plans:
        return []
    replies = yield Batch([_save_eval(ns, plan) for plan in plans])
    return [_save_status(reply) for reply in replies]


def _save_status(reply: Any) -> str:
    """save.lua's answer: "ok" (maybe with notes, which are logged), "exists"
    or "gone"."""
    if isinstance(reply, list):  # "ok", with notes
        log_notes(reply[1:])
        return "ok"
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _save_eval(ns: str, plan: SavePlan) -> Eval:
    """The one script call that saves ``plan`` on one server."""
    layout = ""
    extra: list[str] = []
    if plan.import_life is not None:
        layout += "m"
        extra.append(keys.session_import_marker(ns, plan.session_key))
    # A rotation files the new key even when the minute did not change.
    moved = plan.bucket != plan.old_bucket or plan.replaces is not None
    if plan.bucket is not None and moved:
        layout += "b"
        extra.append(keys.expiration_bucket(ns, plan.bucket))
    if plan.old_bucket is not None and moved:
        layout += "x"
        extra.append(keys.expiration_bucket(ns, plan.old_bucket))
    if plan.old_user is not None and plan.old_user != plan.user:
        layout += "o"
        extra.append(keys.user_index(ns, plan.old_user))
    if plan.user is not None:
        layout += "u"
        extra.append(keys.user_index(ns, plan.user))
    if plan.replaces is not None:
        layout += "r"
        extra += [keys.session_hash(ns, plan.replaces), keys.session_shadow(ns, plan.replaces)]
    return _save_call(ns, plan, layout, extra)


def _save_call(ns: str, plan: SavePlan, layout: str, extra: Sequence[str]) -> Eval:
    user_op = ""  # unchanged
    if plan.user_changed:
        user_op = "-" if plan.user is None else f"={plan.user}"
    args: list[str | int | bytes] = [
        plan.now,
        "create" if plan.create else ("replace" if plan.replace_all else "update"),
        plan.max_inactive,
        "" if plan.expires_at is None else plan.expires_at,
        GRACE_MS,
        "" if plan.created is None else plan.created,
        "" if plan.bucket is None else plan.bucket,
        user_op,
        layout,
        plan.session_key,
        plan.replaces or "",
        "1" if plan.sets_expiry else "0",
        BUCKET_KEEP_MS,
        "" if plan.period_ms is None else plan.period_ms,
        *_field_args(plan),
    ]
    if plan.import_life is not None:
        args.append(plan.import_life)
    return Eval(
        SAVE,
        (
            keys.session_hash(ns, plan.session_key),
            keys.session_shadow(ns, plan.session_key),
            *extra,
        ),
        args,
    )


def _session_keys(ns: str, session_key: str) -> tuple[str, str, str]:
    """A session's own keys: hash, shadow key and event claim (one slot)."""
    return (
        keys.session_hash(ns, session_key),
        keys.session_shadow(ns, session_key),
        keys.session_event(ns, session_key),
    )


def _save_split(ns: str, plan: SavePlan) -> Operation[str]:
    """``save`` for Redis Cluster: the script, then the other slots' writes.

    A rotation retires the old key right after the script, and only if it is
    still alive (else the new key is taken back and the answer is "gone").
    The rest runs only once that succeeded, and every write in it is
    idempotent. Between the steps (a crash, a failover) a rotation's new key
    can outlive its creation unused until its own expiry, and a bucket or
    index can miss the session: the sweep and the index reads tolerate both
    (a session missing from its bucket is still expired by Redis; the worker's
    keyspace events report it).
    """
    moved = plan.bucket != plan.old_bucket or plan.replaces is not None
    layout = "C" + ("B" if plan.bucket is not None and moved else "")
    marker: tuple[str, ...] = ()
    if plan.import_life is not None:  # in the session's slot
        layout, marker = "m" + layout, (keys.session_import_marker(ns, plan.session_key),)
    reply = yield _save_call(ns, plan, layout, marker)
    if not isinstance(reply, list):
        return reply.decode() if isinstance(reply, bytes) else str(reply)
    kept, life = bool(int(reply[1])), reply[2].decode()
    log_notes(reply[3:])
    if plan.replaces is not None:
        # The new key exists now, known to nobody yet. The old one is retired
        # only if still alive, in its own slot and atomically: a rotation of a
        # session deleted meanwhile, or the second of two concurrent
        # rotations, finds it gone and takes its new key back (claimed as
        # "rotated" too, so no worker reports an end of it).
        retired = yield Eval(RETIRE, _session_keys(ns, plan.replaces), (GRACE_MS,))
        if not retired:
            yield Eval(RETIRE, _session_keys(ns, plan.session_key), (GRACE_MS,))
            return "gone"
    leaving = plan.replaces or plan.session_key
    follow_up: list[Eval | Command] = []
    if moved and not kept:
        if plan.old_bucket is not None:
            old_bucket = keys.expiration_bucket(ns, plan.old_bucket)
            follow_up.append(Command(("SREM", old_bucket, leaving)))
        if plan.bucket is not None:
            bucket = keys.expiration_bucket(ns, plan.bucket)
            follow_up.append(Command(("SADD", bucket, plan.session_key)))
            expire_at = plan.bucket * MINUTE_MS + BUCKET_KEEP_MS
            follow_up.append(Command(("PEXPIREAT", bucket, expire_at)))
    if plan.old_user is not None and plan.old_user != plan.user:
        follow_up.append(Command(("HDEL", keys.user_index(ns, plan.old_user), leaving)))
    if plan.replaces is not None and plan.user is not None:
        follow_up.append(Command(("HDEL", keys.user_index(ns, plan.user), leaving)))
    if plan.user is not None:
        index = keys.user_index(ns, plan.user)
        follow_up.append(Eval(INDEX_ADD, (index,), (plan.session_key, life, GRACE_MS)))
    if follow_up:
        # The session is saved: a node of a bucket or an index being down,
        # or a key of the wrong type there, must not turn that into an error
        # (see the docstring).
        replies = yield Batch(follow_up, best_effort=True, errors_as_values=True)
        for call, reply in zip(follow_up, skip_wrong_types(follow_up, replies, True), strict=True):
            if isinstance(call, Eval) and reply == 2:  # index_add.lua replaced it
                log_notes([b"replaced " + call.keys[0].encode()])
    return "ok"


@dataclass
class Ended:
    """A session that ended, as it was at the end (for events)."""

    session_key: str
    record: Record | Corrupt | None


def delete(
    ns: str, session_key: str, user: str | None, bucket: int | None = None
) -> Operation[Ended | None]:
    """Delete a session; ``user`` and ``bucket`` are what the caller believes
    it belongs to and is filed under (None: not known; fixed up afterwards)."""
    session_keys = [
        keys.session_hash(ns, session_key),
        keys.session_shadow(ns, session_key),
        keys.session_event(ns, session_key),
    ]
    # On Redis Cluster the index and bucket live in other slots: the script
    # sees none of them, and the fix-up below leaves both.
    split = split_slots()
    done_user, done_bucket = (None, None) if split else (user, bucket)
    layout = ""
    if done_user is not None:
        layout += "u"
        session_keys.append(keys.user_index(ns, done_user))
    if done_bucket is not None:
        layout += "b"
        session_keys.append(keys.expiration_bucket(ns, done_bucket))
    claimed, fields = yield Eval(DELETE, session_keys, (session_key, CLAIM_MS, layout))
    record = parse_record(session_key, fields) if fields else None
    fix_up: list[Eval | Command] = []
    users = {user} if split else set()
    buckets = {bucket} if split else set()
    if isinstance(record, Record):
        # Whatever the caller did not know (or knew wrong).
        users.add(record.user)
        buckets.add(record.bucket)
    for other_user in sorted(u for u in users if u is not None and u != done_user):
        fix_up.append(Command(("HDEL", keys.user_index(ns, other_user), session_key)))
    for minute in sorted(b for b in buckets if b is not None and b != done_bucket):
        fix_up.append(Command(("SREM", keys.expiration_bucket(ns, minute), session_key)))
    if fix_up:
        # The session is gone and its end claimed: a stale bucket or index
        # entry is dropped when it is next read.
        replies = yield Batch(fix_up, best_effort=True, errors_as_values=True)
        skip_wrong_types(fix_up, replies, best_effort=True)
    # Not claimed: it was not alive any more, or its end was claimed (and is
    # reported) by someone else.
    return Ended(session_key, record) if claimed else None

"""The only module that sends commands to Redis for sessions.

Each operation is written once, as a generator that yields *steps* (a script
call, a command, or a pipelined batch of them) and receives their replies. A
sync driver and an async driver run the same generator against ``redis.Redis``
or ``redis.asyncio.Redis``, so the ``a``-prefixed twins cannot drift from the
sync ones and neither goes through ``sync_to_async``.

Scripts are sent with EVALSHA; on NOSCRIPT (first use, or after Redis
restarted) the source is loaded once and the call retried.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, TypeVar

import redis.exceptions

from session_ng import keys
from session_ng.conf import conf
from session_ng.connection import get_async_client, get_client
from session_ng.exceptions import SessionStoreUnavailable

logger = logging.getLogger("session_ng")
security_logger = logging.getLogger("django.security.SuspiciousSession")

# How long a session's hash outlives its shadow key, so that whoever reports
# the expiry can still read what the session held. Buckets are kept as long
# past their minute.
GRACE_MS = 300_000
MINUTE_MS = 60_000
# How long an expiration bucket is kept past its minute: long enough for a
# worker that was down to catch up on the ends it missed.
BUCKET_KEEP_MS = 24 * 3600 * 1000
# How long the claim on a session's end event lasts: longer than any worker
# could take to act on the notification, and than the grace period.
CLAIM_MS = 2 * GRACE_MS
# Bound for how far ahead a session can be filed (a set_expiry() of a year).
MAX_LIFE_MS = 366 * 24 * 3600 * 1000

# --- the session hash's layout ------------------------------------------------
#
# Redis keeps a hash in its compact listpack encoding (about half the bytes of
# its hashtable encoding) while every field name and value is at most
# hash-max-listpack-value bytes, 64 by default. So the fields have short
# names, Django's own attributes and values have short codes, and a value
# longer than that is stored in chunks of at most 64 bytes. Scripts use the
# same names (docs/data-model.rst lists them all).
F_CREATED = "c"
F_ACCESSED = "a"  # the last renewal of the idle timer (epoch ms)
F_IDLE = "i"  # max_inactive, seconds; -1 never expires
F_EXPIRES = "e"  # an absolute expiry (epoch ms)
F_USER = "u"
F_BUCKET = "b"
F_RENEWED = "r"  # when the middleware last sent the cookie (epoch ms)
# An attribute's field: "." and its name, or for Django's own attributes an
# upper-case letter (metadata fields are lower-case).
ATTR_PREFIX = "."
KNOWN_FIELDS = {
    "_auth_user_id": "I",
    "_auth_user_backend": "B",
    "_auth_user_hash": "H",
    "_session_expiry": "X",
}
KNOWN_NAMES = {field.encode(): name for name, field in KNOWN_FIELDS.items()}
# The rest of a long value: "," then the chunk's number then the field's name.
CHUNK_PREFIX = ","
LISTPACK_VALUE = 64
# A stored value whose first byte is below 3 is encoded:
#   0, n, data   the serialized value is data and n - 1 chunk fields (n = 0:
#                data alone, for the rare value past MAX_CHUNKS chunks)
#   1, bytes     a JSON string of lower-case hex digits (a digest, such as
#                Django's _auth_user_hash), as the bytes they spell
#   2, code      a serialized value from KNOWN_VALUES
# Any other first byte: the serialized value as it is. (JSON never starts
# below 3, pickle starts with 0x80; a value that does is chunked, n >= 1.)
CHUNKED, HEX, KNOWN = 0, 1, 2
KNOWN_VALUES = {1: b'"django.contrib.auth.backends.ModelBackend"'}
KNOWN_CODES = {value: code for code, value in KNOWN_VALUES.items()}
FIRST_CHUNK = LISTPACK_VALUE - 2
MAX_CHUNKS = 255
_HEX_DIGITS = frozenset(b"0123456789abcdef")


def attribute_field(name: str) -> str:
    """The hash field that holds attribute ``name`` (or its first chunk)."""
    return KNOWN_FIELDS.get(name) or ATTR_PREFIX + name


def attribute_fields(name: str, value: bytes) -> list[tuple[str, bytes]]:
    """The hash fields that hold one attribute's serialized ``value``."""
    field = attribute_field(name)
    code = KNOWN_CODES.get(value)
    if code is not None:
        return [(field, bytes((KNOWN, code)))]
    if value[:1] == b'"' and _is_hex_string(value):
        return [(field, bytes((HEX,)) + bytes.fromhex(value[1:-1].decode()))]
    if len(value) <= LISTPACK_VALUE and (not value or value[0] > KNOWN):
        return [(field, value)]
    count = 1 + max(0, -(-(len(value) - FIRST_CHUNK) // LISTPACK_VALUE))
    if count > MAX_CHUNKS:
        return [(field, bytes((CHUNKED, 0)) + value)]
    fields = [(field, bytes((CHUNKED, count)) + value[:FIRST_CHUNK])]
    for i in range(1, count):
        start = FIRST_CHUNK + (i - 1) * LISTPACK_VALUE
        fields.append((f"{CHUNK_PREFIX}{i}{field}", value[start : start + LISTPACK_VALUE]))
    return fields


def _is_hex_string(value: bytes) -> bool:
    # '"' + an even number (32 to 126) of lower-case hex digits + '"': its
    # bytes fit one field.
    return (
        34 <= len(value) <= 2 * LISTPACK_VALUE
        and len(value) % 2 == 0
        and value[-1:] == b'"'
        and _HEX_DIGITS.issuperset(value[1:-1])
    )


def chunks_of(value: bytes) -> int:
    """How many chunk fields (besides its own) hold a serialized value."""
    return len(attribute_fields("", value)) - 1


def chunk_fields(name: str, first: int, last: int) -> list[str]:
    """The names of attribute ``name``'s chunk fields ``first`` to ``last``."""
    field = attribute_field(name)
    return [f"{CHUNK_PREFIX}{i}{field}" for i in range(first, last + 1)]


# Errors that mean "Redis is not there right now", as opposed to a bug.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    # Full (maxmemory reached, noeviction): it refuses every write, the
    # sliding of an idle timer on a read included.
    redis.exceptions.OutOfMemoryError,
    # redis-py's Cluster client gave up (its retries and redirections ran out).
    redis.exceptions.ClusterError,
)
# Replies that redis-py gives no class of their own and that also mean "not
# now": writes stopped after a failed snapshot, a script or module busy, too
# few replicas for min-replicas-to-write.
UNAVAILABLE_REPLIES = ("MISCONF ", "BUSY ", "NOREPLICAS ")
try:  # Sentinel's own "no primary" error lives in the sentinel module.
    from redis.sentinel import MasterNotFoundError

    UNAVAILABLE_ERRORS += (MasterNotFoundError,)
except ImportError:  # pragma: no cover - every supported redis-py has it
    pass


class Script:
    """One file of ``session_ng/scripts``, addressed by its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("session_ng.scripts").joinpath(f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


SAVE = Script("save")
UPDATE = Script("update")
DELETE = Script("delete")
SWEEP_MEMBER = Script("sweep_member")
TOUCH = Script("touch")
INDEX_ADD = Script("index_add")
RETIRE = Script("retire")
CLAIM = Script("claim")
STREAM_TURN = Script("stream_turn")
FORGET_CONSUMER = Script("forget_consumer")


# --- steps -------------------------------------------------------------------


@dataclass(frozen=True)
class Eval:
    script: Script
    keys: Sequence[str]
    args: Sequence[str | int | bytes]


@dataclass(frozen=True)
class Command:
    args: tuple[str | int | bytes, ...]
    # A server command (no key) to send to every primary of a Redis Cluster,
    # whose replies come as one dict by node; elsewhere it changes nothing.
    every_primary: bool = False


def _command_options(step: Command) -> dict[str, Any]:
    return {"target_nodes": "primaries"} if step.every_primary and split_slots() else {}


@dataclass(frozen=True)
class Batch:
    """Several calls in one round trip (a pipeline, not a transaction).

    Only for calls that are safe to repeat: a batch whose scripts were missing
    is sent again with the scripts' source.
    """

    calls: Sequence[Eval | Command]
    # The operation gets error replies in the list instead of an exception.
    errors_as_values: bool = False
    # Follow-up writes whose loss the data model tolerates (bucket and index
    # entries on other Cluster nodes): when Redis is unavailable for them,
    # the operation gets None and goes on, and a warning is logged.
    best_effort: bool = False


Step = Eval | Command | Batch
R = TypeVar("R")
Operation = Generator[Step, Any, R]


def cluster_unreachable(exc: redis.exceptions.RedisClusterException) -> bool:
    """A Cluster error that means "Redis is not there" rather than a bug.

    redis-py raises the bare RedisClusterException both when no startup node
    answers and for misuse (keys of several slots in one command); only the
    first, and slots no node serves (mid-failover), are an outage.
    """
    if isinstance(exc, redis.exceptions.SlotNotCoveredError):
        return True
    text = str(exc)
    return "cannot be connected" in text or "slots are not covered" in text


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis is unavailable (as opposed to a bug)."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(UNAVAILABLE_REPLIES):
        return True
    return isinstance(exc, redis.exceptions.RedisClusterException) and cluster_unreachable(exc)


def split_slots() -> bool:
    """True on Redis Cluster: a script may touch the keys of one slot only, so
    writes to another session's, a bucket's or an index's keys go separately."""
    return conf.snapshot().cluster


def _unavailable(exc: BaseException) -> SessionStoreUnavailable:
    # Some redis-py messages (Sentinel's MasterNotFoundError) carry the repr
    # of every client they tried: the first 300 characters say what happened.
    text = str(exc)
    if len(text) > 300:
        text = text[:300] + "…"
    logger.error("session store unavailable: %s: %s", type(exc).__name__, text)
    return SessionStoreUnavailable(
        f"The session store (Redis) is unavailable: {type(exc).__name__}: {text}"
    )


def _queue(pipe: Any, call: Eval | Command, with_source: bool = False) -> None:
    if isinstance(call, Eval):
        # Not pipe.evalsha(): redis-py's cluster pipeline refuses that method,
        # but routes the command itself by its keys (all in one slot).
        if with_source:
            pipe.execute_command("EVAL", call.script.source, len(call.keys), *call.keys, *call.args)
        else:
            pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
    else:
        pipe.execute_command(*call.args)


# A script missing on its node (first use, a restarted or promoted node) is
# sent once with its source: EVAL runs it and caches it there, on that node
# only, so no node that is down can fail the reload (SCRIPT LOAD goes to all).


def _run_sync(client: Any, step: Step) -> Any:
    if isinstance(step, Eval):
        try:
            return client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except redis.exceptions.NoScriptError:
            return client.eval(step.script.source, len(step.keys), *step.keys, *step.args)
    if isinstance(step, Command):
        return client.execute_command(*step.args, **_command_options(step))
    with_source = False
    while True:
        pipe = client.pipeline(transaction=False)
        for call in step.calls:
            _queue(pipe, call, with_source)
        replies = pipe.execute(raise_on_error=False)
        if with_source or not any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            return _replies(step, replies)
        with_source = True


async def _run_async(client: Any, step: Step) -> Any:
    if isinstance(step, Eval):
        try:
            return await client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except redis.exceptions.NoScriptError:
            return await client.eval(step.script.source, len(step.keys), *step.keys, *step.args)
    if isinstance(step, Command):
        return await client.execute_command(*step.args, **_command_options(step))
    with_source = False
    while True:
        pipe = client.pipeline(transaction=False)
        for call in step.calls:
            _queue(pipe, call, with_source)
        replies = await pipe.execute(raise_on_error=False)
        if with_source or not any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
            return _replies(step, replies)
        with_source = True


def _replies(step: Batch, replies: list[Any]) -> list[Any]:
    if not step.errors_as_values:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


def _skipped(step: Step, exc: BaseException) -> bool:
    """A best-effort batch that met an outage: log it; the operation goes on."""
    if not (isinstance(step, Batch) and step.best_effort and is_outage(exc)):
        return False
    logger.warning(
        "session store: %d follow-up write(s) skipped, Redis unavailable for them: %s: %s",
        len(step.calls),
        type(exc).__name__,
        str(exc)[:300],
    )
    return True


def run(operation: Operation[R]) -> R:
    """Drive an operation against the sync client."""
    try:
        client = get_client()  # a Cluster client connects as it is made
        step = next(operation)
        while True:
            try:
                reply = _run_sync(client, step)
            except redis.exceptions.ResponseError as exc:
                if is_outage(exc):
                    if _skipped(step, exc):
                        step = operation.send(None)
                        continue
                    raise
                # The operation may know what this error means (WRONGTYPE on
                # a corrupted key); if it does not, it re-raises.
                step = operation.throw(exc)
            except Exception as exc:
                if not _skipped(step, exc):
                    raise
                step = operation.send(None)
            else:
                step = operation.send(reply)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception as exc:
        if is_outage(exc):
            raise _unavailable(exc) from exc
        raise


async def arun(operation: Operation[R]) -> R:
    """Drive an operation against the async client of the running loop."""
    try:
        client = await get_async_client()
        step = next(operation)
        while True:
            try:
                reply = await _run_async(client, step)
            except redis.exceptions.ResponseError as exc:
                if is_outage(exc):
                    if _skipped(step, exc):
                        step = operation.send(None)
                        continue
                    raise
                step = operation.throw(exc)
            except Exception as exc:
                if not _skipped(step, exc):
                    raise
                step = operation.send(None)
            else:
                step = operation.send(reply)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception as exc:
        if is_outage(exc):
            raise _unavailable(exc) from exc
        raise


# --- records -----------------------------------------------------------------


def now_ms() -> int:
    """The clock every record and plan is dated by (epoch milliseconds)."""
    return time.time_ns() // 1_000_000


@dataclass
class Record:
    """A session as Redis holds it, attributes still serialized."""

    session_key: str
    created: int
    accessed: int
    max_inactive: int
    expires_at: int | None = None
    user: str | None = None
    bucket: int | None = None
    attributes: dict[str, bytes] = field(default_factory=dict)
    # When session_ng's middleware last sent this session's cookie (epoch ms).
    renewed: int | None = None


class Corrupt:
    """A hash whose metadata cannot be read; treated as no session."""


CORRUPT = Corrupt()


def _short(session_key: str) -> str:
    # Session keys are secrets: logs get enough to correlate, not to hijack.
    return session_key[:6] + "…"


def _log_corrupt(session_key: str, what: str) -> None:
    security_logger.warning(
        "Session data corrupted: %s in session %s; treated as absent", what, _short(session_key)
    )


_F_CREATED, _F_ACCESSED, _F_IDLE, _F_EXPIRES, _F_USER, _F_BUCKET, _F_RENEWED = (
    name.encode()
    for name in (F_CREATED, F_ACCESSED, F_IDLE, F_EXPIRES, F_USER, F_BUCKET, F_RENEWED)
)
_KNOWN_HEADS = frozenset(name[:1] for name in KNOWN_NAMES)
# An idle timeout past 10^10 s (centuries) is one no save writes.
_MAX_STORED_INACTIVE = 10_000_000_000


def _int(value: bytes | None) -> int:
    """A metadata field as the scripts write it (and touch.lua reads it):
    digits with maybe a minus sign, at most 15 characters. ``int()`` alone
    would take " 7", "+7" and "1_000", which Lua would not."""
    if (
        value is None
        or len(value) > 15
        or not (value.isdigit() or (value[:1] == b"-" and value[1:].isdigit()))
    ):
        raise ValueError(value)
    return int(value)


def parse_record(
    session_key: str, fields: Sequence[bytes] | dict[bytes, bytes]
) -> Record | Corrupt:
    """Turn a hash into a Record (on the hot path: keep it lean).

    ``fields`` is HGETALL's reply: the dict redis-py makes of it, or the flat
    list a script returns. Fields of other shapes (a later version's) are
    ignored.
    """
    if isinstance(fields, dict):
        stored = fields
    else:
        stored = dict(zip(fields[::2], fields[1::2], strict=True))
    get = stored.get
    try:
        attributes = {
            name[1:].decode(): value for name, value in stored.items() if name[:1] == b"."
        }
    except UnicodeDecodeError:
        attributes = _readable_attributes(session_key, stored)
    for field_name, name in KNOWN_NAMES.items():
        value = get(field_name)
        if value is not None:
            attributes[name] = value
    # Metadata is read below, by name; chunks with the values they continue;
    # any other field is a later version's, ignored.
    for value in attributes.values():
        if value[:1] < b"\x03":
            _decode_values(session_key, attributes, stored)
            break
    try:
        max_inactive = _int(get(_F_IDLE))
        if max_inactive > _MAX_STORED_INACTIVE:
            raise ValueError(max_inactive)
        expires_at, bucket, user, renewed = (
            get(_F_EXPIRES),
            get(_F_BUCKET),
            get(_F_USER),
            get(_F_RENEWED),
        )
        return Record(
            session_key=session_key,
            created=_int(get(_F_CREATED)),
            accessed=_int(get(_F_ACCESSED)),
            max_inactive=max_inactive,
            expires_at=None if expires_at is None else _int(expires_at),
            user=user.decode() if user else None,
            bucket=None if bucket is None else _int(bucket),
            attributes=attributes,
            renewed=None if renewed is None else _int(renewed),
        )
    except ValueError:  # UnicodeDecodeError is a ValueError
        _log_corrupt(session_key, "unreadable metadata")
        return CORRUPT


def _readable_attributes(session_key: str, stored: dict[bytes, bytes]) -> dict[str, bytes]:
    """The attributes whose names decode (the others are logged and dropped)."""
    attributes: dict[str, bytes] = {}
    for raw_name, value in stored.items():
        if raw_name[:1] != b".":
            continue
        try:
            attributes[raw_name[1:].decode()] = value
        except UnicodeDecodeError:
            security_logger.warning(
                "Session data corrupted: undecodable field name in session %s dropped",
                _short(session_key),
            )
    return attributes


def _decode_values(
    session_key: str, attributes: dict[str, bytes], stored: dict[bytes, bytes]
) -> None:
    """Turn the encoded values of ``attributes`` back into serialized ones
    (in place; see the layout above). One that cannot be (chunks missing, an
    unknown code) is dropped: no value beats a wrong one."""
    for name, value in list(attributes.items()):
        kind = value[0] if value else 3
        if kind > KNOWN:
            continue
        decoded: bytes | None = None
        if kind == HEX:
            decoded = b'"' + value[1:].hex().encode() + b'"'
        elif kind == KNOWN:
            decoded = KNOWN_VALUES.get(value[1]) if len(value) == 2 else None
        elif len(value) > 1 and value[1] == 0:
            decoded = value[2:]
        elif len(value) > 1:
            parts = [value[2:]]
            for chunk in chunk_fields(name, 1, value[1] - 1):
                part = stored.get(chunk.encode())
                if part is None:
                    break
                parts.append(part)
            if len(parts) == value[1]:
                decoded = b"".join(parts)
        if decoded is None:
            del attributes[name]
            security_logger.warning(
                "Session data corrupted: attribute %r of session %s cannot be decoded; dropped",
                name,
                _short(session_key),
            )
        else:
            attributes[name] = decoded


# --- operations --------------------------------------------------------------


def renewal_period_ms(max_inactive: int, setting_ms: int | None = None) -> int:
    """How long after its last renewal a session's idle timer is renewed
    again, and the extra life each renewal grants (lazy renewal).

    ``setting_ms`` is RENEWAL_PERIOD (ms) when set; by default a hundredth of
    the idle timeout, at most a minute. 0 for a session that never expires.
    """
    if max_inactive < 0:
        return 0
    if setting_ms is not None:
        return setting_ms
    return min(MAX_RENEWAL_PERIOD_MS, max_inactive * 10)


# The default renewal period's upper bound.
MAX_RENEWAL_PERIOD_MS = 60_000


def life_ms(
    max_inactive: int, expires_at: int | None, now: int, setting_ms: int | None
) -> int | None:
    """How long a session saved at ``now`` lives (ms), or None if it never
    ends: to its absolute expiry, or its idle timeout plus one renewal period
    (what save.lua gives the shadow key)."""
    if expires_at is not None:
        return expires_at - now
    if max_inactive < 0:
        return None
    return max_inactive * 1000 + renewal_period_ms(max_inactive, setting_ms)


def ends_at(record: Record, period_ms: int) -> int | None:
    """When ``record``'s session ends (epoch ms), or None if it never does.

    An absolute expiry is the end. An idle timeout runs from the last renewal
    (``accessed``) and each renewal grants one period on top (see
    renewal_period_ms), which is what the shadow key's TTL was set to.
    """
    if record.expires_at is not None:
        return record.expires_at
    if record.max_inactive < 0:
        return None
    return record.accessed + record.max_inactive * 1000 + period_ms


def renewal_due(record: Record, now: int, setting_ms: int | None) -> bool:
    """Whether a read at ``now`` must renew the session's idle timer: its last
    renewal is a period old (never for an absolute expiry or no expiry)."""
    if record.expires_at is not None or record.max_inactive < 0:
        return False
    return now - record.accessed >= renewal_period_ms(record.max_inactive, setting_ms)


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
        _log_corrupt(session_key, "a key of the wrong type")
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
                _short(session_key),
            )
            return record, alive
        if reply[0] != 1:
            # Deleted (or found corrupt) since the HGETALL: no session.
            if reply[0] == -1:
                _log_corrupt(session_key, "a key of the wrong type or unreadable metadata")
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
            _log_corrupt(key, "a key of the wrong type or unreadable metadata")
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
            if isinstance(reply, Exception) and not _wrong_type(reply):
                raise reply
        if not exists or isinstance(exists, Exception):
            continue
        if isinstance(fields, Exception):
            _log_corrupt(key, "a key of the wrong type")
            continue  # treated as absent, as a load would
        user, accessed = fields
        try:
            alive[key] = Glance(
                user=user.decode() if user else None,
                accessed=int(accessed) if accessed and accessed.isdigit() else 0,
            )
        except (UnicodeDecodeError, ValueError):
            _log_corrupt(key, "unreadable metadata")
    return alive


def _wrong_type(reply: Exception) -> bool:
    return isinstance(reply, redis.exceptions.ResponseError) and "WRONGTYPE" in str(reply)


def _loggable(name: str) -> str:
    """A key name for a log line: a session key in it is cut (it is a secret)."""
    head, brace, rest = name.partition(":sessions:{")
    if not brace:
        return name
    session_key, _, tail = rest.partition("}")
    return f"{head}{brace}{_short(session_key)}}}{tail}"


def _skip_wrong_types(
    calls: Sequence[Eval | Command], replies: Sequence[Any] | None, best_effort: bool = False
) -> list[Any]:
    """The replies of a batch sent with ``errors_as_values``: a call that met a
    key of the wrong type is logged and its reply is None; any other error is
    raised, but for an outage in a ``best_effort`` batch (logged and None too;
    ``replies`` is None when the whole batch was skipped). For writes that
    must not fail on one corrupt key: the worker's, and a save's follow-ups."""
    if replies is None:
        return [None] * len(calls)
    kept: list[Any] = []
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            what, name = (
                (call.script.name, call.keys[0])
                if isinstance(call, Eval)
                else (str(call.args[0]), str(call.args[1]))
            )
            if _wrong_type(reply):
                logger.warning(
                    "session store: %s is a key of the wrong type; skipped (%s)",
                    _loggable(name),
                    what,
                )
            elif best_effort and is_outage(reply):
                logger.warning(
                    "session store: follow-up write skipped, Redis unavailable for %s: %s",
                    _loggable(name),
                    str(reply)[:300],
                )
            else:
                raise reply
            reply = None
        kept.append(reply)
    return kept


def _log_notes(notes: Sequence[bytes]) -> None:
    """What a script says it did about keys of the wrong type (save.lua)."""
    for note in notes:
        action, _, name = note.decode().partition(" ")
        if action == "replaced":
            logger.warning(
                "session store: %s was a key of the wrong type; replaced by a hash", name
            )
        else:
            logger.warning("session store: %s is a key of the wrong type; skipped", name)


def _member_keys(members: Any, where: str) -> tuple[list[str], int]:
    """The session keys listed in a bucket (a set) or a user index (the fields
    of a hash), sorted, and how many entries were no session key at all (not
    text, or not a key's shape): those are dropped, and logged."""
    found: list[str] = []
    junk = 0
    for member in members:
        try:
            key = member.decode()
        except UnicodeDecodeError:
            key = ""
        if keys.is_valid_session_key(key):
            found.append(key)
        else:
            junk += 1
    if junk:
        logger.warning("session store: %d member(s) of %s are no session key; ignored", junk, where)
    return sorted(found), junk


def user_sessions(ns: str, user_id: str) -> Operation[list[Record]]:
    """The live sessions in a user's index, read without touching them.

    Entries whose session ended, or that belong to another user by now, are
    removed from the index as they are found (so it never grows stale).
    """
    index = keys.user_index(ns, user_id)
    try:
        members = yield Command(("HKEYS", index))
    except redis.exceptions.ResponseError as exc:
        if not _wrong_type(exc):
            raise
        # Corrupt: who it listed is unknown. The user's next login replaces it.
        logger.warning("session store: %s is a key of the wrong type; no sessions listed", index)
        return []
    candidates, _ = _member_keys(members, index)
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
        replies = _skip_wrong_types(calls, (yield Batch(calls, errors_as_values=True)))
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


@dataclass
class SavePlan:
    """Everything one save writes; built by the store, executed by ``save``."""

    session_key: str
    create: bool
    now: int
    max_inactive: int
    expires_at: int | None
    to_set: dict[str, bytes]
    to_delete: list[str]
    created: int | None = None
    bucket: int | None = None
    old_bucket: int | None = None
    user: str | None = None
    old_user: str | None = None
    user_changed: bool = False
    replaces: str | None = None
    # An update without a baseline (the store never loaded the session): the
    # attributes sent become the whole session.
    replace_all: bool = False
    # This save changed the expiry (set_expiry), rather than carrying the
    # values it loaded; only then may it overwrite what is stored.
    sets_expiry: bool = True
    # The middleware sends the cookie with this response: when (epoch ms).
    renewed: int | None = None
    # A session imported from another engine (create only): the life in ms
    # it had left there. The save sets its import marker, and is refused
    # ("exists") when the marker is there: imported once, never again.
    import_life: int | None = None
    # RENEWAL_PERIOD in ms, None for the default (see renewal_period_ms).
    period_ms: int | None = None
    # Only attributes (and ``renewed``) change, within the renewal period:
    # the lean script writes just those fields (see update.lua).
    lean: bool = False
    # Attributes of to_set and to_delete whose stored value had chunk fields
    # (see attribute_fields): how many, so that those left over are deleted.
    stale_chunks: dict[str, int] = field(default_factory=dict)


def bucket_minute(expiry_ms: int) -> int:
    """The bucket a session whose life ends at ``expiry_ms`` is filed under."""
    return -(-expiry_ms // MINUTE_MS)


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
        _log_notes(reply[1:])
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
    _log_notes(reply[3:])
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
        for call, reply in zip(follow_up, _skip_wrong_types(follow_up, replies, True), strict=True):
            if isinstance(call, Eval) and reply == 2:  # index_add.lua replaced it
                _log_notes([b"replaced " + call.keys[0].encode()])
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
        _skip_wrong_types(fix_up, replies, best_effort=True)
    # Not claimed: it was not alive any more, or its end was claimed (and is
    # reported) by someone else.
    return Ended(session_key, record) if claimed else None


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
        if not _wrong_type(exc):
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
        if not _wrong_type(exc):
            raise
        logger.warning("session store: expiration bucket %s is no set; deleted", bucket)
        yield Command(("DEL", bucket))
        return [], 0
    return _member_keys(members, bucket)


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
        replies = _skip_wrong_types(calls, (yield Batch(calls, errors_as_values=True)))
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
            _skip_wrong_types(follow_up, (yield Batch(follow_up, errors_as_values=True)))


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
            _short(session_key),
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
    hashes = _skip_wrong_types(reads, replies[len(unique) :])
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
    if any(_wrong_type(reply) for reply in ids):
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
    replies = _skip_wrong_types(calls, (yield Batch(calls, errors_as_values=True)))
    for (session_key, _), reply in zip(ends, replies, strict=False):
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
        if _wrong_type(exc):
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
        if _wrong_type(exc):
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
                    _short(end.session_key),
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
        if _wrong_type(exc):
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
NOTIFY_FLAGS = "Egx"


def notification_flags() -> Operation[str]:
    reply = yield Command(("CONFIG", "GET", "notify-keyspace-events"))
    values = reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))
    value = next(iter(values.values()), b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def missing_flags(current: str) -> str:
    """Which of NOTIFY_FLAGS ``current`` lacks ("A" stands for g$lshzxetd)."""
    have = set(current)
    if "A" in have:
        have |= set("g$lshzxetd")
    return "".join(flag for flag in NOTIFY_FLAGS if flag not in have)


def enable_notifications(current: str) -> Operation[str]:
    """Add what is missing to notify-keyspace-events, keeping what is there."""
    wanted = current + missing_flags(current)
    yield Command(("CONFIG", "SET", "notify-keyspace-events", wanted))
    return wanted


@dataclass(frozen=True)
class MemoryPolicy:
    """What a Redis server does when it is full (``INFO memory``)."""

    maxmemory: int  # bytes; 0: no limit, nothing is ever evicted
    policy: str  # maxmemory-policy: noeviction, allkeys-lru, volatile-ttl ...


def memory_policies() -> Operation[list[MemoryPolicy]]:
    """The memory limit and eviction policy of the server, or of every node
    that answers on Redis Cluster. Read with INFO, which managed Redis allows
    where it refuses CONFIG."""
    reply = yield Command(("INFO", "memory"), every_primary=True)
    # One server's fields, or (Cluster) one dict of them per node.
    infos = [reply] if "maxmemory_policy" in reply else list(reply.values())
    return [
        MemoryPolicy(int(info.get("maxmemory", 0)), str(info.get("maxmemory_policy", "")))
        for info in infos
    ]


def probe_notifications(ns: str, token: str) -> Operation[None]:
    """Make Redis publish one "expired" and one "del" keyevent, if it publishes
    them at all: a check of notify-keyspace-events that needs no CONFIG."""
    expiring = keys.notification_probe(ns, token + ":x")
    deleted = keys.notification_probe(ns, token + ":d")
    yield Batch([Command(("SET", expiring, "", "PX", 1)), Command(("SET", deleted, ""))])
    yield Command(("DEL", deleted))
    time.sleep(0.005)
    yield Command(("EXISTS", expiring))  # expires it now, if it has not been yet

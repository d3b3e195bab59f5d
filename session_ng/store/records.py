"""What Redis holds for a session, as Python sees it: the hash's layout and
value codec, ``Record`` and ``parse_record()``, save plans, the life and
renewal arithmetic and the clock. No I/O."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from session_ng import keys

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


def short_key(session_key: str) -> str:
    # Session keys are secrets: logs get enough to correlate, not to hijack.
    return session_key[:6] + "…"


def log_corrupt(session_key: str, what: str) -> None:
    security_logger.warning(
        "Session data corrupted: %s in session %s; treated as absent", what, short_key(session_key)
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
        log_corrupt(session_key, "unreadable metadata")
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
                short_key(session_key),
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
                short_key(session_key),
            )
        else:
            attributes[name] = decoded


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


def loggable(name: str) -> str:
    """A key name for a log line: a session key in it is cut (it is a secret)."""
    head, brace, rest = name.partition(":sessions:{")
    if not brace:
        return name
    session_key, _, tail = rest.partition("}")
    return f"{head}{brace}{short_key(session_key)}}}{tail}"


def member_keys(members: Any, where: str) -> tuple[list[str], int]:
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

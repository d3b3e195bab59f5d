"""Sessions for code that is not a request: a Celery task, a management
command, an "active sessions" page, a password change.

Every function has an ``a``-prefixed twin on ``redis.asyncio``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils.crypto import salted_hmac
from django.utils.module_loading import import_string

from session_ng.backends.redis import SessionStore
from session_ng.client_info import CLIENT_KEY
from session_ng.conf import conf
from session_ng.keys import is_valid_session_key
from session_ng.store import driver, sessions
from session_ng.store import records as store_records


@dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, as an "active sessions" page lists it."""

    session_key: str
    created: datetime
    last_access: datetime
    # None for a session that never expires.
    expires: datetime | None
    # Recorded at login (empty when unknown).
    user_agent: str
    ip: str
    # When the user signed in (None when unknown).
    signed_in: datetime | None = None

    @property
    def public_id(self) -> str:
        """A stable name for this session that is safe to put in a page or a
        URL (a keyed hash of the key: it cannot be turned back into the key)."""
        return public_id(self.session_key)


def public_id(session_key: str) -> str:
    return salted_hmac("session_ng.api.public_id", session_key, algorithm="sha256").hexdigest()[:24]


def _user_id(user: Any) -> str:
    """A user instance or a primary key, as the index spells it."""
    return str(getattr(user, "pk", user))


# The range of a datetime, in epoch ms: a stored time outside it (15 digits
# pass the record's integer check; no save writes such a value) is shown
# as the nearest end of the calendar rather than failing the page.
_FIRST_MS = math.ceil(datetime.min.replace(tzinfo=UTC).timestamp() * 1000)
_LAST_MS = math.floor(datetime.max.replace(tzinfo=UTC).timestamp() * 1000)


def _when(ms: int) -> datetime:
    if ms <= _FIRST_MS:
        return datetime.min.replace(tzinfo=UTC)
    if ms >= _LAST_MS:
        return datetime.max.replace(tzinfo=UTC)
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _info(record: store_records.Record) -> SessionInfo:
    # The end it has now (idle timeout and renewal period included): when it
    # ends unless it is used again.
    period = store_records.renewal_period_ms(record.max_inactive, conf.snapshot().renewal_period_ms)
    end = store_records.ends_at(record, period)
    expires = None if end is None else _when(end)
    client = _client(record.attributes.get(CLIENT_KEY))
    return SessionInfo(
        session_key=record.session_key,
        created=_when(record.created),
        last_access=_when(record.accessed),
        expires=expires,
        user_agent=str(client.get("ua", "")),
        ip=str(client.get("ip", "")),
        signed_in=_signed_in(client.get("at")),
    )


def _signed_in(value: Any) -> datetime | None:
    """The login record's time, or None when absent or not a sane number."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**33:
        return None
    return _when(value * 1000)


def _client(raw: bytes | None) -> dict[str, Any]:
    """The login record, or {} when absent or unreadable (it is only shown)."""
    if raw is None:
        return {}
    try:
        value = import_string(settings.SESSION_SERIALIZER)().loads(raw)
    except Exception:
        return {}
    return value if isinstance(value, dict) else {}


def _sorted(records: list[store_records.Record]) -> list[SessionInfo]:
    # Most recently used first, as such pages usually show them.
    return [_info(r) for r in sorted(records, key=lambda r: r.accessed, reverse=True)]


def _excluded(exclude: str | Iterable[str] | None) -> set[str]:
    if exclude is None:
        return set()
    return {exclude} if isinstance(exclude, str) else set(exclude)


def get_session(session_key: str) -> SessionStore | None:
    """The session under ``session_key``, loaded, or None if there is none.

    Reading it does not count as activity (the idle timer is not slid); save()
    works as in a view.
    """
    if not is_valid_session_key(session_key):
        return None
    store = SessionStore(session_key)
    store.inspect()
    return store if store.session_key is not None else None


async def aget_session(session_key: str) -> SessionStore | None:
    if not is_valid_session_key(session_key):
        return None
    store = SessionStore(session_key)
    await store.ainspect()
    return store if store.session_key is not None else None


def find_sessions(user: Any) -> list[SessionInfo]:
    """``user``'s live sessions (a user instance or a primary key)."""
    return _sorted(driver.run(sessions.user_sessions(conf.snapshot().namespace, _user_id(user))))


async def afind_sessions(user: Any) -> list[SessionInfo]:
    records = await driver.arun(sessions.user_sessions(conf.snapshot().namespace, _user_id(user)))
    return _sorted(records)


def delete_sessions(user: Any, exclude: str | Iterable[str] | None = None) -> int:
    """End ``user``'s sessions but those in ``exclude``; returns how many.

    Each ends as delete() ends it: ``session_deleted`` is sent for it. Pass
    ``exclude=request.session.session_key`` for "sign out everywhere else", or
    call it after a password change to end the other sessions at once rather
    than when they next fail Django's session-hash check.
    """
    ended = _to_end(
        driver.run(sessions.user_sessions(conf.snapshot().namespace, _user_id(user))), exclude
    )
    for record in ended:
        _store_for(record).delete()
    return len(ended)


async def adelete_sessions(user: Any, exclude: str | Iterable[str] | None = None) -> int:
    records = await driver.arun(sessions.user_sessions(conf.snapshot().namespace, _user_id(user)))
    ended = _to_end(records, exclude)
    for record in ended:
        await _store_for(record).adelete()
    return len(ended)


def _to_end(
    records: list[store_records.Record], exclude: str | Iterable[str] | None
) -> list[store_records.Record]:
    keep = _excluded(exclude)
    return [r for r in records if r.session_key not in keep]


def _store_for(record: store_records.Record) -> SessionStore:
    """A store that already knows the session's user and bucket (read with the
    index), so deleting it takes one round trip and no fix-up."""
    return SessionStore.for_record(record)

"""Every Redis key name session_ng uses, and nothing else.

``{...}`` is a Redis Cluster hash tag: the hash and the shadow key of one session
share a slot, so one script can touch both atomically. The data model is
documented in docs/data-model.rst; changing a name here is a breaking change.
"""

from __future__ import annotations

import re
from typing import TypeGuard
from urllib.parse import quote

# What a session key may look like before it is allowed into a key name.
# Django's contract accepts any key of 8 characters or more (and makes 32 from
# [a-z0-9]); we accept the same minimum, but only [a-z0-9] and at most 128
# characters, so nothing that could carry braces, colons, globs or bytes a log
# viewer would choke on becomes part of a Redis key name.
SESSION_KEY_RE = re.compile(r"[a-z0-9]{8,128}")


def is_valid_session_key(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and SESSION_KEY_RE.fullmatch(value) is not None


def session_hash(ns: str, session_key: str) -> str:
    return f"{ns}:sessions:{{{session_key}}}"


def session_shadow(ns: str, session_key: str) -> str:
    return f"{ns}:sessions:{{{session_key}}}:expires"


def session_event(ns: str, session_key: str) -> str:
    """The claim on the event that ended this session (same slot as its hash).

    Whoever sets it first (SET NX) reports the end; session_ng's own delete
    (and on Redis Cluster, its key rotation) sets it before it deletes, so no
    worker reports that end again.
    """
    return f"{ns}:sessions:{{{session_key}}}:event"


def session_import_marker(ns: str, session_key: str) -> str:
    """Set when a session was imported from another engine (same slot as its
    hash): it is imported once, never again after it ended here, for as long
    as the old store could still hand it out."""
    return f"{ns}:sessions:{{{session_key}}}:imported"


def session_key_from_shadow(ns: str, name: str) -> str | None:
    """Inverse of :func:`session_shadow`."""
    suffix = ":expires"
    return session_key_from_hash(ns, name[: -len(suffix)]) if name.endswith(suffix) else None


def notification_probe(ns: str, token: str) -> str:
    """A throwaway key whose notifications show whether Redis sends them."""
    return f"{ns}:worker:probe:{token}"


def worker_lock(ns: str) -> str:
    """Held by the one worker that sweeps."""
    return f"{ns}:worker:lock"


def event_stream(ns: str) -> str:
    """The stream of session ends (a Redis Stream): the worker's reports are
    delivered from it through a consumer group, so none is lost when a worker
    dies, and services outside Django can read it (docs/events.rst)."""
    return f"{ns}:events"


# The consumer group through which session_ng's workers (and clearsessions)
# deliver the stream's entries as signals.
EVENT_GROUP = "session_ng"


def expiration_bucket(ns: str, epoch_minute: int) -> str:
    return f"{ns}:expirations:{epoch_minute}"


def sweep_cursor(ns: str) -> str:
    """The last epoch minute whose bucket was swept (a string)."""
    return f"{ns}:expirations:swept"


def user_index(ns: str, user_id: str) -> str:
    """One user's sessions: a hash, session key -> "" (a small hash is
    listpack-encoded on every Redis, a small set of strings only from 7.2)."""
    # A primary key is usually an int or a UUID, but may be any string: quote
    # it so that braces, colons or globs in it cannot change the key's meaning.
    return f"{ns}:users:{{{quote(user_id, safe='')}}}"


def session_key_from_hash(ns: str, name: str) -> str | None:
    """Inverse of :func:`session_hash`, for listeners that see key names."""
    prefix = f"{ns}:sessions:{{"
    if not (name.startswith(prefix) and name.endswith("}")):
        return None
    key = name[len(prefix) : -1]
    return key if is_valid_session_key(key) else None

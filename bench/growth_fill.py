"""Filling a private Redis with N logged-in sessions for ``bench.growth``.

Every session goes through session_ng's real save path: the ``SavePlan`` that
``SessionStore`` builds for a new session (``SessionStore._plan``), executed
by the ``store_sessions.save`` operation (the save script with its bucket and user
index writes). Only the driving differs from a request: the operations'
script calls are pipelined, ``BATCH`` at a time, so that a million sessions
take minutes rather than an hour of round trips.

Sessions are *aged*: each was last active some time in the past two weeks
(Django's default ``SESSION_COOKIE_AGE``), so its ``accessed`` field, its
expiration bucket and the TTLs of its hash and shadow key are those of a
session saved that long ago. The plan is the store's with its clock moved
back (``now`` and ``bucket``); the save script counts TTLs from Redis's own
clock, so they are then shortened to what is left of the session's life, in
the same pipeline. A session whose life is over gets a shadow key that
expires 1 ms later, as the save script does for an expiry date already past,
so it ends as an expiry, and a hash kept for the grace period. User indexes
keep the TTL the save script gave them (two weeks and the grace period), a
little longer than aged sessions would have left them. No ``session_created``
signal is sent: the store's ``save()``, which sends it, is not called.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from bench.client import PROFILE
from session_ng import keys
from session_ng.backends.redis import SessionStore, new_session_key
from session_ng.client_info import CLIENT_KEY
from session_ng.conf import conf
from session_ng.store import driver, records
from session_ng.store import sessions as store_sessions
from session_ng.store.records import now_ms

BATCH = 1000
SESSIONS_PER_USER = 5
# No background session ends in the hour after the fill starts: the buckets the
# sweep measurement uses hold exactly the sessions it puts there.
QUIET_MS = 3_600_000
# What session_ng's user_logged_in receiver records (client_info.record_login).
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
BACKEND = "django.contrib.auth.backends.ModelBackend"
# Scripts the measured operations run, loaded before the memory baseline so that
# Redis's script cache is not charged to the sessions.
SCRIPTS = (driver.TOUCH, driver.SAVE, driver.UPDATE, driver.SWEEP_MEMBER)


@dataclass(frozen=True)
class Session:
    """One session to write: whose it is and when its life ends (epoch ms)."""

    user: int
    ends: int


@dataclass(frozen=True)
class Memory:
    used: int  # INFO memory used_memory
    keys: int  # DBSIZE
    main_table: int  # MEMORY STATS overhead.hashtable.main of db 0
    expires_table: int  # ... overhead.hashtable.expires


def cookie_age_ms() -> int:
    return int(settings.SESSION_COOKIE_AGE) * 1000


def session_data(user: int, rng: random.Random) -> dict[str, Any]:
    """What a logged-in session holds: a few small attributes, what Django's
    ``login()`` stores and what session_ng's login receiver adds."""
    return {
        **PROFILE,
        "_auth_user_id": str(user),
        "_auth_user_backend": BACKEND,
        # get_session_auth_hash(): an HMAC-SHA256 hex digest, 64 characters.
        "_auth_user_hash": rng.randbytes(32).hex(),
        CLIENT_KEY: {
            "ua": USER_AGENT,
            "ip": f"10.{user >> 16 & 255}.{user >> 8 & 255}.{user & 255}",
        },
    }


def _plan(session_key: str, session: Session, rng: random.Random) -> records.SavePlan:
    store = SessionStore(session_key)
    plan = store._plan(session_data(session.user, rng), create=True)
    assert plan is not None  # a creation always writes
    accessed = session.ends - plan.max_inactive * 1000
    return dataclasses.replace(plan, now=accessed, bucket=records.bucket_minute(session.ends))


def _finish(operation: driver.Operation[str], reply: Any) -> str:
    try:
        operation.send(reply)
    except StopIteration as done:
        return str(done.value)
    raise RuntimeError("store_sessions.save wanted a second step")


def save_sessions(client: redis.Redis, sessions: Sequence[Session], seed: int) -> list[str]:
    """Write ``sessions`` through ``store_sessions.save``, pipelined; their keys."""
    ns = conf.snapshot().namespace
    grace = records.GRACE_MS
    rng = random.Random(seed)
    session_keys: list[str] = []
    for start in range(0, len(sessions), BATCH):
        chunk = sessions[start : start + BATCH]
        pipe: Any = client.pipeline(transaction=False)  # redis-py leaves it untyped
        operations = []
        batch_keys = []
        for session in chunk:
            session_key = new_session_key()
            operation = store_sessions.save(ns, _plan(session_key, session, rng))
            step = next(operation)
            if not isinstance(step, driver.Eval):
                raise RuntimeError("store_sessions.save did not start with its script (Cluster?)")
            pipe.execute_command("EVALSHA", step.script.sha, len(step.keys), *step.keys, *step.args)
            operations.append(operation)
            batch_keys.append(session_key)
        # The TTLs the save script set count from now: shorten them to what is
        # left of each session's life (queued after the saves, same connection).
        now = now_ms()
        for session_key, session in zip(batch_keys, chunk, strict=True):
            left = session.ends - now
            pipe.execute_command("PEXPIRE", keys.session_shadow(ns, session_key), max(left, 1))
            pipe.execute_command(
                "PEXPIRE", keys.session_hash(ns, session_key), max(left, 0) + grace
            )
        replies = pipe.execute()
        for operation, reply in zip(operations, replies[: len(operations)], strict=True):
            status = _finish(operation, reply)
            if status != "ok":
                raise RuntimeError(f"save returned {status!r}")
        session_keys += batch_keys
    return session_keys


def background(size: int, started: int, seed: int) -> Iterator[Session]:
    """``size`` sessions of ``size // SESSIONS_PER_USER`` users, last active at
    uniformly spread times of the past two weeks (none ending in QUIET_MS).

    Session ``i`` belongs to user ``i % users + 1``: every user has five
    sessions, of different ages.
    """
    users = size // SESSIONS_PER_USER
    life = cookie_age_ms()
    rng = random.Random(seed)
    for i in range(size):
        ends = started + QUIET_MS + rng.randrange(life - QUIET_MS)
        yield Session(user=i % users + 1, ends=ends)


def fill(
    client: redis.Redis,
    size: int,
    progress: Callable[[str], None],
    seed: int = 1,
) -> tuple[list[str], float]:
    """Write ``size`` background sessions; (their keys in order, seconds taken)."""
    began = time.perf_counter()
    sessions = background(size, now_ms(), seed)
    written: list[str] = []
    step = max(BATCH, size // 10)
    while chunk := list(itertools.islice(sessions, step)):
        written += save_sessions(client, chunk, seed + len(written))
        progress(f"  {len(written):,}/{size:,} sessions ({time.perf_counter() - began:.0f} s)")
    return written, time.perf_counter() - began


def load_scripts(client: redis.Redis) -> None:
    for script in SCRIPTS:
        client.script_load(script.source)


def memory(client: redis.Redis) -> Memory:
    stats = client.memory_stats()
    db0 = stats.get("db.0", {})
    return Memory(
        used=int(client.info("memory")["used_memory"]),
        keys=int(client.dbsize()),
        main_table=int(db0.get("overhead.hashtable.main", 0)),
        expires_table=int(db0.get("overhead.hashtable.expires", 0)),
    )


def key_bytes(client: redis.Redis, chunk: int = 10_000) -> dict[str, int]:
    """``MEMORY USAGE key SAMPLES 0`` summed over every key, by kind of key."""
    ns = conf.snapshot().namespace
    kinds = {
        "hash": f"{ns}:sessions:",
        "bucket": f"{ns}:expirations:",
        "index": f"{ns}:users:",
    }
    totals = dict.fromkeys([*kinds, "shadow", "other"], 0)
    batch: list[bytes] = []

    def flush() -> None:
        pipe: Any = client.pipeline(transaction=False)  # redis-py leaves it untyped
        for name in batch:
            pipe.execute_command("MEMORY", "USAGE", name, "SAMPLES", "0")
        for name, used in zip(batch, pipe.execute(), strict=True):
            totals[_kind(name.decode(), kinds)] += int(used or 0)
        batch.clear()

    for name in client.scan_iter(count=chunk):
        batch.append(name)
        if len(batch) >= chunk:
            flush()
    if batch:
        flush()
    return totals


def _kind(name: str, kinds: dict[str, str]) -> str:
    if name.endswith(":expires"):
        return "shadow"
    for kind, prefix in kinds.items():
        if name.startswith(prefix) and not name.endswith((":event", ":swept")):
            return kind
    return "other"

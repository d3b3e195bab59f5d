"""The worker behind ``manage.py session_ng_worker``: session ends -> signals.

It listens for keyspace notifications (``expired`` on a session's shadow key:
the session expired; ``del`` on its hash or shadow key: it was deleted by
something other than session_ng, e.g. ``DEL`` in redis-cli) and, while it holds
the worker lock, sweeps the expiration buckets: the due ones (re-filing
sessions whose idle timer slid, reporting those that ended, catching up on
minutes no worker saw) and the current minute's, which it looks at every
``sweep_interval`` seconds so that Redis expires sessions within seconds of
their end rather than whenever its own expiry cycle finds them.

Every end is claimed in Redis before it is reported (see
``repository.claim_end``), so however many workers run, each end reaches the
signal's receivers once; session_ng's own deletes and key rotations claim
theirs before they happen and are never reported here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.exceptions

from session_ng import keys, repository
from session_ng.conf import conf
from session_ng.connection import get_client
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.repository import UNAVAILABLE_ERRORS, Record
from session_ng.signals import session_deleted, session_expired

logger = logging.getLogger("session_ng.worker")

# Redis went away: from the pub/sub connection (raw redis-py errors) or from
# an operation (already turned into SessionStoreUnavailable).
RETRYABLE: tuple[type[BaseException], ...] = (SessionStoreUnavailable, *UNAVAILABLE_ERRORS)
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)


def channels(db: int) -> tuple[str, str]:
    return f"__keyevent@{db}__:expired", f"__keyevent@{db}__:del"


def probe(
    pubsub: Any, db: int, timeout: float = 2.0, on_other: Callable[[Any], None] | None = None
) -> list[str]:
    """Which of the needed keyevents ("expired", "del") Redis does not send.

    ``pubsub`` must be subscribed to ``channels(db)``; the probe's own
    messages are consumed here, any other is handed to ``on_other``.
    """
    token = uuid.uuid4().hex
    ns = conf.namespace
    repository.run(repository.probe_notifications(ns, token))
    expected = {
        "expired": keys.notification_probe(ns, token + ":x"),
        "del": keys.notification_probe(ns, token + ":d"),
    }
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < len(expected) and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is None:
            continue
        event = message["channel"].decode().rsplit(":", 1)[-1]
        if expected.get(event) == message["data"].decode():
            seen.add(event)
        elif on_other is not None:
            on_other(message)
    return [event for event in expected if event not in seen]


def probe_now() -> list[str]:
    """The probe on a connection of its own (for the system check)."""
    client = get_client()
    db = client.connection_pool.connection_kwargs.get("db", 0)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(*channels(db))
        return probe(pubsub, db)
    finally:
        pubsub.close()


class Worker:
    def __init__(self, sweep_interval: float = 2.0, lock_ttl: float = 10.0) -> None:
        self.sweep_interval = sweep_interval
        self.lock_ttl_ms = int(lock_ttl * 1000)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self.reported = 0

    # --- the loop ------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, reconnecting whenever Redis goes away."""
        failures = 0
        while not stop.is_set():
            try:
                self._serve(stop)
                failures = 0
            except RETRYABLE as exc:
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                logger.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                self.leader = False
                stop.wait(delay)
        self._release()
        logger.info(
            "session_ng worker %s stopped after reporting %d events", self.id, self.reported
        )

    def _serve(self, stop: threading.Event) -> None:
        client = get_client()
        db = client.connection_pool.connection_kwargs.get("db", 0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(*channels(db))
            self._check_notifications(pubsub, db)
            logger.info("session_ng worker %s listening on db %s", self.id, db)
            next_sweep = 0.0
            while not stop.is_set():
                message = pubsub.get_message(timeout=min(0.5, self.sweep_interval))
                if message is not None:
                    self._on_message(message)
                if time.monotonic() >= next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + self.sweep_interval
        finally:
            pubsub.close()

    # --- notifications -------------------------------------------------------

    def _check_notifications(self, pubsub: Any, db: int) -> None:
        if not conf.CONFIGURE_KEYSPACE_NOTIFICATIONS:
            # Managed Redis may forbid CONFIG: find out without it.
            missing = probe(pubsub, db, on_other=self._on_message)
            if missing:
                logger.warning(
                    "Redis does not publish %s keyspace events (notify-keyspace-events needs "
                    "%r); CONFIGURE_KEYSPACE_NOTIFICATIONS is off, so set it yourself (e.g. in "
                    "the managed Redis parameter group). Until then expiries are seen only by "
                    "the sweep and deletes made outside session_ng not at all.",
                    " and ".join(missing),
                    repository.NOTIFY_FLAGS,
                )
            return
        try:
            current = repository.run(repository.notification_flags())
        except redis.exceptions.ResponseError as exc:
            # Managed Redis (ElastiCache, Memorystore) may refuse CONFIG.
            logger.warning(
                "cannot read notify-keyspace-events (%s); make sure it includes %r, or "
                "expiry and external deletes will only be seen by the sweep",
                exc,
                repository.NOTIFY_FLAGS,
            )
            return
        if repository.missing_flags(current):
            wanted = repository.run(repository.enable_notifications(current))
            logger.info("set notify-keyspace-events to %r", wanted)

    def _on_message(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        name = message["data"].decode() if isinstance(message["data"], bytes) else ""
        ns = conf.namespace
        if channel.endswith(":expired"):
            key = keys.session_key_from_shadow(ns, name)
            if key is not None:
                self._report(key, "expired")
        elif channel.endswith(":del"):
            key = keys.session_key_from_hash(ns, name) or keys.session_key_from_shadow(ns, name)
            if key is not None:
                self._report(key, "deleted")

    # --- sweeping ------------------------------------------------------------

    def _sweep(self) -> None:
        ns = conf.namespace
        held = repository.run(repository.hold_lock(ns, self.id, self.lock_ttl_ms))
        if held != self.leader:
            logger.info(
                "session_ng worker %s %s the sweep lock", self.id, "took" if held else "lost"
            )
            self.leader = held
        if not held:
            return
        now = int(time.time() * 1000)
        report = repository.run(repository.sweep(ns, now))
        for ended in report.expired:
            self._report(ended.session_key, "expired")
        current = repository.bucket_minute(now)
        for key in repository.run(repository.touch_bucket(ns, current)):
            self._report(key, "expired")
        if report.buckets or report.expired or report.refiled:
            logger.debug(
                "swept %d buckets: %d ended, %d re-filed, %d dropped",
                report.buckets,
                len(report.expired),
                report.refiled,
                report.dropped,
            )

    def _release(self) -> None:
        if not self.leader:
            return
        # If Redis is gone, the lock runs out by itself.
        with contextlib.suppress(SessionStoreUnavailable):
            repository.run(repository.release_lock(conf.namespace, self.id))
        self.leader = False

    # --- reporting -----------------------------------------------------------

    def _report(self, session_key: str, kind: str) -> None:
        record = repository.run(repository.claim_end(conf.namespace, session_key, kind))
        if isinstance(record, repository.NotClaimed):
            return
        user_id = record.user if isinstance(record, Record) else None
        data: dict[str, Any] = {}
        if isinstance(record, Record):
            from session_ng.backends.redis import SessionStore

            data = SessionStore().decode_attributes(record)[0]
        signal = session_expired if kind == "expired" else session_deleted
        signal.send(sender=Worker, session_key=session_key, user_id=user_id, data=data)
        self.reported += 1
        logger.info("session %s… %s (user %s)", session_key[:6], kind, user_id)

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
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis.exceptions

from session_ng import keys, repository
from session_ng.conf import conf
from session_ng.connection import get_client
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.repository import Record
from session_ng.signals import session_deleted, session_expired

logger = logging.getLogger("session_ng.worker")


def retryable(exc: BaseException) -> bool:
    """Redis went away: from the pub/sub connection or a Cluster client (raw
    redis-py errors) or from an operation (already SessionStoreUnavailable)."""
    return isinstance(exc, SessionStoreUnavailable) or repository.is_outage(exc)


RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
# Redis Cluster: how often the worker reads the layout again (failovers are
# also noticed at once, by the failing connection).
TOPOLOGY_INTERVAL = 5.0


def channels(db: int) -> tuple[str, str]:
    return f"__keyevent@{db}__:expired", f"__keyevent@{db}__:del"


def probe(
    pubsub: Any,
    db: int,
    timeout: float = 2.0,
    on_other: Callable[[Any], None] | None = None,
    token: str | None = None,
) -> list[str]:
    """Which of the needed keyevents ("expired", "del") Redis does not send.

    ``pubsub`` must be subscribed to ``channels(db)``; the probe's own
    messages are consumed here, any other is handed to ``on_other``.
    """
    ns = conf.namespace
    token = token or uuid.uuid4().hex
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


def probe_node(client: Any, node: Any, timeout: float = 2.0) -> list[str]:
    """The probe on one Cluster primary: its own pub/sub connection, and probe
    keys in its own slots (each node publishes the events of its own keys
    only; the Cluster client routes the probe's writes there by key)."""
    ns = conf.namespace
    for _ in range(10_000):
        token = uuid.uuid4().hex
        probe_keys = [keys.notification_probe(ns, token + s) for s in (":x", ":d")]
        if all(client.get_node_from_key(k).name == node.name for k in probe_keys):
            break
    else:  # pragma: no cover - 16384 slots, a third of them this node's
        return []
    pubsub = node.redis_connection.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(*channels(0))
        return probe(pubsub, 0, timeout, token=token)
    finally:
        pubsub.close()


def probe_now() -> list[str]:
    """The probe on a connection of its own (for the system check); on a
    Cluster, on every primary (what any of them lacks)."""
    client = get_client()
    if repository.split_slots():
        client.nodes_manager.initialize()
        missing: set[str] = set()
        for node in client.get_primaries():
            missing.update(probe_node(client, node))
        return [event for event in ("expired", "del") if event in missing]
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
        logger.info(
            "session_ng worker %s starting (namespace %s, sweeps every %g s)",
            self.id,
            conf.namespace,
            self.sweep_interval,
        )
        failures = 0
        while not stop.is_set():
            try:
                self._serve(stop)
                failures = 0
            except Exception as exc:
                if not retryable(exc):
                    raise
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                logger.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                self.leader = False
                stop.wait(delay)
        self._release()
        logger.info(
            "session_ng worker %s stopped after reporting %d %s",
            self.id,
            self.reported,
            "event" if self.reported == 1 else "events",
        )

    def _serve(self, stop: threading.Event) -> None:
        client = get_client()
        if repository.split_slots():
            return self._serve_cluster(client, stop)
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

    # --- Redis Cluster ---------------------------------------------------------

    def _serve_cluster(self, client: Any, stop: threading.Event) -> None:
        """Listen on every primary: each publishes the events of its own slots.

        The layout is read again every ``TOPOLOGY_INTERVAL`` seconds, and at
        once when a node's connection fails (a failover): new primaries are
        listened to, old ones dropped. An event published while no one
        listened to its node is caught by the sweep (as an expiry).
        """
        listeners: dict[str, Any] = {}
        configured: set[str] = set()
        try:
            next_sweep = next_layout = 0.0
            while not stop.is_set():
                if time.monotonic() >= next_layout or not listeners:
                    self._follow_layout(client, listeners, configured)
                    next_layout = time.monotonic() + TOPOLOGY_INTERVAL
                heard = False
                for name, pubsub in list(listeners.items()):
                    try:
                        message = pubsub.get_message(timeout=0)
                    except Exception as exc:
                        if not retryable(exc):
                            raise
                        logger.warning("lost primary %s (%s); reading the layout again", name, exc)
                        with contextlib.suppress(Exception):
                            pubsub.close()
                        del listeners[name]
                        next_layout = 0.0
                        continue
                    if message is not None:
                        heard = True
                        self._on_message(message)
                if not heard:
                    stop.wait(0.05)
                if time.monotonic() >= next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + self.sweep_interval
        finally:
            for pubsub in listeners.values():
                with contextlib.suppress(Exception):
                    pubsub.close()

    def _follow_layout(self, client: Any, listeners: dict[str, Any], configured: set[str]) -> None:
        client.nodes_manager.initialize()
        nodes = client.get_nodes()
        # A node that left the layout and comes back (restarted, its settings
        # gone) is configured again.
        configured.intersection_update(node.name for node in nodes)
        for node in nodes:
            # Replicas too: a promoted one must publish from its first second.
            if node.name not in configured and self._configure_node(client, node):
                configured.add(node.name)
        primaries = {node.name: node for node in client.get_primaries()}
        for name in [n for n in listeners if n not in primaries]:
            with contextlib.suppress(Exception):
                listeners.pop(name).close()
        added = []
        for name, node in primaries.items():
            if name not in listeners:
                pubsub = node.redis_connection.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(*channels(0))
                listeners[name] = pubsub
                added.append(name)
        if added:
            logger.info(
                "session_ng worker %s listening on db 0 of %d primaries (%s)",
                self.id,
                len(listeners),
                ", ".join(sorted(listeners)),
            )

    def _configure_node(self, client: Any, node: Any) -> bool:
        """Make one node publish the events; True when it does (or was told to).

        Without CONFIGURE_KEYSPACE_NOTIFICATIONS (managed Redis), a primary is
        probed instead, and a warning says what it does not publish.
        """
        if not conf.CONFIGURE_KEYSPACE_NOTIFICATIONS:
            if node.server_type == "primary":
                try:
                    self._warn_if_missing(probe_node(client, node))
                except Exception as exc:
                    if not retryable(exc):
                        raise
                    return False
            return True
        connection = node.redis_connection
        try:
            current = str(
                connection.config_get("notify-keyspace-events").get("notify-keyspace-events", "")
            )
            if repository.missing_flags(current):
                wanted = current + repository.missing_flags(current)
                connection.config_set("notify-keyspace-events", wanted)
                logger.info("set notify-keyspace-events to %r on %s", wanted, node.name)
        except redis.exceptions.ResponseError as exc:
            logger.warning("cannot configure notify-keyspace-events on %s: %s", node.name, exc)
        except Exception as exc:
            if not retryable(exc):
                raise
            return False  # a node that is down now: try again at the next layout read
        return True

    # --- notifications -------------------------------------------------------

    def _check_notifications(self, pubsub: Any, db: int) -> None:
        if not conf.CONFIGURE_KEYSPACE_NOTIFICATIONS:
            # Managed Redis may forbid CONFIG: find out without it.
            self._warn_if_missing(probe(pubsub, db, on_other=self._on_message))
            return
        try:
            current = repository.run(repository.notification_flags())
            if repository.missing_flags(current):
                wanted = repository.run(repository.enable_notifications(current))
                logger.info("set notify-keyspace-events to %r", wanted)
        except redis.exceptions.ResponseError as exc:
            # Managed Redis (ElastiCache, Memorystore) or an ACL may refuse
            # CONFIG: say so, and find out whether the events come anyway.
            logger.warning("cannot configure notify-keyspace-events: %s", exc)
            self._warn_if_missing(probe(pubsub, db, on_other=self._on_message))

    @staticmethod
    def _warn_if_missing(missing: list[str]) -> None:
        if missing:
            logger.warning(
                "Redis does not publish %s keyspace events (notify-keyspace-events needs %r); "
                "set it yourself (e.g. in the managed Redis parameter group). Until then "
                "expiries are seen only by the sweep, and deletes made outside session_ng "
                "are reported late, as expiries.",
                " and ".join(missing),
                repository.NOTIFY_FLAGS,
            )

    @contextlib.contextmanager
    def _carry_on(self, what: str) -> Iterator[None]:
        """A corrupt key or a bug met while handling one event or one sweep is
        logged, and the worker goes on: exiting would stop every report (and
        crash-loop under a supervisor). Outages still reach the reconnect loop."""
        try:
            yield
        except Exception as exc:
            if retryable(exc):
                raise
            logger.exception("session_ng worker %s: %s failed; going on", self.id, what)

    def _on_message(self, message: dict[str, Any]) -> None:
        with self._carry_on("an event"):
            self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        name = message["data"].decode() if isinstance(message["data"], bytes) else ""
        ns = conf.namespace
        if channel.endswith(":expired"):
            key = keys.session_key_from_shadow(ns, name)
            if key is not None:
                self.reported += report_end(key, "expired")
        elif channel.endswith(":del"):
            key = keys.session_key_from_hash(ns, name) or keys.session_key_from_shadow(ns, name)
            if key is not None:
                self.reported += report_end(key, "deleted")

    # --- sweeping ------------------------------------------------------------

    def _sweep(self) -> None:
        with self._carry_on("a sweep"):
            self._sweep_once()

    def _sweep_once(self) -> None:
        ns = conf.namespace
        held = repository.run(repository.hold_lock(ns, self.id, self.lock_ttl_ms))
        if held != self.leader:
            logger.info(
                "session_ng worker %s %s the sweep lock", self.id, "took" if held else "lost"
            )
            self.leader = held
        if held:
            self.reported += sweep_and_report(touch_current=True)

    def _release(self) -> None:
        if not self.leader:
            return
        # If Redis is gone, the lock runs out by itself.
        with contextlib.suppress(SessionStoreUnavailable):
            repository.run(repository.release_lock(conf.namespace, self.id))
        self.leader = False


# --- reporting (the worker's, and clear_expired()'s) ------------------------------


def _event(session_key: str, record: Record | repository.Corrupt | None) -> dict[str, Any]:
    user_id = record.user if isinstance(record, Record) else None
    data: dict[str, Any] = {}
    if isinstance(record, Record):
        from session_ng.backends.redis import SessionStore

        data = SessionStore().decode_attributes(record)
    return {"session_key": session_key, "user_id": user_id, "data": data}


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


def report_end(session_key: str, kind: str) -> bool:
    """Claim and report one end ("expired" or "deleted"); False if someone
    else reports it. A receiver that raises is logged, not propagated: the end
    is claimed, and the other receivers and ends must still be served."""
    return report_ends([session_key], kind) == 1


async def areport_end(session_key: str, kind: str) -> bool:
    return await areport_ends([session_key], kind) == 1


# Ends claimed per batch of round trips (three, see repository.claim_ends).
REPORT_BATCH = 200


def report_ends(session_keys: Sequence[str], kind: str) -> int:
    """``report_end`` for many sessions, claimed in batches; how many this
    process reported."""
    reported = 0
    for start in range(0, len(session_keys), REPORT_BATCH):
        chunk = session_keys[start : start + REPORT_BATCH]
        records = repository.run(repository.claim_ends(conf.namespace, chunk, kind))
        for session_key, record in zip(chunk, records, strict=True):
            if isinstance(record, repository.NotClaimed):
                continue
            event = _event(session_key, record)
            _log_outcome(kind, event, _signal(kind).send_robust(sender=Worker, **event))
            reported += 1
    return reported


async def areport_ends(session_keys: Sequence[str], kind: str) -> int:
    reported = 0
    for start in range(0, len(session_keys), REPORT_BATCH):
        chunk = session_keys[start : start + REPORT_BATCH]
        records = await repository.arun(repository.claim_ends(conf.namespace, chunk, kind))
        for session_key, record in zip(chunk, records, strict=True):
            if isinstance(record, repository.NotClaimed):
                continue
            event = _event(session_key, record)
            _log_outcome(kind, event, await _signal(kind).asend_robust(sender=Worker, **event))
            reported += 1
    return reported


def _ended(report: repository.SweepReport) -> list[str]:
    return [e.session_key for e in report.expired] + report.vanished


def _log_sweep(report: repository.SweepReport, count: int) -> None:
    if report.buckets or count or report.refiled:
        logger.debug(
            "swept %d buckets: %d ended, %d re-filed, %d dropped",
            report.buckets,
            count,
            report.refiled,
            report.dropped,
        )


def sweep_and_report(now: int | None = None, touch_current: bool = False) -> int:
    """Sweep the due buckets and report what ended; returns how many ends.

    Sessions found ended with their data still there are reported with it;
    those found with nothing left (they ended unseen longer ago than the grace
    period) are reported with no data, unless their end was claimed already
    (session_ng's own deletes, rotations). ``touch_current`` also looks at the
    current minute's bucket, so Redis expires its sessions on time.
    """
    ns = conf.namespace
    now = int(time.time() * 1000) if now is None else now
    report = repository.run(repository.sweep(ns, now))
    ended = _ended(report)
    if touch_current:
        ended += repository.run(repository.touch_bucket(ns, repository.bucket_minute(now)))
    count = report_ends(ended, "expired")
    _log_sweep(report, count)
    return count


async def asweep_and_report(now: int | None = None, touch_current: bool = False) -> int:
    ns = conf.namespace
    now = int(time.time() * 1000) if now is None else now
    report = await repository.arun(repository.sweep(ns, now))
    ended = _ended(report)
    if touch_current:
        ended += await repository.arun(repository.touch_bucket(ns, repository.bucket_minute(now)))
    count = await areport_ends(ended, "expired")
    _log_sweep(report, count)
    return count

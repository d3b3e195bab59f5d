"""The worker behind ``manage.py session_ng_worker``: its loop.

It listens for keyspace notifications (``expired`` on a session's shadow key:
the session expired; ``del`` on its hash or shadow key: it was deleted by
something other than session_ng, e.g. ``DEL`` in redis-cli) and, while it holds
the worker lock, sweeps the expiration buckets: the due ones (re-filing
sessions whose idle timer slid, reporting those that ended, catching up on
minutes no worker saw) and the current minute's, which it looks at every
``sweep_interval`` seconds so that Redis expires sessions within seconds of
their end rather than whenever its own expiry cycle finds them.

What it finds ended is published to the event stream and delivered from it
(``session_ng.events``): however many workers run, each end reaches the
signal's receivers once, and none is lost when one dies; session_ng's own
deletes and key rotations claim theirs before they happen and are never
reported here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import redis.exceptions
from redis.backoff import ExponentialBackoff
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from session_ng import events, keys
from session_ng.conf import conf
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.store import driver, expiry, notify
from session_ng.store.client import get_client

logger = logging.getLogger("session_ng.worker")


def retryable(exc: BaseException) -> bool:
    """Redis went away: from the pub/sub connection or a Cluster client (raw
    redis-py errors) or from an operation (already SessionStoreUnavailable)."""
    return isinstance(exc, SessionStoreUnavailable) or driver.is_outage(exc)


# Waits between reconnection attempts: 0.5 s, doubling up to 5 s.
RECONNECT_BACKOFF = ExponentialBackoff(cap=5.0, base=0.5)
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
    ns = conf.snapshot().namespace
    token = token or uuid.uuid4().hex
    driver.run(notify.probe_notifications(ns, token))
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
    ns = conf.snapshot().namespace
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
    if driver.split_slots():
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


# Notifications handled together (one publish) when they come in a burst.
NOTIFICATION_BATCH = 200


class Worker(events.Worker):
    """The loop of ``manage.py session_ng_worker`` (see the module's docstring)."""

    def __init__(
        self,
        sweep_interval: float = 2.0,
        lock_ttl: float = 10.0,
        redeliver_after: float = events.REDELIVER_AFTER,
    ) -> None:
        self.sweep_interval = sweep_interval
        self.lock_ttl_ms = int(lock_ttl * 1000)
        self.redeliver_after = redeliver_after
        # The last delivery sent something: deliver again without waiting.
        self.backlog = False
        # The sweep lock (redis-py's Lock), made on first use.
        self._lock: Lock | None = None
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self.reported = 0

    # --- the loop ------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, reconnecting whenever Redis goes away."""
        logger.info(
            "session_ng worker %s starting (namespace %s, sweeps every %g s)",
            self.id,
            conf.snapshot().namespace,
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
                delay = RECONNECT_BACKOFF.compute(failures)
                failures += 1
                logger.warning("Redis unavailable (%s); retrying in %.1f s", exc, delay)
                self.leader = False
                self._lock = None  # made again on the client of the next attempt
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
        if driver.split_slots():
            return self._serve_cluster(client, stop)
        db = client.connection_pool.connection_kwargs.get("db", 0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(*channels(db))
            self._check_notifications(pubsub, db)
            driver.run(expiry.ensure_group(conf.snapshot().namespace))
            logger.info("session_ng worker %s listening on db %s", self.id, db)
            next_sweep = 0.0
            while not stop.is_set():
                wait = 0.0 if self.backlog else min(0.5, self.sweep_interval)
                message = pubsub.get_message(timeout=wait)
                if message is not None:
                    burst = [message]
                    while len(burst) < NOTIFICATION_BATCH:
                        message = pubsub.get_message(timeout=0)
                        if message is None:
                            break
                        burst.append(message)
                    self._on_messages(burst)
                elif self.backlog:
                    self._deliver()
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
        driver.run(expiry.ensure_group(conf.snapshot().namespace))
        try:
            next_sweep = next_layout = 0.0
            while not stop.is_set():
                if time.monotonic() >= next_layout or not listeners:
                    self._follow_layout(client, listeners, configured)
                    next_layout = time.monotonic() + TOPOLOGY_INTERVAL
                burst: list[dict[str, Any]] = []
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
                        burst.append(message)
                if burst:
                    self._on_messages(burst)
                elif self.backlog:
                    self._deliver()
                else:
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
        if not conf.snapshot().configure_keyspace_notifications:
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
            if notify.missing_flags(current):
                wanted = current + notify.missing_flags(current)
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
        if not conf.snapshot().configure_keyspace_notifications:
            # Managed Redis may forbid CONFIG: find out without it.
            self._warn_if_missing(probe(pubsub, db, on_other=self._on_other))
            return
        try:
            current = driver.run(notify.notification_flags())
            if notify.missing_flags(current):
                wanted = driver.run(notify.enable_notifications(current))
                logger.info("set notify-keyspace-events to %r", wanted)
        except redis.exceptions.ResponseError as exc:
            # Managed Redis (ElastiCache, Memorystore) or an ACL may refuse
            # CONFIG: say so, and find out whether the events come anyway.
            logger.warning("cannot configure notify-keyspace-events: %s", exc)
            self._warn_if_missing(probe(pubsub, db, on_other=self._on_other))

    @staticmethod
    def _warn_if_missing(missing: list[str]) -> None:
        if missing:
            logger.warning(
                "Redis does not publish %s keyspace events (notify-keyspace-events needs %r); "
                "set it yourself (e.g. in the managed Redis parameter group). Until then "
                "expiries are seen only by the sweep, and deletes made outside session_ng "
                "are reported late, as expiries.",
                " and ".join(missing),
                notify.NOTIFY_FLAGS,
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

    def _on_other(self, message: dict[str, Any]) -> None:
        self._on_messages([message])

    def _on_messages(self, messages: list[dict[str, Any]]) -> None:
        """Publish the ends these notifications announce, then deliver."""
        with self._carry_on("an event"):
            ended: dict[str, list[str]] = {"expired": [], "deleted": []}
            for message in messages:
                found = self._ended_by(message)
                if found is not None:
                    ended[found[0]].append(found[1])
            for kind, session_keys in ended.items():
                if session_keys:
                    events.publish_ends(session_keys, kind)
        self._deliver()

    @staticmethod
    def _ended_by(message: dict[str, Any]) -> tuple[str, str] | None:
        """(kind, session key) of the end a notification announces, if any."""
        channel = message["channel"].decode()
        name = message["data"].decode() if isinstance(message["data"], bytes) else ""
        ns = conf.snapshot().namespace
        if channel.endswith(":expired"):
            key = keys.session_key_from_shadow(ns, name)
            return None if key is None else ("expired", key)
        if channel.endswith(":del"):
            key = keys.session_key_from_hash(ns, name) or keys.session_key_from_shadow(ns, name)
            return None if key is None else ("deleted", key)
        return None

    def _deliver(self, redeliver: bool = False) -> None:
        """Send what waits in the stream (with ``redeliver``, first what dead
        consumers left pending); a burst is handled in slices, so that the
        notifications keep being read."""
        self.backlog = False
        with self._carry_on("a delivery"):
            sent = events.deliver_ends(
                self.id,
                self.redeliver_after if redeliver else None,
                limit=NOTIFICATION_BATCH,
            )
            self.reported += sent
            # Something was sent: there may be more (a backlog is sent in
            # slices between reads of the notifications); look again at once.
            self.backlog = sent > 0

    # --- sweeping ------------------------------------------------------------

    def _sweep(self) -> None:
        with self._carry_on("a sweep"):
            self._sweep_once()
        # Every worker delivers, and takes over what a dead one left.
        self._deliver(redeliver=True)

    def _sweep_once(self) -> None:
        ns = conf.snapshot().namespace
        held = self._hold_lock(ns)
        if held != self.leader:
            logger.info(
                "session_ng worker %s %s the sweep lock", self.id, "took" if held else "lost"
            )
            self.leader = held
        if held:
            events.sweep_and_publish(touch_current=True)
            driver.run(expiry.trim_events(ns, int(time.time() * 1000)))

    def _hold_lock(self, ns: str) -> bool:
        """Take the sweep lock, or renew it for ``--lock-ttl`` when this worker
        holds it; whether it does now. Its value is this worker's id."""
        if self._lock is None:
            self._lock = expiry.sweep_lock(ns, self.lock_ttl_ms)
        if self.leader:
            try:
                return bool(self._lock.reacquire())
            except LockNotOwnedError:
                pass  # it ran out: someone else may hold it now
        return bool(self._lock.acquire(blocking=False, token=self.id))

    def _release(self) -> None:
        if not self.leader or self._lock is None:
            return
        # If Redis is gone, the lock runs out by itself; if it ran out, no
        # matter.
        with contextlib.suppress(LockError, SessionStoreUnavailable, *driver.UNAVAILABLE_ERRORS):
            self._lock.release()
        self.leader = False

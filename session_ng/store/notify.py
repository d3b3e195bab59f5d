"""The server's settings session_ng depends on: keyspace notification flags
(and their probe) and the memory policy."""

from __future__ import annotations

import time
from dataclasses import dataclass

from session_ng import keys
from session_ng.store.driver import Batch, Command, Operation

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

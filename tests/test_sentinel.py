"""session_ng behind Redis Sentinel (primary, replica, 3 sentinels, all real
local processes), reached through django-redis's SentinelClient by
CACHE_ALIAS: a failover costs only the requests in flight.

The rest of the backend contract runs here too with ``pytest --topology
sentinel`` (``make test`` does); these are the parts only Sentinel has.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.sentinel import Sentinel

from harness.redis_topologies import SentinelSet, command
from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.store import client as store_client
from tests.worker_process import events, wait_for_events

NS = "session_ng"
ALIAS = "sessions"
pytestmark = [pytest.mark.slow, pytest.mark.standalone]


@pytest.fixture
def sentinels(request: pytest.FixtureRequest) -> Iterator[SentinelSet]:
    # A fresh set per test (a failover leaves the old primary dead), under a
    # service name of its own: django-redis keeps its pools per LOCATION for
    # the life of the process, and they would still ask the last test's
    # sentinels.
    name = "primary-" + request.node.name.removeprefix("test_")[:20].replace("_", "-")
    with SentinelSet(replicas=1, sentinels=3, master_name=name) as running:
        yield running


@pytest.fixture
def on_sentinel(sentinels: SentinelSet, settings: Any) -> Iterator[Any]:
    settings.CACHES = {
        **settings.CACHES,
        ALIAS: {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{sentinels.master_name}/0",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": sentinels.sentinel_addresses,
            },
        },
    }
    settings.SESSION_NG = {"CACHE_ALIAS": ALIAS}
    client = Sentinel(sentinels.sentinel_addresses).master_for(sentinels.master_name)
    yield client
    client.close()
    store_client.reset()


def until_served(call: Any, timeout: float = 30.0) -> Any:
    """Retry ``call`` while the store reports itself unavailable (the switch)."""
    deadline = time.monotonic() + timeout
    failures = 0
    while True:
        try:
            return call(), failures
        except SessionStoreUnavailable:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_failover_costs_only_the_requests_in_flight(
    sentinels: SentinelSet, on_sentinel: Any
) -> None:
    kept = SessionStore()
    kept.update({"_auth_user_id": "3", "cart": [1, 2]})
    kept.save()
    gone = SessionStore()
    gone["x"] = 1
    gone.save()
    gone_key = gone.session_key
    gone.delete()
    assert on_sentinel.wait(1, 5000) == 1  # the replica has all of it
    old = sentinels.primary()
    new = sentinels.failover()
    assert new.port != old.port
    # No restart of anything: the same settings find the new primary.
    loaded, _ = until_served(lambda: SessionStore(kept.session_key).load())
    assert loaded == {"_auth_user_id": "3", "cart": [1, 2]}
    assert SessionStore(gone_key).load() == {}  # not resurrected
    assert SessionStore().exists(gone_key) is False
    fresh = SessionStore(kept.session_key)
    fresh.load()
    fresh["after"] = True
    fresh.save()
    assert command(new.port, "HEXISTS", keys.session_hash(NS, kept.session_key), ".after") == 1  # type: ignore[arg-type]

    async def async_side() -> dict[str, Any]:
        return await SessionStore(kept.session_key).aload()

    assert asyncio.run(async_side())["after"] is True


def test_the_worker_follows_the_new_primary(
    sentinels: SentinelSet, on_sentinel: Any, start, log: Path
) -> None:  # type: ignore[no-untyped-def]
    addresses = ",".join(f"{h}:{p}" for h, p in sentinels.sentinel_addresses)
    start(f"redis://{sentinels.master_name}/0", sentinels=addresses)
    s = SessionStore()
    s["n"] = 1
    s.set_expiry(1)
    s.save()
    assert [e["kind"] for e in wait_for_events(log, 1, timeout=15)] == ["expired"]
    sentinels.failover()
    # The worker reconnects to the promoted replica (and configures its
    # notifications) without a restart.
    late, _ = until_served(lambda: _short_session())
    found = wait_for_events(log, 2, timeout=30)
    assert [(e["kind"], e["session_key"]) for e in found][1] == ("expired", late)
    assert len(events(log)) == 2


def _short_session() -> str:
    s = SessionStore()
    s["n"] = 2
    s.set_expiry(1)
    s.save()
    assert s.session_key is not None
    return s.session_key

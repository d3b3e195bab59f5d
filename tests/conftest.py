"""A real redis-server for the whole test session, flushed between tests.

No fakeredis and no mocks: if ``redis-server`` is missing the session fails
with an install hint (never skips), in CI and locally alike.

``--topology cluster`` or ``--topology sentinel`` runs the tests against a
real local Redis Cluster (3 primaries) or a Sentinel set (primary, replica,
3 sentinels, reached through django-redis's SentinelClient) instead. Tests
that are about one standalone server by nature (they ask for the
``redis_server`` or ``roundtrips`` fixture, or are marked ``standalone``) are
deselected there; ``make test`` runs the backend contract files under each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.connection
import redis.connection
from django.conf import settings
from django.test import override_settings

from harness.redis_server import RedisServer
from session_ng.store import client as store_client
from tests.topology import Topology, make_topology
from tests.worker_process import WorkerProcess

TOPOLOGIES = ("standalone", "cluster", "sentinel")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--topology",
        choices=TOPOLOGIES,
        default="standalone",
        help="the Redis the tests run against: one server, a Cluster or a Sentinel set",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "standalone: runs in the standalone pass only (about one server, or brings its own)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--topology") == "standalone":
        return
    kept, dropped = [], []
    for item in items:
        names = getattr(item, "fixturenames", ())
        specific = "redis_server" in names or "roundtrips" in names
        (dropped if specific or item.get_closest_marker("standalone") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    kind = request.config.getoption("--topology")
    if kind == "standalone":
        server: RedisServer = request.getfixturevalue("redis_server")
        topology = make_topology(kind, server)
    else:
        topology = make_topology(kind, None)
    # override_settings, not an assignment: Django's cache handler reads
    # CACHES once and forgets it only on the setting_changed signal.
    caches = override_settings(CACHES={**settings.CACHES, **topology.caches()})
    caches.enable()
    try:
        yield topology
    finally:
        caches.disable()
        topology.stop()


@pytest.fixture(autouse=True)
def _session_ng_redis(topology: Topology) -> Iterator[None]:
    settings.SESSION_NG = {**topology.session_ng(), "ID_RESOLVERS": ["cookie", "header"]}
    topology.flush()
    yield
    store_client.reset()


@pytest.fixture
def r(topology: Topology) -> Iterator[Any]:
    """A plain client, for looking at what the engine wrote."""
    client = topology.client()
    yield client
    store_client.close_client(client)


@dataclass
class RoundTrips:
    """Counts writes of packed commands to Redis: one per round trip.

    A pipeline is packed and sent in one write, so it counts once. This is
    instrumentation of the real client, not a stand-in for Redis.
    """

    count: int = 0
    commands: list[bytes] = field(default_factory=list)

    def reset(self) -> None:
        self.count = 0
        self.commands.clear()

    def _record(self, packed: Any) -> None:
        self.count += 1
        chunks = packed if isinstance(packed, list | tuple) else [packed]
        self.commands.append(b"".join(bytes(c) for c in chunks))


@pytest.fixture
def roundtrips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    counter = RoundTrips()
    sync_send = redis.connection.AbstractConnection.send_packed_command
    async_send = redis.asyncio.connection.AbstractConnection.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        counter._record(command)
        sync_send(self, command, check_health)

    async def asend(self: Any, command: Any, check_health: bool = True) -> None:
        counter._record(command)
        await async_send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)
    monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "send_packed_command", asend)
    return counter


# --- session_ng_worker processes (tests/worker_process.py) -------------------------


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Where the worker processes a test starts write the events they report."""
    return tmp_path / "events.jsonl"


@pytest.fixture
def start(log: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes (``start(url, **options)``), all stopped after."""
    started: list[WorkerProcess] = []

    def start_worker(url: str, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(url, log, **kwargs)
        started.append(worker)
        return worker

    yield start_worker
    # Stop every one before judging any, so a failure leaves no process behind.
    codes = [(worker, worker.stop()) for worker in started if not worker.killed]
    for worker, code in codes:
        assert code == 0, worker.log()


@pytest.fixture
def two_users() -> Any:
    """A browser (Django's test Client) signed in as alice under the default
    alias and as bob under ``?_s=1`` (testproject's demo users)."""
    from django.test import Client

    client = Client()
    assert (
        client.post("/login/", {"username": "alice", "password": "alice-password"}).status_code
        == 302
    )
    assert (
        client.post("/login/?_s=1", {"username": "bob", "password": "bob-password"}).status_code
        == 302
    )
    return client

"""A real redis-server for the whole test session, flushed between tests.

No fakeredis and no mocks: if ``redis-server`` is missing the session fails
with an install hint (never skips), in CI and locally alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio.connection
import redis.connection
from django.conf import settings

from session_ng import connection
from testproject.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _session_ng_redis(redis_server: RedisServer) -> Iterator[None]:
    settings.SESSION_NG = {"REDIS_URL": redis_server.url, "ID_RESOLVERS": ["cookie", "header"]}
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield
    connection.reset()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client, for looking at what the engine wrote."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


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

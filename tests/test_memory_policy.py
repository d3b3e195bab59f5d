"""``check --deploy`` warns when Redis may evict session_ng's keys: each case
against a real redis-server started with that policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness.redis_server import RedisServer
from session_ng.checks import check_memory_policy
from session_ng.store import client

pytestmark = pytest.mark.standalone


def checked(settings: Any, *server_args: str) -> list[Any]:
    with RedisServer(*server_args) as server:
        settings.SESSION_NG = {"REDIS_URL": server.url}
        client.reset()
        try:
            return check_memory_policy()
        finally:
            client.reset()


@pytest.fixture(autouse=True)
def _own_servers() -> Iterator[None]:
    client.reset()
    yield
    client.reset()


@pytest.mark.parametrize(
    ("policy", "evicts"),
    [
        ("allkeys-lru", "any key"),
        ("allkeys-lfu", "any key"),
        ("allkeys-random", "any key"),
        ("volatile-lru", "any key with a TTL"),
        ("volatile-ttl", "any key with a TTL"),
    ],
)
def test_a_policy_that_evicts_is_warned_about(settings: Any, policy: str, evicts: str) -> None:
    (warning,) = checked(settings, "--maxmemory", "64mb", "--maxmemory-policy", policy)
    assert warning.id == "session_ng.W021"
    assert f"maxmemory-policy {policy!r}: when it is full it evicts {evicts}," in warning.msg


def test_noeviction_passes(settings: Any) -> None:
    assert checked(settings, "--maxmemory", "64mb", "--maxmemory-policy", "noeviction") == []


def test_without_a_memory_limit_nothing_is_evicted(settings: Any) -> None:
    assert checked(settings, "--maxmemory", "0", "--maxmemory-policy", "allkeys-lru") == []


def test_an_unreachable_redis_is_left_to_w004(settings: Any) -> None:
    settings.SESSION_NG = {"REDIS_URL": "redis://127.0.0.1:1/0", "SOCKET_TIMEOUT": 0.5}
    assert check_memory_policy() == []

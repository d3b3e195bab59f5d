"""The Cluster and Sentinel harness itself, against real redis-server processes."""

from __future__ import annotations

import functools
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import redis.cluster
import redis.sentinel
from redis.crc import key_slot

from harness.redis_server import RedisServer
from harness.redis_topologies import (
    SLOTS,
    RedisClusterSet,
    SentinelServer,
    SentinelSet,
    cluster_nodes,
    command,
    is_running,
    role,
)
from session_ng.store.client import close_client

# Brings its own nodes: runs once, in the standalone pass.
pytestmark = pytest.mark.standalone


@functools.cache
def keys_for_every_slot() -> dict[int, str]:
    """One key per hash slot, slot -> key."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < SLOTS:
        key = f"k{i}"
        keys.setdefault(key_slot(key.encode()), key)
        i += 1
    return keys


def slot_ranges(server: RedisServer) -> list[tuple[int, int]]:
    """The slot ranges the node serves, as it reports them itself."""
    node_id = str(command(server.port, "CLUSTER", "MYID"))
    shards = command(server.port, "CLUSTER", "SLOTS")
    return sorted((int(s[0]), int(s[1])) for s in shards if str(s[2][2]) == node_id)


def wait_replicated(server: RedisServer, replicas: int = 1) -> None:
    """WAIT until ``replicas`` replicas acknowledged every write so far.

    Bounded (10 s) rather than ``WAIT n 0``, so a broken link fails the test instead
    of hanging it.
    """
    assert command(server.port, "WAIT", replicas, 10_000, timeout=15) == replicas


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSet]:
    with RedisClusterSet(primaries=3) as topology:
        yield topology


@pytest.fixture
def cluster_with_replicas() -> Iterator[RedisClusterSet]:
    with RedisClusterSet(primaries=3, replicas_per_primary=1) as topology:
        yield topology


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    with SentinelSet() as topology:
        yield topology


@pytest.fixture
def cluster_client(cluster: RedisClusterSet) -> Iterator[redis.cluster.RedisCluster]:
    client = redis.cluster.RedisCluster.from_url(cluster.url, decode_responses=True)
    yield client
    close_client(client)


# ---------------------------------------------------------------- cluster


def test_cluster_nodes_roles_and_addresses(cluster: RedisClusterSet) -> None:
    primaries = cluster.primaries()
    assert len(primaries) == 3
    assert cluster.replicas() == []
    assert sorted(cluster.startup_nodes) == sorted(("127.0.0.1", p.port) for p in primaries)
    assert cluster.url in {p.url for p in primaries}
    assert [slot_ranges(p) for p in primaries] == [[(0, 5460)], [(5461, 10921)], [(10922, 16383)]]
    for primary in primaries:
        views = cluster_nodes(primary.port)
        assert len(views) == 3
        assert all(view.is_master and view.healthy for view in views.values())


def test_cluster_serves_every_slot(
    cluster: RedisClusterSet, cluster_client: redis.cluster.RedisCluster
) -> None:
    keys = keys_for_every_slot()
    pipe = cluster_client.pipeline()  # type: ignore[no-untyped-call]
    for slot, key in keys.items():
        pipe.set(key, f"value-{slot}")
    assert pipe.execute() == [True] * SLOTS

    pipe = cluster_client.pipeline()  # type: ignore[no-untyped-call]
    for key in keys.values():
        pipe.get(key)
    assert pipe.execute() == [f"value-{slot}" for slot in keys]

    # Each primary holds exactly the keys of its own slots.
    sizes = [command(p.port, "DBSIZE") for p in cluster.primaries()]
    assert sizes == [5461, 5461, 5462]
    for primary in cluster.primaries():
        (first, last), *_ = slot_ranges(primary)
        assert command(primary.port, "GET", keys[first]) == f"value-{first}"
        assert command(primary.port, "GET", keys[last]) == f"value-{last}"
    cluster_client.delete(*keys.values())
    assert [command(p.port, "DBSIZE") for p in cluster.primaries()] == [0, 0, 0]


def test_cluster_failover_needs_a_replica(cluster: RedisClusterSet) -> None:
    primary = cluster.primaries()[0]
    with pytest.raises(ValueError, match="has no replica"):
        cluster.failover(primary)
    assert is_running(primary)
    assert role(primary.port) == "master"


def test_cluster_failover_promotes_the_replica_with_the_data(
    cluster_with_replicas: RedisClusterSet,
) -> None:
    topology = cluster_with_replicas
    primaries = topology.primaries()
    assert (len(primaries), len(topology.replicas())) == (3, 3)
    for primary in primaries:
        (replica,) = topology.replicas_of(primary)
        reply = command(replica.port, "ROLE")
        assert (reply[0], reply[2], reply[3]) == ("slave", primary.port, "connected")

    client = redis.cluster.RedisCluster.from_url(topology.url, decode_responses=True)
    try:
        keys = {slot: key for slot, key in keys_for_every_slot().items() if slot % 64 == 0}
        for slot, key in keys.items():
            assert client.set(key, f"before-{slot}") is True
        victim = topology.primaries()[0]
        (replica,) = topology.replicas_of(victim)
        wait_replicated(victim)
        victim_slots = slot_ranges(victim)

        promoted = topology.failover(victim)

        assert promoted is replica
        assert not is_running(victim)
        assert role(promoted.port) == "master"
        assert slot_ranges(promoted) == victim_slots
        assert victim not in topology.primaries()
        assert promoted in topology.primaries()
        assert len(topology.primaries()) == 3
        assert len(topology.replicas()) == 2
        assert ("127.0.0.1", victim.port) not in topology.startup_nodes

        # The client that knew the old topology finds the promoted node...
        assert [client.get(key) for key in keys.values()] == [f"before-{s}" for s in keys]
        for slot, key in keys.items():
            assert client.set(key, f"after-{slot}") is True
    finally:
        close_client(client)
    # ... and so does a new one.
    fresh = redis.cluster.RedisCluster.from_url(topology.url, decode_responses=True)
    try:
        assert [fresh.get(key) for key in keys.values()] == [f"after-{s}" for s in keys]
    finally:
        close_client(fresh)


# Not named "topology": that is conftest's fixture of the Redis under test.
@pytest.mark.parametrize("kind", [RedisClusterSet, SentinelSet])
def test_a_start_that_never_converges_tears_everything_down(
    kind: type[RedisClusterSet | SentinelSet],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # A cluster's primaries refuse to report "ok" for their first 2 s, and sentinels
    # take about as long to find each other: 0.5 s is never enough.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    started: list[subprocess.Popen[bytes]] = []

    def record(cls: type[RedisServer]) -> None:
        original = cls.start

        def start(self: RedisServer, timeout: float = 10.0) -> RedisServer:
            try:
                return original(self, timeout)
            finally:
                if self.process is not None:
                    started.append(self.process)

        monkeypatch.setattr(cls, "start", start)

    record(RedisServer)
    record(SentinelServer)
    with pytest.raises(RuntimeError, match=r"did not (happen|answer)") as failure:
        kind().start(timeout=0.5)
    # Unless a process itself was too slow to answer, the message carries the logs.
    message = str(failure.value)
    assert "did not answer" in message or "redis.log ---" in message
    assert started
    assert all(process.poll() is not None for process in started)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- sentinel


@contextmanager
def sentinel_master(topology: SentinelSet) -> Iterator[tuple[redis.sentinel.Sentinel, redis.Redis]]:
    """A Sentinel object on the topology's sentinels and its master client; closed after."""
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        topology.sentinel_addresses, socket_timeout=5
    )
    master = sentinel.master_for(topology.master_name, decode_responses=True)  # type: ignore[no-untyped-call]
    try:
        yield sentinel, master
    finally:
        master.close()
        for conn in sentinel.sentinels:
            conn.close()


def master_address(sentinel: redis.sentinel.Sentinel) -> tuple[str, int]:
    address: tuple[str, int] = sentinel.discover_master("mymaster")  # type: ignore[no-untyped-call]
    return address


def test_sentinel_serves_the_master(sentinels: SentinelSet) -> None:
    assert sentinels.master_name == "mymaster"
    assert len(sentinels.sentinel_addresses) == 3
    primary = sentinels.primary()
    (replica,) = sentinels.replicas()
    assert role(primary.port) == "master"
    assert replica is not primary

    with sentinel_master(sentinels) as (sentinel, master):
        assert master_address(sentinel) == ("127.0.0.1", primary.port)
        assert master.set("greeting", "hello") is True
        assert master.get("greeting") == "hello"
        wait_replicated(primary)
        assert command(replica.port, "GET", "greeting") == "hello"


def test_sentinel_failover_promotes_the_replica_with_the_data(sentinels: SentinelSet) -> None:
    old = sentinels.primary()
    (replica,) = sentinels.replicas()
    with sentinel_master(sentinels) as (sentinel, master):
        assert master.mset({f"key-{i}": f"value-{i}" for i in range(100)}) is True
        wait_replicated(old)

        new = sentinels.failover()

        assert new is replica
        assert not is_running(old)
        assert sentinels.primary() is new
        assert role(new.port) == "master"
        assert sentinels.replicas() == []
        assert master_address(sentinel) == ("127.0.0.1", new.port)
        # The same client object reaches the new master, with the data.
        assert master.mget([f"key-{i}" for i in range(100)]) == [f"value-{i}" for i in range(100)]
        assert master.set("after", "failover") is True
        assert command(new.port, "GET", "after") == "failover"

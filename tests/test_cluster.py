"""session_ng on a real local Redis Cluster (3 primaries, each with a replica):
keys of many slots, the worker on every primary, and a primary failing over.

The rest of the backend contract runs here too with ``pytest --topology
cluster`` (``make test`` does); these are the parts only a cluster has.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.cluster import RedisCluster

from harness.redis_topologies import RedisClusterSet, command
from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.store import client as store_client
from tests.worker_process import events, wait_for_events, wait_until

NS = "session_ng"
pytestmark = [pytest.mark.slow, pytest.mark.standalone]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterSet]:
    with RedisClusterSet(primaries=3, replicas_per_primary=1) as running:
        yield running


@pytest.fixture
def on_cluster(cluster: RedisClusterSet, settings: Any) -> Iterator[RedisCluster]:
    settings.SESSION_NG = {"REDIS_URL": cluster.url, "CLUSTER": True}
    client = RedisCluster.from_url(cluster.url)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    store_client.close_client(client)


def sessions_on_every_primary(client: RedisCluster, **kwargs: Any) -> list[SessionStore]:
    """New sessions until each primary holds at least two."""
    made: list[SessionStore] = []
    per_node: dict[str, int] = {}
    while len(per_node) < 3 or min(per_node.values()) < 2:
        s = SessionStore()
        s.update(kwargs.get("data", {"n": len(made)}))
        if "expiry" in kwargs:
            s.set_expiry(kwargs["expiry"])
        s.save()
        assert s.session_key is not None
        node = client.get_node_from_key(keys.session_hash(NS, s.session_key)).name
        per_node[node] = per_node.get(node, 0) + 1
        made.append(s)
    return made


def test_every_session_operation_across_slots(on_cluster: RedisCluster) -> None:
    s = SessionStore()
    s["_auth_user_id"] = "41"
    s["cart"] = [1]
    s.save()
    old = s.session_key
    assert old is not None
    s.cycle_key()  # the new key is (almost surely) in another slot
    new = s.session_key
    assert new is not None
    assert on_cluster.exists(keys.session_hash(NS, old)) == 0
    assert on_cluster.get(keys.session_event(NS, old)) == b"rotated"
    assert set(on_cluster.hkeys(keys.user_index(NS, "41"))) == {new.encode()}
    bucket = int(on_cluster.hget(keys.session_hash(NS, new), "b") or 0)
    assert on_cluster.smembers(keys.expiration_bucket(NS, bucket)) == {new.encode()}
    assert SessionStore(new).load()["cart"] == [1]
    s.delete()
    assert on_cluster.exists(keys.user_index(NS, "41")) == 0
    assert on_cluster.exists(keys.expiration_bucket(NS, bucket)) == 0


def test_the_worker_listens_on_every_primary_exactly_once(
    on_cluster: RedisCluster, cluster: RedisClusterSet, start, log: Path
) -> None:  # type: ignore[no-untyped-def]
    first, second = start(cluster.url, cluster=True), start(cluster.url, cluster=True)
    assert "listening on db 0 of 3 primaries" in first.log()
    expiring = sessions_on_every_primary(on_cluster, expiry=1)
    deleted = sessions_on_every_primary(on_cluster)
    for s in deleted:
        on_cluster.delete(keys.session_hash(NS, s.session_key))  # type: ignore[arg-type]
    wait_for_events(log, len(expiring) + len(deleted), timeout=15)
    time.sleep(1.0)
    assert sorted((e["kind"], e["session_key"]) for e in events(log)) == sorted(
        [("expired", s.session_key) for s in expiring]
        + [("deleted", s.session_key) for s in deleted]
    )
    leaders = [w for w in (first, second) if "took the sweep lock" in w.log()]
    assert len(leaders) == 1


def test_a_primary_failing_over_costs_only_the_requests_in_flight(
    on_cluster: RedisCluster, cluster: RedisClusterSet, start, log: Path
) -> None:  # type: ignore[no-untyped-def]
    worker = start(cluster.url, cluster=True)
    before = sessions_on_every_primary(on_cluster, data={"kept": "yes"})
    on_cluster.wait(1, 5000, target_nodes=RedisCluster.PRIMARIES)  # replicas have them
    victim = cluster.primaries()[0]
    in_victim = [
        s for s in before
        if on_cluster.get_node_from_key(keys.session_hash(NS, s.session_key)).port == victim.port
    ]  # fmt: skip
    assert in_victim
    cluster.failover(victim)
    # Django and the worker were not restarted; sessions of the failed slots
    # are there, unchanged, and are read and written normally.
    deadline = time.monotonic() + 20
    while True:
        try:
            loaded = SessionStore(in_victim[0].session_key).load()
            break
        except SessionStoreUnavailable:  # a clear error while the cluster heals
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert loaded == {"kept": "yes"}
    for s in before:
        fresh = SessionStore(s.session_key)
        assert fresh.load() == {"kept": "yes"}
        fresh["after"] = 1
        fresh.save()
    # The worker follows the new layout (whichever of its calls meets the dead
    # node first tells it) and still reports ends there.
    promoted = sorted(f"127.0.0.1:{node.port}" for node in cluster.primaries())
    worker.wait_for_log(f"listening on db 0 of 3 primaries ({', '.join(promoted)})", timeout=30)
    later = sessions_on_every_primary(on_cluster, expiry=1)
    found = wait_for_events(log, len(later), timeout=20)
    assert sorted(e["session_key"] for e in found if e["kind"] == "expired") == sorted(
        s.session_key for s in later
    )


def open_connections(port: int) -> set[str]:
    """The ids of the client connections a node has open (but the asking one)."""
    listing = str(command(port, "CLIENT", "LIST", "TYPE", "NORMAL"))
    fields = [
        dict(f.split("=", 1) for f in line.split(" ") if "=" in f) for line in listing.splitlines()
    ]
    return {f["id"] for f in fields if f.get("cmd") != "client|list"}


def test_reset_closes_every_connection_the_cluster_client_opened(
    on_cluster: RedisCluster, cluster: RedisClusterSet
) -> None:
    ports = [node.port for node in cluster.primaries()]
    before = {port: open_connections(port) for port in ports}
    client = store_client.get_client()  # and still held after the reset
    sessions_on_every_primary(client)
    opened = {port: open_connections(port) - before[port] for port in ports}
    assert all(opened.values()), opened  # session_ng's client met every primary
    store_client.reset()

    def still_open() -> dict[int, set[str]]:
        return {port: ids for port in ports if (ids := open_connections(port) & opened[port])}

    # Closed by reset() itself, not whenever the garbage collector frees the
    # client: its sockets were found open then ("unclosed <socket.socket>").
    assert wait_until(lambda: not still_open(), 5), still_open()


@pytest.fixture
def bare_cluster(settings: Any) -> Iterator[RedisClusterSet]:
    """A cluster of its own (no replicas) for tests that kill nodes for good."""
    with RedisClusterSet(primaries=3) as running:
        settings.SESSION_NG = {"REDIS_URL": running.url, "CLUSTER": True}
        yield running


def test_a_save_in_a_healthy_slot_survives_its_buckets_node_being_down(
    bare_cluster: RedisClusterSet, caplog: pytest.LogCaptureFixture
) -> None:
    from harness.redis_topologies import kill
    from session_ng.backends.redis import new_session_key
    from session_ng.store import records
    from session_ng.store.records import now_ms

    age_ms = 1_209_660_000  # the idle timeout and its renewal period
    # Not within 3 s of the minute the save files the session under turning.
    while (now_ms() + age_ms) % 60_000 > 57_000:
        time.sleep(0.5)
    minute = records.bucket_minute(now_ms() + age_ms)
    client = RedisCluster.from_url(bare_cluster.url)
    try:
        bucket_port = client.get_node_from_key(keys.expiration_bucket(NS, minute)).port
        key = next(
            k
            for k in (new_session_key() for _ in range(1000))
            if client.get_node_from_key(keys.session_hash(NS, k)).port != bucket_port
        )
    finally:
        store_client.close_client(client)
    # The process's client exists before the failure, as in a running site: it
    # learned every node from REDIS_URL's (which may be the one that dies).
    assert SessionStore().exists("z" * 32) is False
    kill(next(n for n in bare_cluster.primaries() if n.port == bucket_port))
    s = SessionStore()
    s["cart"] = [1]
    s._session_key = key
    s.save(must_create=True)  # its own slot is healthy: saved, no error
    assert s.session_key == key
    assert SessionStore(key).load() == {"cart": [1]}
    assert "follow-up write(s) skipped, Redis unavailable" in caplog.text


def test_the_worker_waits_out_a_cluster_that_is_all_down(bare_cluster: RedisClusterSet) -> None:
    import threading

    from harness.redis_topologies import kill
    from session_ng.worker import Worker

    worker = Worker(sweep_interval=0.2, lock_ttl=1.0)
    stop = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # what would kill the process
            failure.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        time.sleep(1.0)
        for node in bare_cluster.primaries():
            kill(node)
        time.sleep(3.0)  # retrying with growing delays, not dead
        assert thread.is_alive()
        assert failure == []
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert failure == []


def test_the_deploy_check_probes_every_primary(on_cluster: RedisCluster) -> None:
    from session_ng.worker import probe_now

    for node in on_cluster.get_primaries():
        node.redis_connection.config_set("notify-keyspace-events", "")
    assert probe_now() == ["expired", "del"]
    for node in on_cluster.get_primaries():
        node.redis_connection.config_set("notify-keyspace-events", "Egx")
    assert probe_now() == []


def test_async_clients_on_a_cluster_close_cleanly(
    on_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    s = SessionStore()
    s["n"] = 1
    s.save()

    async def read() -> dict[str, Any]:
        return await SessionStore(s.session_key).aload()

    for _ in range(2):  # each asyncio.run() closes its loop's clients at shutdown
        assert asyncio.run(read()) == {"n": 1}
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


def test_a_list_of_startup_nodes_survives_the_first_being_down(
    cluster: RedisClusterSet, settings: Any
) -> None:
    import asyncio

    # A node that failed over for good (its replica took over) heads the list:
    # a process starting now finds the cluster through the others.
    victim = next(p for p in cluster.primaries() if cluster.replicas_of(p))
    cluster.failover(victim)
    live = [node.url for node in cluster.primaries()]
    settings.SESSION_NG = {"REDIS_URL": [victim.url, *live], "CLUSTER": True}
    s = SessionStore()
    s["n"] = 1
    s.save()
    assert SessionStore(s.session_key).load() == {"n": 1}

    async def read() -> dict[str, Any]:
        return await SessionStore(s.session_key).aload()

    assert asyncio.run(read()) == {"n": 1}
    # With the dead node alone, the same process could not have started.
    settings.SESSION_NG = {"REDIS_URL": victim.url, "CLUSTER": True}
    with pytest.raises(SessionStoreUnavailable):
        SessionStore(s.session_key).load()


def test_check_deploy_asks_every_primary_for_its_memory_policy(
    on_cluster: RedisCluster, cluster: RedisClusterSet
) -> None:
    from session_ng.checks import check_memory_policy

    assert check_memory_policy() == []
    last = cluster.primaries()[-1]  # INFO alone would go to one node only
    command(last.port, "CONFIG", "SET", "maxmemory", "64mb", "maxmemory-policy", "allkeys-lfu")
    try:
        assert [m.id for m in check_memory_policy()] == ["session_ng.W021"]
    finally:
        command(last.port, "CONFIG", "SET", "maxmemory", "0", "maxmemory-policy", "noeviction")


def test_a_worker_killed_while_sending_loses_no_end_on_a_cluster(
    on_cluster: RedisCluster, cluster: RedisClusterSet, start, log: Path
) -> None:  # type: ignore[no-untyped-def]
    # The stream lives on one node, each claim in its session's slot: no step
    # needs two slots at once, so the guarantee is the one of a single server.
    first = start(cluster.url, cluster=True, event_delay=0.01)
    made = sessions_on_every_primary(on_cluster, expiry=1)
    made += [s for _ in range(4) for s in sessions_on_every_primary(on_cluster, expiry=1)]
    users = {s.session_key for s in made}

    def expired() -> list[str]:
        return [e["session_key"] for e in events(log) if e["kind"] == "expired"]

    assert wait_until(lambda: len(expired()) >= 5, 30), first.log()
    first.kill()
    assert len(expired()) < len(users), "the worker finished before it was killed"
    second = start(cluster.url, cluster=True, options=("--redeliver-after", "1"))
    assert wait_until(lambda: set(expired()) >= users, 90), second.log()
    time.sleep(1.0)
    assert set(expired()) == users
    assert len(expired()) - len(users) <= 1

"""The Redis the test session runs against: one server, a Cluster, or Sentinel.

Each kind says which ``SESSION_NG`` (and ``CACHES``) point session_ng at it,
gives a plain client for looking at what the engine wrote, and empties it
between tests.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from harness.redis_server import RedisServer
from harness.redis_topologies import RedisClusterSet, SentinelSet, command

SENTINEL_CACHE = "session_ng_sentinel"


class Topology:
    kind = ""

    def session_ng(self) -> dict[str, Any]:
        raise NotImplementedError

    def caches(self) -> dict[str, Any]:
        return {}

    def client(self) -> Any:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class Standalone(Topology):
    kind = "standalone"

    def __init__(self, server: RedisServer) -> None:
        self.server = server  # started and stopped by the redis_server fixture

    def session_ng(self) -> dict[str, Any]:
        return {"REDIS_URL": self.server.url}

    def client(self) -> Any:
        return redis.Redis.from_url(self.server.url)

    def flush(self) -> None:
        command(self.server.port, "FLUSHALL")


class ClusterInspector(RedisCluster):
    """A cluster client whose whole-keyspace reads cover every primary (redis-py
    sends KEYS and DBSIZE to one node by default)."""

    def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        return super().keys(pattern, target_nodes=RedisCluster.PRIMARIES, **kwargs)

    def dbsize(self, **kwargs: Any) -> Any:
        return super().dbsize(target_nodes=RedisCluster.PRIMARIES, **kwargs)


class Cluster(Topology):
    kind = "cluster"

    def __init__(self) -> None:
        self.cluster = RedisClusterSet(primaries=3).start()

    def session_ng(self) -> dict[str, Any]:
        return {"REDIS_URL": self.cluster.url, "CLUSTER": True}

    def client(self) -> Any:
        return ClusterInspector.from_url(self.cluster.url)

    def flush(self) -> None:
        for node in self.cluster.primaries():
            command(node.port, "FLUSHALL")

    def stop(self) -> None:
        self.cluster.stop()


class SentinelTopology(Topology):
    """Reached the way most sites will: a django-redis cache with its
    SentinelClient, named by ``CACHE_ALIAS``."""

    kind = "sentinel"

    def __init__(self) -> None:
        self.sentinels = SentinelSet().start()

    def caches(self) -> dict[str, Any]:
        return {
            SENTINEL_CACHE: {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://{self.sentinels.master_name}/0",
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.SentinelClient",
                    "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                    "SENTINELS": list(self.sentinels.sentinel_addresses),
                },
            }
        }

    def session_ng(self) -> dict[str, Any]:
        return {"CACHE_ALIAS": SENTINEL_CACHE}

    def client(self) -> Any:
        sentinel = Sentinel(self.sentinels.sentinel_addresses)
        return sentinel.master_for(self.sentinels.master_name)

    def flush(self) -> None:
        command(self.sentinels.primary().port, "FLUSHALL")

    def stop(self) -> None:
        self.sentinels.stop()


def make_topology(kind: str, server: RedisServer | None) -> Topology:
    if kind == "standalone":
        assert server is not None
        return Standalone(server)
    if kind == "cluster":
        return Cluster()
    return SentinelTopology()

"""Sync and async Redis clients built from ``SESSION_NG``.

``REDIS_URL`` (optionally a Cluster node with ``CLUSTER``) or ``CACHE_ALIAS``, a
django-redis cache whose connection pool, password and Sentinel settings are
reused. Clients are cached per configuration, so ``override_settings`` gets a
new one; async clients are cached per event loop as well, because a
``redis.asyncio`` connection belongs to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from django.conf import settings as django_settings
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from session_ng.conf import conf, settings_problems
from session_ng.exceptions import SessionNgImproperlyConfigured

# A broken pooled connection (Redis restarted, failover) is retried once,
# quickly; anything longer is an outage and is reported as one.
RETRY_ATTEMPTS = 1

SyncClient = redis.Redis
AsyncClient = redis.asyncio.Redis

_lock = threading.Lock()
_sync_clients: dict[tuple[Any, ...], Any] = {}


def _config_key() -> tuple[Any, ...]:
    return conf.snapshot().client_key


def _check_settings() -> None:
    problems = [p for p in settings_problems() if p.id.startswith("session_ng.E")]
    if problems:
        raise SessionNgImproperlyConfigured(" ".join(p.msg for p in problems))


def _retry(sync: bool) -> Any:
    backoff = ExponentialBackoff(cap=0.05, base=0.01)
    if sync:
        return Retry(backoff, RETRY_ATTEMPTS)
    from redis.asyncio.retry import Retry as AsyncRetry

    return AsyncRetry(backoff, RETRY_ATTEMPTS)


def _url_options(sync: bool) -> dict[str, Any]:
    timeout = conf.snapshot().socket_timeout
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": _retry(sync),
    }


def get_client() -> Any:
    """The sync client (``redis.Redis`` or ``redis.cluster.RedisCluster``)."""
    key = _config_key()
    client = _sync_clients.get(key)
    if client is not None:
        return client
    if key[1] is not None:
        # Not cached: django-redis keeps its own pool and client per cache, and
        # re-reading it keeps CACHES overrides in tests working.
        return _cache_alias_client(str(key[1]))
    with _lock:
        client = _sync_clients.get(key)
        if client is None:
            _check_settings()
            if conf.snapshot().cluster:
                from redis.cluster import ClusterNode, RedisCluster

                url, others = _cluster_urls()
                client = RedisCluster.from_url(
                    url,
                    startup_nodes=[ClusterNode(host, port) for host, port in others],  # type: ignore[no-untyped-call]
                    **_url_options(sync=True),
                )
            else:
                client = redis.Redis.from_url(
                    str(conf.snapshot().redis_url), **_url_options(sync=True)
                )
            _sync_clients[key] = client
    return client


def _cache_alias_client(alias: str) -> Any:
    _check_settings()
    from django_redis import get_redis_connection

    return get_redis_connection(alias, write=True)


class _LoopClients:
    """The async clients of one event loop, closed when that loop shuts down.

    ``asyncio.run()`` and asgiref's ``async_to_sync`` call
    ``loop.shutdown_asyncgens()`` before closing a loop. An async generator
    started in the loop is finalized there, and its ``finally`` closes the
    clients, so a short-lived loop leaves no open sockets behind.
    """

    def __init__(self) -> None:
        self.clients: dict[tuple[Any, ...], Any] = {}
        self.closer: AsyncGenerator[None, None] | None = None

    async def _close_at_shutdown(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            clients = list(self.clients.values())
            self.clients.clear()
            for client in clients:
                # One that fails to close (its server gone) must not leave
                # the others open.
                with contextlib.suppress(Exception):
                    await client.aclose()
                # A Sentinel-managed client also holds connections to the
                # sentinels it asked for the primary. (A Cluster client has no
                # connection_pool at all.)
                pool = getattr(client, "connection_pool", None)
                manager = getattr(pool, "sentinel_manager", None)
                for sentinel in getattr(manager, "sentinels", ()):
                    with contextlib.suppress(Exception):
                        await sentinel.aclose()


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
    weakref.WeakKeyDictionary()
)


async def get_async_client() -> Any:
    """The ``redis.asyncio`` client for the running event loop."""
    loop = asyncio.get_running_loop()
    holder = _async_clients.get(loop)
    if holder is None:
        holder = _async_clients[loop] = _LoopClients()
        holder.closer = holder._close_at_shutdown()
        await holder.closer.__anext__()  # registers it with the loop
    key = _config_key()
    client = holder.clients.get(key)
    if client is None:
        _check_settings()
        client = holder.clients[key] = _build_async_client()
    return client


def _build_async_client() -> Any:
    if conf.snapshot().cache_alias:
        return _async_client_for_cache(str(conf.snapshot().cache_alias))
    if conf.snapshot().cluster:
        from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
        from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

        url, others = _cluster_urls()
        return AsyncRedisCluster.from_url(
            url,
            startup_nodes=[AsyncClusterNode(host, port) for host, port in others],
            **_url_options(sync=False),
        )
    return redis.asyncio.Redis.from_url(str(conf.snapshot().redis_url), **_url_options(sync=False))


def _cluster_urls() -> tuple[str, list[tuple[str, int]]]:
    """REDIS_URL for a Cluster: the URL the client is built from (its
    credentials and TLS apply to every node), and the other startup nodes.

    Any one startup node that answers is enough for the client to learn the
    whole cluster, so a list keeps a process able to start while one is down.
    """
    configured = conf.snapshot().redis_url
    urls = [str(u) for u in configured] if isinstance(configured, tuple) else [str(configured)]
    others = []
    for other in urls[1:]:
        parts = urlsplit(other)
        others.append((parts.hostname or "127.0.0.1", parts.port or 6379))
    return str(urls[0]), others


def _async_client_for_cache(alias: str) -> Any:
    """Mirror a django-redis cache's settings for ``redis.asyncio``.

    django-redis has no async client; we read the same LOCATION and OPTIONS it
    reads (primary = first LOCATION, PASSWORD, SOCKET_*TIMEOUT,
    CONNECTION_POOL_KWARGS, and SENTINELS for its SentinelClient) so the async
    side talks to the same server, or the same Sentinel-elected primary.
    """
    cache = django_settings.CACHES[alias]
    location = cache.get("LOCATION")
    # django-redis takes a list or a comma-separated string; the first is the primary.
    locations = location if isinstance(location, list | tuple) else str(location).split(",")
    url = str(locations[0]).strip()
    options: dict[str, Any] = dict(cache.get("OPTIONS", {}))
    kwargs: dict[str, Any] = dict(options.get("CONNECTION_POOL_KWARGS", {}))
    kwargs.pop("connection_class", None)
    if options.get("PASSWORD"):
        kwargs["password"] = options["PASSWORD"]
    kwargs.setdefault(
        "socket_timeout", options.get("SOCKET_TIMEOUT", conf.snapshot().socket_timeout)
    )
    kwargs.setdefault(
        "socket_connect_timeout",
        options.get("SOCKET_CONNECT_TIMEOUT", conf.snapshot().socket_timeout),
    )
    kwargs.setdefault("retry", _retry(sync=False))
    sentinels = options.get("SENTINELS")
    if sentinels:
        from redis.asyncio.sentinel import Sentinel

        parts = urlsplit(url)
        service = parts.hostname or ""
        db = int(parts.path.lstrip("/") or 0)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [tuple(s) for s in sentinels],
            sentinel_kwargs=options.get("SENTINEL_KWARGS"),
            **{k: v for k, v in kwargs.items() if k != "retry"},
        )
        return sentinel.master_for(service, db=db)
    return redis.asyncio.Redis.from_url(url, **kwargs)


def close_client(client: Any) -> None:
    """Close a sync client and every connection it opened.

    ``RedisCluster.close()`` alone does not (redis-py 8.1.0): a cluster client
    made by ``from_url()`` gives each node a ``Redis`` over a pool that this
    ``Redis`` does not own (``auto_close_connection_pool`` is False), so
    closing it leaves the pool's sockets open. They were closed only when the
    garbage collector freed the pools, which sit in reference cycles; a full
    collection may finalize a socket before its ``Connection``, and Python
    then warns "unclosed <socket.socket ...>".
    """
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        client.disconnect_connection_pools()  # type: ignore[no-untyped-call]
    client.close()


def reset() -> None:
    """Forget every cached client (tests, and after settings change), and
    close them."""
    with _lock:
        clients = list(_sync_clients.values())
        _sync_clients.clear()
        _async_clients.clear()
    for client in clients:
        close_client(client)

"""Where the clients come from: REDIS_URL, or a django-redis cache alias."""

from __future__ import annotations

import redis
from django.core.cache import caches
from django_redis import get_redis_connection

from harness.redis_server import RedisServer
from session_ng.backends.redis import SessionStore
from session_ng.store import client as store_client


def django_redis_cache(url: str) -> dict[str, object]:
    return {
        "sessions": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }


def test_cache_alias_reuses_the_caches_connection_pool(settings, redis_server) -> None:  # type: ignore[no-untyped-def]
    settings.CACHES = django_redis_cache(redis_server.url)
    settings.SESSION_NG = {"CACHE_ALIAS": "sessions"}
    client = store_client.get_client()
    assert client.connection_pool is get_redis_connection("sessions").connection_pool
    s = SessionStore()
    s["a"] = 1
    s.save()
    assert caches["sessions"].client.get_client().exists(f"session_ng:sessions:{{{s.session_key}}}")


async def test_cache_alias_async_client_talks_to_the_same_server(settings) -> None:  # type: ignore[no-untyped-def]
    with RedisServer() as other:
        settings.CACHES = django_redis_cache(other.url)
        settings.SESSION_NG = {"CACHE_ALIAS": "sessions"}
        s = SessionStore()
        await s.aset("a", 1)
        await s.asave()
        plain = redis.Redis.from_url(other.url)
        try:
            assert plain.hget(f"session_ng:sessions:{{{s.session_key}}}", ".a") == b"1"
        finally:
            plain.close()
        assert await SessionStore(s.session_key).aget("a") == 1


def test_settings_changes_get_a_new_client(settings, redis_server) -> None:  # type: ignore[no-untyped-def]
    first = store_client.get_client()
    assert store_client.get_client() is first
    with RedisServer() as other:
        settings.SESSION_NG = {"REDIS_URL": other.url}
        second = store_client.get_client()
        assert second is not first
        assert second.connection_pool.connection_kwargs["port"] == other.port
        store_client.reset()


async def test_one_async_client_per_event_loop() -> None:
    a = await store_client.get_async_client()
    assert await store_client.get_async_client() is a


async def test_cache_alias_with_a_comma_separated_location(settings, redis_server) -> None:  # type: ignore[no-untyped-def]
    settings.CACHES = django_redis_cache(f"{redis_server.url},redis://127.0.0.1:1/0")
    settings.SESSION_NG = {"CACHE_ALIAS": "sessions"}
    s = SessionStore()
    await s.aset("a", 1)
    await s.asave()  # async client: the primary is the first location
    assert SessionStore(s.session_key)["a"] == 1  # sync client: django-redis's own

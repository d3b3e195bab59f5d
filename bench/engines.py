"""The session engines compared, and switching the process from one to the next."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.contrib.sessions.models import Session

from bench.client import make_site


@dataclass(frozen=True)
class Engine:
    label: str
    path: str
    # Which kinds of store it talks to: decides which columns are "n/a".
    redis: bool
    sql: bool
    # Django's SESSION_SAVE_EVERY_REQUEST while this engine is measured.
    save_every_request: bool = False


OURS = Engine("session_ng", "session_ng.backends.redis", redis=True, sql=False)
# The reference: every ratio in the table is against this one.
CACHE = Engine(
    "cache (django-redis)", "django.contrib.sessions.backends.cache", redis=True, sql=False
)
# The reference made to slide its expiry on every request, as session_ng does
# (Django's way: save, and so re-set the TTL of, every session a request has).
CACHE_SLIDING = Engine(
    "cache, save every request",
    "django.contrib.sessions.backends.cache",
    redis=True,
    sql=False,
    save_every_request=True,
)
CACHED_DB = Engine("cached_db", "django.contrib.sessions.backends.cached_db", redis=True, sql=True)
DB = Engine("db (SQLite)", "django.contrib.sessions.backends.db", redis=False, sql=True)
REDIS_SESSIONS = Engine("django-redis-sessions", "redis_sessions.session", redis=True, sql=False)

ENGINES = (OURS, CACHE, CACHE_SLIDING, CACHED_DB, DB, REDIS_SESSIONS)


def flush_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()


def activate(engine: Engine, redis_url: str) -> SessionMiddleware:
    """Empty Redis and return a middleware bound to ``engine``.

    SessionMiddleware picks its store class in ``__init__``, so it is built
    after ``SESSION_ENGINE`` changes. Emptying Redis means one engine's keys
    neither slow down nor show up in the next one's figures.
    """
    flush_redis(redis_url)
    # The same goes for the table the db engines share.
    Session.objects.all().delete()
    settings.SESSION_ENGINE = engine.path
    settings.SESSION_SAVE_EVERY_REQUEST = engine.save_every_request
    return make_site()

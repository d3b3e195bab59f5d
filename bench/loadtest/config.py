"""What ``make loadtest`` runs: the configurations, the environment's settings, the order.

Light: imports neither Django nor the servers, so that every other module of
the load test can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

WSGI = "WSGI"
ASGI = "ASGI"


@dataclass(frozen=True)
class Engine:
    """A session engine, the middleware in front of it, and the server."""

    label: str
    # LOADTEST_ENGINE and LOADTEST_MIDDLEWARE for bench.loadtest.settings.
    engine: str
    middleware: str
    path: str
    # WSGI: gunicorn and the sync views; ASGI: uvicorn and the async views.
    server: str = WSGI

    @property
    def aliases(self) -> bool:
        """Whether ?_s=1 is a session of its own (session_ng's middleware)."""
        return self.middleware == "session_ng"

    @property
    def asgi(self) -> bool:
        return self.server == ASGI

    @property
    def title(self) -> str:
        return f"{self.label} ({ASGI})" if self.asgi else self.label

    @property
    def views(self) -> str:
        """The URL prefix of its views (bench.loadtest.urls), for mix.lua."""
        return "/lt/async/" if self.asgi else "/lt/"

    @property
    def slug(self) -> str:
        return f"{self.engine}-{self.middleware}-{self.server.lower()}"


SESSION_NG = Engine("session_ng", "session_ng", "session_ng", "session_ng.backends.redis")
CACHE = Engine("cache (django-redis)", "cache", "django", "django.contrib.sessions.backends.cache")
# session_ng's engine behind Django's middleware: what the engine costs
# without the middleware's aliases, header ids and cookie renewal.
ENGINE_ONLY = Engine(
    "session_ng, Django's middleware", "session_ng", "django", "session_ng.backends.redis"
)
# The same two under uvicorn with async views: session_ng's store talks to
# Redis with native async calls, the cache engine's through sync_to_async.
SESSION_NG_ASGI = Engine(
    "session_ng", "session_ng", "session_ng", "session_ng.backends.redis", server=ASGI
)
CACHE_ASGI = Engine(
    "cache (django-redis)",
    "cache",
    "django",
    "django.contrib.sessions.backends.cache",
    server=ASGI,
)
ENGINES = (SESSION_NG, CACHE, ENGINE_ONLY, SESSION_NG_ASGI, CACHE_ASGI)
# The pairs whose requests/s the table compares, session_ng's first.
RATIOS = ((SESSION_NG, CACHE), (SESSION_NG_ASGI, CACHE_ASGI))


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


@dataclass(frozen=True)
class Config:
    rounds: int  # runs per engine, in ABBA order, merged
    duration: int  # seconds of measured load per run
    warmup: int  # seconds of load before each run, not measured
    connections: int  # wrk connections, one browser each (WSGI runs)
    threads: int  # wrk threads
    workers: int  # gunicorn worker processes
    worker_class: str  # gunicorn's: sync, or gthread (threads, keep-alive)
    worker_threads: int  # threads per gunicorn (gthread) worker
    asgi_connections: int  # wrk connections of the ASGI runs
    asgi_workers: int  # uvicorn worker processes

    @classmethod
    def from_env(cls) -> Config:
        cores = os.cpu_count() or 1
        return cls(
            rounds=max(1, _env_int("LOADTEST_ROUNDS", 2)),
            duration=_env_int("LOADTEST_DURATION", 8),
            warmup=_env_int("LOADTEST_WARMUP", 2),
            connections=_env_int("LOADTEST_CONNECTIONS", 32),
            threads=_env_int("LOADTEST_THREADS", 2),
            workers=_env_int("LOADTEST_WORKERS", 2 * cores),
            worker_class=os.environ.get("LOADTEST_WORKER_CLASS", "") or "sync",
            worker_threads=_env_int("LOADTEST_WORKER_THREADS", 2),
            asgi_connections=_env_int("LOADTEST_ASGI_CONNECTIONS", 64),
            asgi_workers=_env_int("LOADTEST_ASGI_WORKERS", 2 * cores),
        )

    @property
    def users(self) -> int:
        # One user per browser and alias (mix.lua: lt<n> and lt<n>b).
        return max(self.connections, self.asgi_connections)

    def connections_for(self, engine: Engine) -> int:
        return self.asgi_connections if engine.asgi else self.connections

    def schedule(self) -> list[Engine]:
        """Every engine ``rounds`` times, in alternating order (A B C C B A ...),
        so that a change in the machine's load falls on all engines alike."""
        order: list[Engine] = []
        for r in range(self.rounds):
            order.extend(ENGINES if r % 2 == 0 else reversed(ENGINES))
        return order

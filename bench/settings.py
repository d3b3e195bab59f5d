"""Django settings for the bench process, made once the private Redis is up.

The port of the private redis-server is only known at run time, so the settings
are built with ``settings.configure()`` rather than read from a module. Every
engine's settings are present at once; only ``SESSION_ENGINE`` changes between
engines (see ``engines.activate``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import django
from django.conf import settings
from django.core.management import call_command

# One per session of the bytes-per-session figure (measure.SESSIONS): two
# sessions of one user would share a per-user index and flatter session_ng.
USERS = 100
USERNAME = "bench-user-{}"


def configure(redis_url: str, redis_port: int, db_path: Path) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-a-secret",
        ALLOWED_HOSTS=["testserver"],
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "session_ng",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(db_path),
                # 16 threads write one row in the lost-writes run: wait for the
                # lock instead of failing at once.
                "OPTIONS": {"timeout": 30},
            }
        },
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": redis_url,
            }
        },
        SESSION_ENGINE="session_ng.backends.redis",
        SESSION_NG={"REDIS_URL": redis_url},
        # django-redis-sessions reads this when its module is first imported.
        # Its default socket timeout (0.1 s) turns a busy moment into a
        # silently emptied session, so it gets the same 5 s as session_ng.
        SESSION_REDIS={
            "host": "127.0.0.1",
            "port": redis_port,
            "db": 0,
            "prefix": "session",
            "socket_timeout": 5.0,
        },
        LOGGING_CONFIG=None,
    )
    django.setup()


def prepare_database() -> None:
    """Create the tables and the users that the login figures log in."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    call_command("migrate", verbosity=0, interactive=False)
    # Unusable passwords: hashing 100 real ones would cost seconds for nothing.
    unusable = make_password(None)
    User.objects.bulk_create(
        User(username=USERNAME.format(i), password=unusable) for i in range(USERS)
    )


@contextmanager
def prepared(redis_url: str, redis_port: int, db_path: Path) -> Iterator[list[int]]:
    """Django configured against the bench's private server, with its tables
    and users made; yields the users' primary keys (``prepare_login``). On the
    way out, session_ng's clients and the database connections are closed,
    before the server and the database go."""
    configure(redis_url, redis_port, db_path)
    prepare_database()
    from django.db import connections

    from bench.client import prepare_login
    from session_ng.store import client

    try:
        yield prepare_login()
    finally:
        client.reset()
        connections.close_all()

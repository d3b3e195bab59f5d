"""testproject's settings, as the load test runs them under gunicorn.

The environment chooses what differs between runs (``python -m bench.loadtest`` sets
it for the server and for itself):

* ``LOADTEST_ENGINE``: ``session_ng`` (the default) or ``cache`` (Django's
  cache engine on a django-redis cache);
* ``LOADTEST_MIDDLEWARE``: ``session_ng`` (the default) or ``django``
  (Django's own ``SessionMiddleware``, which ignores ``?_s=``);
* ``REDIS_URL``: the private redis-server, for both;
* ``DJANGO_DB``: the temporary SQLite file.
"""

from __future__ import annotations

import os
from typing import Any

from testproject import settings as base
from testproject.settings import *  # noqa: F403

ENGINE = os.environ.get("LOADTEST_ENGINE", "session_ng")
SESSION_MIDDLEWARE = os.environ.get("LOADTEST_MIDDLEWARE", "session_ng")
if ENGINE not in ("session_ng", "cache"):
    raise ValueError(f"LOADTEST_ENGINE must be 'session_ng' or 'cache', not {ENGINE!r}")
if SESSION_MIDDLEWARE not in ("session_ng", "django"):
    raise ValueError(
        f"LOADTEST_MIDDLEWARE must be 'session_ng' or 'django', not {SESSION_MIDDLEWARE!r}"
    )
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

DEBUG = False
ROOT_URLCONF = "bench.loadtest.urls"
# For the load test ONLY: MD5 makes a login cost a hash of microseconds, not
# the tens of milliseconds of PBKDF2, which would drown everything else.
# Never use it for real passwords.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

_database: dict[str, Any] = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": os.environ.get("DJANGO_DB", str(base.BASE_DIR / "loadtest.sqlite3")),
    # Every worker process writes last_login at each login: wait for the
    # lock rather than fail (the file is in WAL mode, see bench.loadtest.run).
    "OPTIONS": {"timeout": 30},
}
DATABASES = {"default": _database}

# The comparison engine's cache, on the same private Redis; session_ng never
# uses it. django-redis pickles, as in bench/.
CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL}}
SESSION_NG = {**base.SESSION_NG, "REDIS_URL": REDIS_URL}

# testproject's extras that react to session events (the demo's event log,
# one SQLite row per event, and the chat's channel layer) run for session_ng
# only, since the cache engine sends no events: off, so that both runs serve
# the same site.
DEMO_EVENT_LOG = False
CHANNEL_LAYERS = dict[str, Any]()

# Outermost: tells wrk's script which browser a response is for.
MIDDLEWARE = ["bench.loadtest.middleware.browser_tag", *base.MIDDLEWARE]
if SESSION_MIDDLEWARE == "django":
    MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware"
        if name == "session_ng.middleware.SessionMiddleware"
        else name
        for name in MIDDLEWARE
    ]
SESSION_ENGINE = (
    "django.contrib.sessions.backends.cache" if ENGINE == "cache" else "session_ng.backends.redis"
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # On the server's stderr, which python -m bench.loadtest shows if anything is there.
    "loggers": {
        "session_ng": {"handlers": ["console"], "level": "WARNING"},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}

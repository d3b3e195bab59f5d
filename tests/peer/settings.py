"""Settings for Django's ``runtests.py`` (``--settings=tests.peer.settings``).

runtests.py puts its own directory first on ``sys.path``, so its default
settings module, ``test_sqlite``, is importable: we start from it and choose
the session engine. runtests.py then replaces INSTALLED_APPS and MIDDLEWARE
with its own lists; ``tests.peer.runner.PeerRunner`` (TEST_RUNNER) puts
session_ng's app and middleware in them afterwards.
"""

import os

from test_sqlite import *  # noqa: F403

ENGINE = os.environ["PEER_ENGINE"]
REDIS_URL = os.environ["PEER_REDIS_URL"]

TEST_RUNNER = "tests.peer.runner.PeerRunner"

if ENGINE == "session_ng":
    SESSION_ENGINE = "session_ng.backends.redis"
    SESSION_NG = {"REDIS_URL": REDIS_URL}
elif ENGINE == "cache":
    # Django's cache engine on the same redis-server, through django-redis,
    # as the default cache: Django's cache-engine tests expect the sessions
    # in the default cache.
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": REDIS_URL}}
else:
    raise ValueError(f"PEER_ENGINE must be session_ng or cache, not {ENGINE!r}")

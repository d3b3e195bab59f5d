"""Settings for worker processes started by tests/test_worker.py (and the
cluster and sentinel tests): standalone by REDIS_URL, Cluster with CLUSTER=1,
Sentinel through a django-redis cache when SENTINELS is set."""

import os

import tests.event_log  # noqa: F401  (connects the receivers)
from tests.settings import *  # noqa: F403
from tests.settings import CACHES

SESSION_NG = {
    "REDIS_URL": os.environ["REDIS_URL"],
    "CLUSTER": os.environ.get("CLUSTER", "0") == "1",
    "CONFIGURE_KEYSPACE_NOTIFICATIONS": os.environ.get("CONFIGURE_NOTIFICATIONS", "1") == "1",
}
if os.environ.get("SENTINELS"):
    # SENTINELS="host:port,host:port", REDIS_URL="redis://<service name>/0".
    CACHES = {
        **CACHES,
        "sessions": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": os.environ["REDIS_URL"],
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": [
                    (host, int(port))
                    for host, port in (a.split(":") for a in os.environ["SENTINELS"].split(","))
                ],
            },
        },
    }
    SESSION_NG = {**SESSION_NG, "CACHE_ALIAS": "sessions"}
    del SESSION_NG["REDIS_URL"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"session_ng": {"handlers": ["stderr"], "level": "INFO"}},
}

if os.environ.get("WORKER_LOGGING") == "django-default":
    # As in a new project: nothing in LOGGING about session_ng.
    LOGGING: dict[str, object] = {}

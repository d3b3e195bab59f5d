"""Settings for worker processes started by tests/test_worker.py."""

import os

import tests.event_log  # noqa: F401  (connects the receivers)
from tests.settings import *  # noqa: F403

SESSION_NG = {
    "REDIS_URL": os.environ["REDIS_URL"],
    "CONFIGURE_KEYSPACE_NOTIFICATIONS": os.environ.get("CONFIGURE_NOTIFICATIONS", "1") == "1",
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"session_ng": {"handlers": ["stderr"], "level": "INFO"}},
}

"""testproject's settings plus what the test suite needs."""

from testproject.settings import *  # noqa: F403
from testproject.settings import INSTALLED_APPS
from tests.django_contract import ensure_sessions_tests

ensure_sessions_tests()

# Django's own session tests import their app's models.
INSTALLED_APPS = [*INSTALLED_APPS, "sessions_tests"]

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The conftest starts a private redis-server and fills in its URL.
SESSION_NG = {"REDIS_URL": "redis://127.0.0.1:1/0", "ID_RESOLVERS": ["cookie", "header"]}

# Tests that need the demo's event log switch it on themselves.
DEMO_EVENT_LOG = False

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
}

# In-process layer: closing sockets on a session's end, within one process.
# The end-to-end tests run daphne and the worker with testproject's
# channels_redis layer instead.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

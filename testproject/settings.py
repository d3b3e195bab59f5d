"""A small real site that uses session_ng; the tests import it too."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "testproject-insecure-key-for-local-use-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "session_ng",
    "testproject.demo.apps.DemoConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "session_ng.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "testproject.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "session_ng.context_processors.accounts",
            ]
        },
    }
]
WSGI_APPLICATION = "testproject.wsgi.application"
ASGI_APPLICATION = "testproject.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", str(BASE_DIR / "testproject" / "db.sqlite3")),
    }
}

SESSION_ENGINE = "session_ng.backends.redis"
SESSION_NG = {
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    # Browsers use the cookie; the JSON API also takes an X-Auth-Token header.
    "ID_RESOLVERS": ["cookie", "header"],
    # Daphne lets an application close a socket only with 1000 or 3000-4999:
    # 4008 is 1008 (policy violation) in the private-use range. (The live tests
    # set 1008 to exercise the stand-in the mixin then falls back to.)
    "WEBSOCKET_CLOSE_CODE": int(os.environ.get("DEMO_WEBSOCKET_CLOSE_CODE", "4008")),
}

# The chat's sockets are closed, in whichever process holds them, when their
# session ends: every process (web and worker) shares this channel layer.
# channels_redis waits for a socket's next message with a 5-second blocking
# read (its brpop_timeout); redis-py 8 gives up on any read after 5 seconds by
# default (socket_timeout), so an idle chat would fail with TimeoutError after
# about 5 s. The read timeout must be longer than the blocking read.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": SESSION_NG["REDIS_URL"], "socket_timeout": 15}],
            "prefix": "testproject:channels",
        },
    }
}
# The chat page puts its session on this idle timeout, so that going silent
# visibly logs the user out (and closes the chat) while chatting does not.
DEMO_CHAT_IDLE_SECONDS = int(os.environ.get("DEMO_CHAT_IDLE_SECONDS", "60"))

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
# Show what session_ng (and its worker) does on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Not propagated: daphne gives the root logger a handler of its own, and
    # each line would be printed twice.
    "loggers": {
        "session_ng": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# The demo keeps a table of the session events it receives (shown at /events/).
DEMO_EVENT_LOG = True

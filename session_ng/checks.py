"""System checks, with their ids: what is wrong with ``SESSION_NG``
(``conf.settings_problems()``, which the connection code also raises), and with
the rest of the project and the server."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from session_ng.conf import settings_problems

ENGINE = "session_ng.backends.redis"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
OUR_MIDDLEWARE = "session_ng.middleware.SessionMiddleware"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = [
        Error(p.msg, hint=p.hint or None, id=p.id) for p in settings_problems()
    ]
    if settings.SESSION_ENGINE != ENGINE:
        messages.append(
            Warning(
                f"session_ng is installed but SESSION_ENGINE is {settings.SESSION_ENGINE!r}.",
                hint=f"Set SESSION_ENGINE = {ENGINE!r}.",
                id="session_ng.W001",
            )
        )
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if DJANGO_MIDDLEWARE in middleware and OUR_MIDDLEWARE in middleware:
        messages.append(
            Warning(
                "Both Django's and session_ng's SessionMiddleware are in MIDDLEWARE; the later "
                "one replaces request.session, and aliases and header ids stop working.",
                hint=f"Remove {DJANGO_MIDDLEWARE!r}.",
                id="session_ng.W002",
            )
        )
    return messages


@register(Tags.compatibility)
def check_migration(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``SESSION_NG["MIGRATE_FROM"]`` names an engine session_ng can migrate from."""
    from session_ng.migration import SUPPORTED, problem

    found = problem()
    if found is None:
        return []
    return [
        Error(
            found,
            hint=f"Use one of {', '.join(SUPPORTED)} (or a subclass of one), the engine "
            "the site used before session_ng; None once the switch is done.",
            id="session_ng.E017",
        )
    ]


@register(Tags.compatibility, deploy=True)
def check_keyspace_notifications(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``manage.py check --deploy``: does Redis publish the events the worker needs?

    Asks Redis by making it publish (no CONFIG, which managed Redis may forbid).
    """
    if settings_problems():
        return []  # the settings errors say what to fix first
    from session_ng.worker import probe_now, retryable

    try:
        missing = probe_now()
    except Exception as exc:
        if not retryable(exc):
            raise
        return [Warning(f"Could not reach Redis to check keyspace notifications: {exc}",
                        id="session_ng.W004")]  # fmt: skip
    if not missing:
        return []
    return [
        Warning(
            f"Redis does not publish {' and '.join(missing)} keyspace events, so "
            "session_ng_worker cannot report expired sessions promptly or deletes made "
            "outside session_ng.",
            hint="Set notify-keyspace-events to include 'Egx' (with "
            "CONFIGURE_KEYSPACE_NOTIFICATIONS the worker does it itself).",
            id="session_ng.W003",
        )
    ]


# Django's own session-cookie deployment checks (security.W010-W015) run only
# when this app or this middleware path is installed, named exactly so.
DJANGO_SESSIONS_APP = "django.contrib.sessions"


@register(Tags.security, deploy=True)
def check_session_cookie(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``check --deploy``: the session cookie's Secure and HttpOnly flags.

    session_ng needs neither ``django.contrib.sessions`` nor Django's
    middleware, and without them Django's own checks of these two settings
    never run. These say the same then, and nothing when Django's run.
    """
    if DJANGO_SESSIONS_APP in settings.INSTALLED_APPS or DJANGO_MIDDLEWARE in list(
        getattr(settings, "MIDDLEWARE", None) or []
    ):
        return []  # Django's security.W010-W015 cover them
    messages: list[CheckMessage] = []
    if settings.SESSION_COOKIE_SECURE is not True:
        messages.append(
            Warning(
                "SESSION_COOKIE_SECURE is not True: browsers send the session cookie over "
                "plain HTTP too, where anyone on the network can read it and take over "
                "the session.",
                hint="Serve the site over HTTPS and set SESSION_COOKIE_SECURE = True.",
                id="session_ng.W012",
            )
        )
    if settings.SESSION_COOKIE_HTTPONLY is not True:
        messages.append(
            Warning(
                "SESSION_COOKIE_HTTPONLY is not True: the page's scripts can read the "
                "session cookie, so a cross-site scripting flaw can steal the session.",
                hint="Set SESSION_COOKIE_HTTPONLY = True (Django's default).",
                id="session_ng.W015",
            )
        )
    return messages


# What a full Redis may evict under each policy (redis.io, "Key eviction"):
# allkeys-* any key; volatile-* any key that has a TTL, which is nearly every
# key of session_ng (session hashes, shadow keys, user indexes, buckets, event
# claims; only sessions that never expire, their indexes and the sweep
# cursor have none). Only noeviction evicts nothing.
EVICTS = {
    "allkeys-lru": "any key",
    "allkeys-lfu": "any key",
    "allkeys-random": "any key",
    "volatile-lru": "any key with a TTL",
    "volatile-lfu": "any key with a TTL",
    "volatile-random": "any key with a TTL",
    "volatile-ttl": "any key with a TTL",
}


@register(Tags.compatibility, deploy=True)
def check_memory_policy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``manage.py check --deploy``: can Redis evict session_ng's keys when full?

    Eviction removes one key of a set that must stay whole: an evicted user
    index makes "sign out everywhere" miss sessions that live on; an evicted
    shadow key ends a session with no event. Asks with INFO (no CONFIG); a
    Redis it cannot reach is reported by session_ng.W004.
    """
    if settings_problems():
        return []
    from session_ng.store import driver, notify
    from session_ng.worker import retryable

    try:
        policies = driver.run(notify.memory_policies())
    except Exception as exc:
        if not retryable(exc):
            raise
        return []
    risky = sorted({p.policy for p in policies if p.maxmemory and p.policy != "noeviction"})
    return [
        Warning(
            f"Redis runs with maxmemory-policy {policy!r}: when it is full it evicts "
            f"{EVICTS.get(policy, 'keys')}, session_ng's included. An evicted user index makes "
            "'sign out everywhere' (api.delete_sessions) miss sessions that stay alive; an "
            "evicted session key signs its user out with no session_deleted or session_expired "
            "signal.",
            hint="Give session_ng a Redis (or a Cluster) of its own with maxmemory-policy "
            "noeviction, and enough memory (docs: operations, Sizing memory). Full, it then "
            "refuses writes (503) instead of forgetting sessions.",
            id="session_ng.W021",
        )
        for policy in risky
    ]


# Modules whose loading of bytes can run code: a serializer built on them lets
# anyone who can write to Redis run code in every web process and worker.
CODE_RUNNING_MODULES = frozenset(
    {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "jsonpickle", "marshal", "shelve"}
)


def code_running_serializer(path: str) -> str | None:
    """Why the serializer at ``path`` can run code when it loads, or None.

    It can if its dotted path names pickle (django-redis's, Django's removed
    PickleSerializer, most home-made ones), or if a module that defines it or
    one of its bases uses one of CODE_RUNNING_MODULES (``import pickle``,
    ``from pickle import loads``).
    """
    if "pickle" in path.lower():
        return f"{path} is pickle-based"
    try:
        serializer = import_string(path)
    except ImportError:
        return None  # Django's own checks and the first request say so
    classes = inspect.getmro(serializer) if inspect.isclass(serializer) else (serializer,)
    for cls in classes:
        module = sys.modules.get(getattr(cls, "__module__", "") or "")
        if module is None or module.__name__ == "builtins":
            continue
        for value in vars(module).values():
            name = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", "")
            if isinstance(name, str) and name.split(".")[0] in CODE_RUNNING_MODULES:
                return f"{path} is defined next to {name} ({module.__name__})"
    return None


@register(Tags.security)
def check_serializer(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """SESSION_SERIALIZER must not be able to run code: session data lives in
    Redis unsigned, so whoever can write to Redis chooses what it loads."""
    if settings.SESSION_ENGINE != ENGINE:
        return []
    path = str(settings.SESSION_SERIALIZER)
    why = code_running_serializer(path)
    if why is None:
        return []
    return [
        Warning(
            f"SESSION_SERIALIZER can run code when it loads session data ({why}). session_ng "
            "stores sessions in Redis unsigned, so anyone who can write to that Redis could run "
            "code in the web processes and in session_ng_worker.",
            hint="Use Django's default, 'django.core.signing.JSONSerializer', or another "
            "serializer that only builds data (msgpack, JSON).",
            id="session_ng.W020",
        )
    ]

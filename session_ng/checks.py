"""System checks: settings problems from ``conf.problems()``, with their ids."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from session_ng.conf import conf

ENGINE = "session_ng.backends.redis"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
OUR_MIDDLEWARE = "session_ng.middleware.SessionMiddleware"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = [
        Error(p.msg, hint=p.hint or None, id=p.id) for p in conf.problems()
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


@register(Tags.compatibility, deploy=True)
def check_keyspace_notifications(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``manage.py check --deploy``: does Redis publish the events the worker needs?

    Asks Redis by making it publish (no CONFIG, which managed Redis may forbid).
    """
    if conf.problems():
        return []  # the settings errors say what to fix first
    from session_ng.events import probe_now, retryable

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

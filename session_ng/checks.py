"""System checks, with their ids: what is wrong with ``SESSION_NG``
(``settings_problems()``, also raised by the connection code), and with the
rest of the project and the server."""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from session_ng.conf import DEFAULTS, MAX_RENEWAL_PERIOD, conf, is_renewal_period, is_seconds

ENGINE = "session_ng.backends.redis"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
OUR_MIDDLEWARE = "session_ng.middleware.SessionMiddleware"


# A namespace ends up at the front of every key name; keep it boring so that it
# can never contain a hash tag or a glob character.
NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
KNOWN_RESOLVERS = ("cookie", "header")
# RFC 9110 token characters; Django exposes headers by these names.
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
ALIAS_PARAM_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# Close codes no endpoint may send (RFC 6455, 7.4.1): they only report what
# happened to a connection that closed without a close frame or TLS.
UNSENDABLE_CLOSE_CODES = (1004, 1005, 1006, 1015)


@dataclass(frozen=True)
class Problem:
    id: str
    msg: str
    hint: str = ""


def settings_problems() -> list[Problem]:
    """What is wrong with ``SESSION_NG`` (and the caches it names): errors
    (``session_ng.E…``) stop the connection code; all are system checks."""
    found: list[Problem] = []
    raw = getattr(settings, "SESSION_NG", {})
    if not isinstance(raw, dict):
        return [Problem("session_ng.E001", "SESSION_NG must be a dict.")]
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        found.append(
            Problem(
                "session_ng.E002",
                f"SESSION_NG has unknown keys: {', '.join(unknown)}.",
                f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            )
        )
    url, alias = conf.raw("REDIS_URL"), conf.raw("CACHE_ALIAS")
    if bool(url) == bool(alias):
        found.append(
            Problem(
                "session_ng.E003",
                "Set exactly one of SESSION_NG['REDIS_URL'] and SESSION_NG['CACHE_ALIAS'].",
                "For example SESSION_NG = {'REDIS_URL': 'redis://127.0.0.1:6379/0'}.",
            )
        )
    # A Cluster may be given several startup nodes: a list of URLs.
    urls = list(url) if conf.raw("CLUSTER") and isinstance(url, list | tuple) else [url]
    if url and not all(isinstance(u, str) and u.startswith(REDIS_URL_SCHEMES) for u in urls):
        found.append(
            Problem(
                "session_ng.E004",
                f"SESSION_NG['REDIS_URL'] must be a redis://, rediss:// or unix:// URL "
                f"(or, with CLUSTER, a list of them), not {url!r}.",
            )
        )
    if alias:
        caches = getattr(settings, "CACHES", {})
        backend = str(caches.get(alias, {}).get("BACKEND", "")) if isinstance(alias, str) else ""
        if not isinstance(alias, str) or alias not in caches:
            found.append(
                Problem("session_ng.E005", f"SESSION_NG['CACHE_ALIAS'] {alias!r} is not in CACHES.")
            )
        elif not backend.startswith("django_redis."):
            found.append(
                Problem(
                    "session_ng.E006",
                    f"CACHES[{alias!r}] must use django-redis (django_redis.cache.RedisCache), "
                    f"not {backend!r}.",
                    "session_ng reuses that cache's connection pool; Django's own "
                    "RedisCache does not expose one.",
                )
            )
    if not isinstance(conf.raw("NAMESPACE"), str) or not NAMESPACE_RE.fullmatch(
        conf.raw("NAMESPACE")
    ):
        found.append(
            Problem(
                "session_ng.E007",
                f"SESSION_NG['NAMESPACE'] must match {NAMESPACE_RE.pattern}, "
                f"not {conf.raw('NAMESPACE')!r}.",
            )
        )
    resolvers = conf.raw("ID_RESOLVERS")
    if (
        not isinstance(resolvers, list | tuple)
        or not resolvers
        or any(r not in KNOWN_RESOLVERS for r in resolvers)
        or len(set(resolvers)) != len(resolvers)
    ):
        found.append(
            Problem(
                "session_ng.E008",
                f"SESSION_NG['ID_RESOLVERS'] must be a non-empty list of distinct values "
                f"from {KNOWN_RESOLVERS}, not {resolvers!r}.",
            )
        )
    max_aliases = conf.raw("MAX_ALIASES")
    if not isinstance(max_aliases, int) or isinstance(max_aliases, bool) or max_aliases < 1:
        found.append(
            Problem("session_ng.E009", "SESSION_NG['MAX_ALIASES'] must be a positive integer.")
        )
    timeout = conf.raw("SOCKET_TIMEOUT")
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        found.append(
            Problem("session_ng.E010", "SESSION_NG['SOCKET_TIMEOUT'] must be a positive number.")
        )
    header = conf.raw("HEADER_NAME")
    if not isinstance(header, str) or not HEADER_NAME_RE.fullmatch(header):
        found.append(
            Problem(
                "session_ng.E013",
                f"SESSION_NG['HEADER_NAME'] must be an HTTP header name, not {header!r}.",
            )
        )
    param = conf.raw("ALIAS_PARAM")
    if param is not None and (not isinstance(param, str) or not ALIAS_PARAM_RE.fullmatch(param)):
        found.append(
            Problem(
                "session_ng.E014",
                f"SESSION_NG['ALIAS_PARAM'] must be None or a query parameter name "
                f"matching {ALIAS_PARAM_RE.pattern}, not {param!r}.",
            )
        )
    code = conf.raw("WEBSOCKET_CLOSE_CODE")
    if (
        not isinstance(code, int)
        or isinstance(code, bool)
        or not 1000 <= code <= 4999
        or code in UNSENDABLE_CLOSE_CODES
    ):
        found.append(
            Problem(
                "session_ng.E015",
                f"SESSION_NG['WEBSOCKET_CLOSE_CODE'] must be a websocket close code an "
                f"application may send (an integer from 1000 to 4999, not 1004, 1005, "
                f"1006 or 1015), not {code!r}.",
                "3000-4999 are for applications, and every server sends them as given.",
            )
        )
    interval = conf.raw("WEBSOCKET_REFRESH_INTERVAL")
    if interval is not None and not is_seconds(interval):
        found.append(
            Problem(
                "session_ng.E016",
                f"SESSION_NG['WEBSOCKET_REFRESH_INTERVAL'] must be None or a number of "
                f"seconds, 0 or more, not {interval!r}.",
            )
        )
    period = conf.raw("RENEWAL_PERIOD")
    if period is not None and not is_renewal_period(period):
        found.append(
            Problem(
                "session_ng.E018",
                f"SESSION_NG['RENEWAL_PERIOD'] must be None or a number of seconds from 0 "
                f"to {MAX_RENEWAL_PERIOD}, not {period!r}.",
                "None renews at most once a minute, or once per hundredth of the idle "
                "timeout when that is shorter.",
            )
        )
    anonymous = conf.raw("ANONYMOUS_MAX_INACTIVE")
    if anonymous is not None and (
        not isinstance(anonymous, int) or isinstance(anonymous, bool) or anonymous < 1
    ):
        found.append(
            Problem(
                "session_ng.E020",
                f"SESSION_NG['ANONYMOUS_MAX_INACTIVE'] must be None or a positive number "
                f"of seconds (an integer), not {anonymous!r}.",
            )
        )
    if conf.raw("CLUSTER") and alias:
        found.append(
            Problem(
                "session_ng.E011",
                "SESSION_NG['CLUSTER'] needs REDIS_URL; django-redis has no cluster client.",
            )
        )
    return found


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
    from session_ng import repository
    from session_ng.events import retryable

    try:
        policies = repository.run(repository.memory_policies())
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

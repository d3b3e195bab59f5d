"""The one settings object: ``SESSION_NG`` with its defaults, read live, typed.

Code reads ``conf.snapshot()``, rebuilt whenever the settings object changes so
that ``override_settings`` works in tests. ``settings_problems()`` validates what
was given: ``checks.py`` reports it as system checks, and the connection code
raises it as ``ImproperlyConfigured`` when it is asked to connect with bad
settings. (It lives here, the bottom layer, because the connection code needs it
and the checks reach Redis through everything above it.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    "REDIS_URL": None,
    "CACHE_ALIAS": None,
    "CLUSTER": False,
    "NAMESPACE": "session_ng",
    "REFRESH_ON_ACCESS": True,
    # Seconds between two renewals of a session's idle timer (lazy renewal):
    # a read renews only when the last renewal is this old, and every renewal
    # grants this much extra life, so a session never ends before its idle
    # timeout. None: min(60 s, a hundredth of the idle timeout). 0 renews on
    # every read (a write in Redis per read).
    "RENEWAL_PERIOD": None,
    "ID_RESOLVERS": ["cookie"],
    "HEADER_NAME": "X-Auth-Token",
    "ALIAS_PARAM": "_s",
    "MAX_ALIASES": 10,
    "CONFIGURE_KEYSPACE_NOTIFICATIONS": True,
    "WEBSOCKET_CLOSE_CODE": 1008,
    # Seconds between two refreshes of one socket's session; None: the
    # session's renewal period (see RENEWAL_PERIOD); 0 refreshes on every
    # message. SessionRefreshMixin.session_refresh_interval overrides it.
    "WEBSOCKET_REFRESH_INTERVAL": None,
    # Seconds a Redis call may take before the store reports Redis as unavailable.
    "SOCKET_TIMEOUT": 5.0,
    # The engine module sessions are moved over from, lazily (see
    # session_ng.migration); None once the switch is done.
    "MIGRATE_FROM": None,
    # Idle timeout (seconds) of sessions with no signed-in user, when shorter
    # than SESSION_COOKIE_AGE; None: the same as everyone's.
    "ANONYMOUS_MAX_INACTIVE": None,
}

# A renewal period past a day would let an idle session outlive its timeout
# by that much: more a misconfiguration than a choice (check E018).
MAX_RENEWAL_PERIOD = 86400


@dataclass(frozen=True)
class Snapshot:
    """The settings one request needs, read once per ``SESSION_NG`` object."""

    namespace: str
    refresh_on_access: bool
    # RENEWAL_PERIOD in ms, or None for the default (see renewal_period_ms).
    renewal_period_ms: int | None
    cluster: bool
    client_key: tuple[Any, ...]
    # The middleware's per-request reads, resolved once.
    id_resolvers: tuple[str, ...] = ("cookie",)
    header_name: str = "X-Auth-Token"
    header_meta_key: str = "HTTP_X_AUTH_TOKEN"  # the header's name in request.META
    alias_param: str | None = "_s"
    # The rest of SESSION_NG, typed. A value that check E0xx reports is read
    # as its default here, so that code reading it never fails on it.
    redis_url: str | tuple[str, ...] | None = None
    cache_alias: str | None = None
    max_aliases: int = 10
    configure_keyspace_notifications: bool = True
    websocket_close_code: int = 1008
    websocket_refresh_interval: float | None = None
    socket_timeout: float = 5.0
    migrate_from: str | None = None
    anonymous_max_inactive: int | None = None


class Settings:
    """``SESSION_NG`` merged over ``DEFAULTS``, read live, as one typed object.

    ``snapshot()`` is rebuilt whenever ``settings.SESSION_NG`` or
    ``settings.CACHES`` is a different object (as after ``override_settings``
    or an assignment): Django settings are replaced, not mutated in place.
    ``raw()`` is for the validation only, which looks at what was given.
    """

    _snapshot: tuple[object, object, Snapshot] | None = None

    def snapshot(self) -> Snapshot:
        raw = getattr(django_settings, "SESSION_NG", None)
        caches = getattr(django_settings, "CACHES", None)
        cached = self._snapshot
        # Holding raw and caches in the cache keeps their ids from being reused.
        if cached is not None and cached[0] is raw and cached[1] is caches:
            return cached[2]
        raw_alias = self.raw("CACHE_ALIAS")
        alias = raw_alias if isinstance(raw_alias, str) and raw_alias else None
        cache_conf = repr(caches.get(alias)) if alias and isinstance(caches, dict) else None
        cluster = bool(self.raw("CLUSTER"))
        url = self.raw("REDIS_URL")
        redis_url = tuple(url) if isinstance(url, list | tuple) else (url or None)
        timeout = self.raw("SOCKET_TIMEOUT")
        socket_timeout = float(timeout) if _positive(timeout) else DEFAULTS["SOCKET_TIMEOUT"]
        header = self.raw("HEADER_NAME")
        header_name = header if isinstance(header, str) and header else DEFAULTS["HEADER_NAME"]
        param = self.raw("ALIAS_PARAM")
        snap = Snapshot(
            namespace=str(self.raw("NAMESPACE")),
            refresh_on_access=bool(self.raw("REFRESH_ON_ACCESS")),
            renewal_period_ms=_period_ms(self.raw("RENEWAL_PERIOD")),
            cluster=cluster,
            client_key=(redis_url, alias, cache_conf, cluster, socket_timeout),
            id_resolvers=tuple(str(r) for r in _items(self.raw("ID_RESOLVERS"))),
            header_name=header_name,
            header_meta_key="HTTP_" + header_name.upper().replace("-", "_"),
            alias_param=str(param) if param else None,
            redis_url=redis_url if isinstance(redis_url, str | tuple) else None,
            cache_alias=alias,
            max_aliases=_whole(self.raw("MAX_ALIASES")) or DEFAULTS["MAX_ALIASES"],
            configure_keyspace_notifications=bool(self.raw("CONFIGURE_KEYSPACE_NOTIFICATIONS")),
            websocket_close_code=(
                _whole(self.raw("WEBSOCKET_CLOSE_CODE")) or DEFAULTS["WEBSOCKET_CLOSE_CODE"]
            ),
            websocket_refresh_interval=(
                float(interval)
                if is_seconds(interval := self.raw("WEBSOCKET_REFRESH_INTERVAL"))
                else None
            ),
            socket_timeout=socket_timeout,
            migrate_from=(
                engine if isinstance(engine := self.raw("MIGRATE_FROM"), str) and engine else None
            ),
            anonymous_max_inactive=_whole(self.raw("ANONYMOUS_MAX_INACTIVE")),
        )
        self._snapshot = (raw, caches, snap)
        return snap

    def raw(self, name: str) -> Any:
        """One setting as given (or its default), unvalidated: for the checks."""
        value = getattr(django_settings, "SESSION_NG", {})
        return (value if isinstance(value, dict) else {}).get(name, DEFAULTS[name])


def is_seconds(value: Any) -> bool:
    """A number of seconds, 0 or more (no bool, no NaN, no infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf


def is_renewal_period(value: Any) -> bool:
    """A RENEWAL_PERIOD that check E018 accepts (None aside)."""
    return is_seconds(value) and value <= MAX_RENEWAL_PERIOD


def _positive(value: Any) -> bool:
    return is_seconds(value) and value > 0


def _whole(value: Any) -> int | None:
    """A positive integer as given, else None (the checks report it)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None


def _items(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple) else ()


def _period_ms(value: Any) -> int | None:
    # Bad values are reported by check E018; until then they mean the default.
    return int(value * 1000) if value is not None and is_renewal_period(value) else None


conf = Settings()


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
    raw = getattr(django_settings, "SESSION_NG", {})
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
        caches = getattr(django_settings, "CACHES", {})
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

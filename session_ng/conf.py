"""The one settings object: ``SESSION_NG`` with its defaults, read live.

Every read goes back to ``django.conf.settings`` so that ``override_settings``
works in tests. ``problems()`` lists what is wrong; ``checks.py`` turns that list
into system-check messages, and the connection code raises it as
``ImproperlyConfigured`` when it is asked to connect with bad settings.
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

# A namespace ends up at the front of every key name; keep it boring so that it
# can never contain a hash tag or a glob character.
NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
KNOWN_RESOLVERS = ("cookie", "header")
# RFC 9110 token characters; Django exposes headers by these names.
HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
ALIAS_PARAM_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# A renewal period past a day would let an idle session outlive its timeout
# by that much: more a misconfiguration than a choice.
MAX_RENEWAL_PERIOD = 86400
# Close codes no endpoint may send (RFC 6455, 7.4.1): they only report what
# happened to a connection that closed without a close frame or TLS.
UNSENDABLE_CLOSE_CODES = (1004, 1005, 1006, 1015)


@dataclass(frozen=True)
class Problem:
    id: str
    msg: str
    hint: str = ""


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


class Settings:
    """Attribute access to ``SESSION_NG`` merged over ``DEFAULTS``.

    Reads are live. The hot path uses ``snapshot()``, which is rebuilt whenever
    ``settings.SESSION_NG`` or ``settings.CACHES`` is a different object (as
    after ``override_settings`` or an assignment): Django settings are replaced,
    not mutated in place.
    """

    _snapshot: tuple[object, object, Snapshot] | None = None

    def snapshot(self) -> Snapshot:
        raw = getattr(django_settings, "SESSION_NG", None)
        caches = getattr(django_settings, "CACHES", None)
        cached = self._snapshot
        # Holding raw and caches in the cache keeps their ids from being reused.
        if cached is not None and cached[0] is raw and cached[1] is caches:
            return cached[2]
        alias = self.CACHE_ALIAS
        cache_conf = repr(caches.get(alias)) if alias and isinstance(caches, dict) else None
        snap = Snapshot(
            namespace=str(self.NAMESPACE),
            refresh_on_access=bool(self.REFRESH_ON_ACCESS),
            renewal_period_ms=_period_ms(self.RENEWAL_PERIOD),
            cluster=bool(self.CLUSTER),
            client_key=(
                tuple(url) if isinstance(url := self.REDIS_URL, list) else url,
                alias,
                cache_conf,
                bool(self.CLUSTER),
                self.SOCKET_TIMEOUT,
            ),
            id_resolvers=tuple(str(r) for r in self.ID_RESOLVERS or ()),
            header_name=str(self.HEADER_NAME),
            header_meta_key="HTTP_" + str(self.HEADER_NAME).upper().replace("-", "_"),
            alias_param=str(self.ALIAS_PARAM) if self.ALIAS_PARAM else None,
        )
        self._snapshot = (raw, caches, snap)
        return snap

    def _raw(self) -> dict[str, Any]:
        value = getattr(django_settings, "SESSION_NG", {})
        return value if isinstance(value, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"SESSION_NG has no setting {name!r}")
        return self._raw().get(name, DEFAULTS[name])

    @property
    def namespace(self) -> str:
        return self.snapshot().namespace

    @property
    def refresh_on_access(self) -> bool:
        return self.snapshot().refresh_on_access

    def problems(self) -> list[Problem]:
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
        url, alias = self.REDIS_URL, self.CACHE_ALIAS
        if bool(url) == bool(alias):
            found.append(
                Problem(
                    "session_ng.E003",
                    "Set exactly one of SESSION_NG['REDIS_URL'] and SESSION_NG['CACHE_ALIAS'].",
                    "For example SESSION_NG = {'REDIS_URL': 'redis://127.0.0.1:6379/0'}.",
                )
            )
        # A Cluster may be given several startup nodes: a list of URLs.
        urls = list(url) if self.CLUSTER and isinstance(url, list | tuple) else [url]
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
            backend = (
                str(caches.get(alias, {}).get("BACKEND", "")) if isinstance(alias, str) else ""
            )
            if not isinstance(alias, str) or alias not in caches:
                found.append(
                    Problem(
                        "session_ng.E005", f"SESSION_NG['CACHE_ALIAS'] {alias!r} is not in CACHES."
                    )
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
        if not isinstance(self.NAMESPACE, str) or not NAMESPACE_RE.fullmatch(self.NAMESPACE):
            found.append(
                Problem(
                    "session_ng.E007",
                    f"SESSION_NG['NAMESPACE'] must match {NAMESPACE_RE.pattern}, "
                    f"not {self.NAMESPACE!r}.",
                )
            )
        resolvers = self.ID_RESOLVERS
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
        max_aliases = self.MAX_ALIASES
        if not isinstance(max_aliases, int) or isinstance(max_aliases, bool) or max_aliases < 1:
            found.append(
                Problem("session_ng.E009", "SESSION_NG['MAX_ALIASES'] must be a positive integer.")
            )
        timeout = self.SOCKET_TIMEOUT
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            found.append(
                Problem(
                    "session_ng.E010", "SESSION_NG['SOCKET_TIMEOUT'] must be a positive number."
                )
            )
        header = self.HEADER_NAME
        if not isinstance(header, str) or not HEADER_NAME_RE.fullmatch(header):
            found.append(
                Problem(
                    "session_ng.E013",
                    f"SESSION_NG['HEADER_NAME'] must be an HTTP header name, not {header!r}.",
                )
            )
        param = self.ALIAS_PARAM
        if param is not None and (
            not isinstance(param, str) or not ALIAS_PARAM_RE.fullmatch(param)
        ):
            found.append(
                Problem(
                    "session_ng.E014",
                    f"SESSION_NG['ALIAS_PARAM'] must be None or a query parameter name "
                    f"matching {ALIAS_PARAM_RE.pattern}, not {param!r}.",
                )
            )
        code = self.WEBSOCKET_CLOSE_CODE
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
        interval = self.WEBSOCKET_REFRESH_INTERVAL
        if interval is not None and not _seconds(interval):
            found.append(
                Problem(
                    "session_ng.E016",
                    f"SESSION_NG['WEBSOCKET_REFRESH_INTERVAL'] must be None or a number of "
                    f"seconds, 0 or more, not {interval!r}.",
                )
            )
        period = self.RENEWAL_PERIOD
        if period is not None and not _period(period):
            found.append(
                Problem(
                    "session_ng.E018",
                    f"SESSION_NG['RENEWAL_PERIOD'] must be None or a number of seconds from 0 "
                    f"to {MAX_RENEWAL_PERIOD}, not {period!r}.",
                    "None renews at most once a minute, or once per hundredth of the idle "
                    "timeout when that is shorter.",
                )
            )
        anonymous = self.ANONYMOUS_MAX_INACTIVE
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
        if self.CLUSTER and alias:
            found.append(
                Problem(
                    "session_ng.E011",
                    "SESSION_NG['CLUSTER'] needs REDIS_URL; django-redis has no cluster client.",
                )
            )
        return found


def _seconds(value: Any) -> bool:
    """A number of seconds, 0 or more (no bool, no NaN, no infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf


def _period(value: Any) -> bool:
    """A RENEWAL_PERIOD that check E018 accepts (None aside)."""
    return _seconds(value) and value <= MAX_RENEWAL_PERIOD


def _period_ms(value: Any) -> int | None:
    # Bad values are reported by check E018; until then they mean the default.
    return int(value * 1000) if value is not None and _period(value) else None


conf = Settings()

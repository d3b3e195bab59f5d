"""The one settings object: ``SESSION_NG`` with its defaults, read live, typed.

Code reads ``conf.snapshot()``, rebuilt whenever the settings object changes so
that ``override_settings`` works in tests. Validation lives in ``checks.py``
(``settings_problems()``): the system checks report it, and the connection code
raises it as ``ImproperlyConfigured`` when it is asked to connect with bad
settings.
"""

from __future__ import annotations

import math
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
    ``raw()`` is for the checks only, which validate what was given.
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

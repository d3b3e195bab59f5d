"""Channels: the HTTP session in websocket consumers, kept alive while in use.

``SessionMiddlewareStack(inner)`` puts a session_ng store in
``scope["session"]``, chosen by the session cookie and by the alias parameter
of the websocket URL (``ws://host/ws/chat/?_s=1``), loaded with native async
calls. ``AuthMiddlewareStack(inner)`` adds ``scope["user"]`` on top.

``SessionRefreshMixin`` makes every received message keep the session alive
(one round trip, no data rewritten): a user who only chats is not logged out
mid-conversation. When the session is gone as a message arrives (logout in
another tab, deletion, expiry), the socket is closed with
``SESSION_NG["WEBSOCKET_CLOSE_CODE"]`` (default 1008, policy violation).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.consumer import SyncConsumer
from channels.sessions import CookieMiddleware
from django.conf import settings

from session_ng import repository
from session_ng.aliases import DEFAULT_ALIAS, is_valid_alias, parse_cookie
from session_ng.backends.redis import SessionStore, now_ms
from session_ng.conf import conf

Scope = dict[str, Any]


def scope_alias(scope: Scope) -> str:
    """The alias the websocket URL asks for ("0" when none or malformed)."""
    param = conf.ALIAS_PARAM
    if not param:
        return DEFAULT_ALIAS
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get(str(param))
    value = values[0] if values else None
    return value if is_valid_alias(value) else DEFAULT_ALIAS


class SessionMiddleware:
    """ASGI middleware: ``scope["session"]`` from the cookie and the alias.

    Needs channels' CookieMiddleware in front of it (SessionMiddlewareStack
    does that). It reads the session; it never sets cookies (a websocket
    cannot): HTTP requests keep going through session_ng's Django middleware.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        if "cookies" not in scope:
            raise ValueError(
                "session_ng's SessionMiddleware needs scope['cookies']: wrap it in "
                "channels.sessions.CookieMiddleware, or use SessionMiddlewareStack."
            )
        alias = scope_alias(scope)
        sessions = parse_cookie(scope["cookies"].get(settings.SESSION_COOKIE_NAME))
        store = SessionStore(sessions.get(alias))
        store._session_cache = await store.aload()
        return await self.inner(dict(scope, session=store, session_alias=alias), receive, send)


def SessionMiddlewareStack(inner: Any) -> Any:
    return CookieMiddleware(SessionMiddleware(inner))


def AuthMiddlewareStack(inner: Any) -> Any:
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))


class SessionRefreshMixin:
    """Refresh the HTTP session on every received websocket message.

    Put it first in the bases: ``class Chat(SessionRefreshMixin,
    AsyncWebsocketConsumer)``; works the same with AsyncJsonWebsocketConsumer,
    WebsocketConsumer and JsonWebsocketConsumer. ``session_refresh_interval``
    (seconds, default 0) skips refreshes closer together than that: fewer
    round trips, but a session that ended within the interval is noticed at
    the first message after it.
    """

    session_refresh_interval: float = 0.0
    scope: Scope

    def websocket_receive(self, message: dict[str, Any]) -> Any:
        # Channels' sync consumers subclass AsyncConsumer too: test for them first.
        if not isinstance(self, SyncConsumer):
            return self._session_ng_areceive(message)
        key = self._session_ng_due()
        if key is not None:
            alive = repository.run(repository.touch(conf.namespace, key, now_ms()))
            if not alive:
                return self.close(code=int(conf.WEBSOCKET_CLOSE_CODE))
        return super().websocket_receive(message)  # type: ignore[misc]

    async def _session_ng_areceive(self, message: dict[str, Any]) -> None:
        key = self._session_ng_due()
        if key is not None:
            alive = await repository.arun(repository.touch(conf.namespace, key, now_ms()))
            if not alive:
                await self.close(code=int(conf.WEBSOCKET_CLOSE_CODE))  # type: ignore[attr-defined]
                return
        await super().websocket_receive(message)  # type: ignore[misc]

    def _session_ng_due(self) -> str | None:
        """The key to refresh now, or None (no session, or refreshed recently)."""
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        if key is None:
            return None  # an anonymous socket: nothing to keep alive
        now = time.monotonic()
        last = getattr(self, "_session_ng_refreshed", None)
        if last is not None and now - last < self.session_refresh_interval:
            return None
        self._session_ng_refreshed = now
        return str(key)

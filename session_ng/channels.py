"""Channels: the HTTP session in websocket consumers, kept alive while in use.

``SessionMiddlewareStack(inner)`` puts a session_ng store in
``scope["session"]``, chosen by the session cookie and by the alias parameter
of the URL (``ws://host/ws/chat/?_s=1``), loaded with native async calls. On
HTTP it also saves the session and sets the cookie when the response starts,
as Channels' own stack does. ``AuthMiddlewareStack(inner)`` adds
``scope["user"]`` on top.

``SessionRefreshMixin`` makes every received message keep the session alive
(one round trip, no data rewritten): a user who only chats is not logged out
mid-conversation. When the session ends (logout in another tab, deletion,
rotation, expiry) the socket is closed with
``SESSION_NG["WEBSOCKET_CLOSE_CODE"]`` (default 1008, policy violation): at
once through the channel layer when there is one (see ``socket_groups``), else
at the socket's next message.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddleware as ChannelsAuthMiddleware
from channels.consumer import SyncConsumer
from channels.db import database_sync_to_async
from channels.layers import DEFAULT_CHANNEL_LAYER
from channels.sessions import CookieMiddleware
from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.utils.http import http_date

from session_ng import touch_queue
from session_ng.aliases import (
    DEFAULT_ALIAS,
    SessionManager,
    format_cookie,
    is_valid_alias,
    parse_cookie,
)
from session_ng.backends.redis import SessionStore
from session_ng.conf import conf
from session_ng.exceptions import TooManySessions
from session_ng.middleware import INTERRUPTED_MESSAGE, renewal_due
from session_ng.resolvers import Resolution
from session_ng.socket_groups import group_name
from session_ng.store import driver
from session_ng.store import sessions as store_sessions
from session_ng.users import user_pk

Scope = dict[str, Any]
logger = logging.getLogger("session_ng.channels")


def scope_alias(scope: Scope) -> str:
    """The alias the websocket URL asks for ("0" when none or malformed)."""
    param = conf.snapshot().alias_param
    if not param:
        return DEFAULT_ALIAS
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get(str(param))
    value = values[0] if values else None
    return value if is_valid_alias(value) else DEFAULT_ALIAS


class SessionMiddleware:
    """ASGI middleware: ``scope["session"]`` from the cookie and the alias.

    Needs channels' CookieMiddleware in front of it (SessionMiddlewareStack
    does that). On a websocket it only reads the session (a socket cannot set
    cookies). On HTTP (Channels' HTTP consumers) it saves the session and sets
    the cookie when the response starts, as Channels' own SessionMiddleware
    does, in session_ng's cookie format (see ``HttpSessionSaver``).
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
        if scope.get("type") == "http":
            # The browser's other sessions are checked in the load's round
            # trip, so the cookie this response sets can drop the dead ones.
            companions = [key for other, key in sessions.items() if other != alias]
            if alias not in sessions:
                # A session created under this new alias must fit MAX_ALIASES,
                # as with session_ng's middleware.
                request = ASGIRequest(scope, io.BytesIO())
                request.session = store
                resolution = Resolution(
                    alias=alias,
                    sessions=sessions,
                    had_cookie=settings.SESSION_COOKIE_NAME in scope["cookies"],
                )
                manager = SessionManager(request, resolution)
            else:
                manager = None
            store.bind_request(companions, manager)
            send = HttpSessionSaver(scope, store, alias, sessions, send, manager).send
        await store.aprefetch()
        return await self.inner(dict(scope, session=store, session_alias=alias), receive, send)


class HttpSessionSaver:
    """Saves an HTTP consumer's session and sets its cookie.

    When the response starts (and is not a server error): a session that was
    modified (or every session, with ``SESSION_SAVE_EVERY_REQUEST``) is saved
    with ``asave()``, which raises if the session was deleted meanwhile: that
    becomes Django's ``SuspiciousOperation``, as with Channels' stack. A
    session that was only read is saved as session_ng's middleware saves it
    (only what changed: in-place changes are kept, an unchanged one costs
    nothing). The cookie is set, in session_ng's format (this alias's key
    among the browser's others), when the session changed, when its renewal
    is due, or when the set of the browser's sessions changed; it is deleted
    when the last of them was emptied.
    """

    def __init__(
        self,
        scope: Scope,
        store: SessionStore,
        alias: str,
        sessions: dict[str, str],
        send: Any,
        manager: SessionManager | None = None,
    ) -> None:
        self.store = store
        self.alias = alias
        self.sessions = sessions
        self.had_cookie = settings.SESSION_COOKIE_NAME in scope["cookies"]
        self.real_send = send
        # Set for a new alias: it knows which other sessions were ended to
        # make room for this one (and drops them from the cookie).
        self.manager = manager
        self.refused: TooManySessions | None = None

    async def send(self, message: dict[str, Any]) -> Any:
        kind = message.get("type")
        if self.refused is not None:
            # The consumer's body belongs to the response it wanted to send.
            if kind == "http.response.body" and not message.get("more_body", False):
                text = str(self.refused)
                return await self.real_send({"type": kind, "body": text.encode()})
            return None
        if kind == "http.response.start" and message.get("status", 200) < 500:
            try:
                message = await self.finish(message)
            except TooManySessions as exc:
                # A new alias past MAX_ALIASES: nothing was stored; a 400 that
                # says why, as session_ng's middleware answers.
                self.refused = exc
                message = {
                    "type": kind,
                    "status": 400,
                    "headers": [(b"Content-Type", b"text/plain; charset=utf-8")],
                }
        return await self.real_send(message)

    async def finish(self, message: dict[str, Any]) -> dict[str, Any]:
        store = self.store
        explicit = store.modified or bool(settings.SESSION_SAVE_EVERY_REQUEST)
        if not (explicit or store.accessed):
            return message
        sessions = {
            alias: key
            for alias, key in self.sessions.items()
            if alias == self.alias
            or store.companions_alive is None
            or key in store.companions_alive
        }
        renew = False
        if store.is_empty():
            # Flushed, or never held anything: nothing is stored for it.
            sessions.pop(self.alias, None)
        else:
            renew = explicit or renewal_due(store)
            if renew:
                store.renew_cookie()
            try:
                if explicit:
                    await store.asave()
                else:
                    await store.asave_changes()
            except UpdateError:
                raise SuspiciousOperation(INTERRUPTED_MESSAGE) from None
            if store.session_key is not None:
                sessions[self.alias] = store.session_key
        if self.manager is not None:
            sessions = self.manager.prune(sessions)
        if not renew and sessions == self.sessions:
            return message
        message = dict(message, headers=list(message.get("headers", ())))
        if sessions:
            max_age, expires = self.cookie_age(store, several=len(sessions) > 1)
            CookieMiddleware.set_cookie(
                message,
                settings.SESSION_COOKIE_NAME,
                format_cookie(sessions),
                max_age=max_age,
                expires=expires,
                domain=settings.SESSION_COOKIE_DOMAIN,
                path=settings.SESSION_COOKIE_PATH,
                secure=settings.SESSION_COOKIE_SECURE or None,
                httponly=settings.SESSION_COOKIE_HTTPONLY or None,
                samesite=settings.SESSION_COOKIE_SAMESITE or None,
            )
        elif self.had_cookie:
            CookieMiddleware.delete_cookie(
                message,
                settings.SESSION_COOKIE_NAME,
                path=settings.SESSION_COOKIE_PATH,
                domain=settings.SESSION_COOKIE_DOMAIN,
            )
        return message

    @staticmethod
    def cookie_age(store: SessionStore, several: bool) -> tuple[int | None, str | None]:
        """(Max-Age, Expires) of the cookie: the session's own, never shorter
        than the default when the cookie carries other sessions too (the rule
        of session_ng's middleware)."""
        if store.is_empty():
            at_close, age = settings.SESSION_EXPIRE_AT_BROWSER_CLOSE, settings.SESSION_COOKIE_AGE
        else:
            at_close, age = store.get_expire_at_browser_close(), store.get_expiry_age()
        if several and settings.SESSION_EXPIRE_AT_BROWSER_CLOSE:
            at_close = True
        if at_close:
            return None, None
        if several:
            age = max(age, settings.SESSION_COOKIE_AGE)
        return int(age), http_date(time.time() + age)


async def _nothing() -> None:
    return None


def _refusable(code: int) -> bool:
    """A code some servers refuse from applications (daphne: all but 1000, 3000-4999)."""
    return code != 1000 and not 3000 <= code <= 4999


_warned_codes: set[int] = set()


def _stand_in(code: int, error: Exception) -> int:
    """The private-use code that carries ``code``'s meaning: 1008 -> 4008.

    Daphne (through Autobahn) lets an application close only with 1000 or a
    code in 3000-4999, although RFC 6455 lets a server send 1008. Rather than
    fail the close (the client would see 1011), send 4000 + code % 1000.
    """
    stand_in = 4000 + code % 1000
    if code not in _warned_codes:
        _warned_codes.add(code)
        logger.warning(
            "the ASGI server refused websocket close code %d (%s); closing with %d. "
            "Set SESSION_NG['WEBSOCKET_CLOSE_CODE'] to a code in 3000-4999 to choose.",
            code,
            error,
            stand_in,
        )
    return stand_in


async def get_user(scope: Scope) -> Any:
    """The user of ``scope["session"]``, or AnonymousUser: Channels' get_user,
    except for a session signed with a key of ``SECRET_KEY_FALLBACKS``.

    Django's own get_user accepts such a session and rotates its key; a
    websocket cannot send the browser the new key's cookie, so here it is
    accepted as it is, and the browser's next HTTP request rotates it. (Channels'
    get_user ignores the fallbacks and flushes the session: opening a socket
    after rotating SECRET_KEY would log the user out everywhere.) A session
    whose hash matches no key is flushed, as Django does; one whose user id
    is unreadable is only treated as anonymous.
    """
    return await database_sync_to_async(_user_of)(scope)


def _user_of(scope: Scope) -> Any:
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
        load_backend,
    )
    from django.contrib.auth.models import AnonymousUser
    from django.utils.crypto import constant_time_compare

    session = scope["session"]
    user_id = user_pk(get_user_model(), session.get(SESSION_KEY))
    backend_path = session.get(BACKEND_SESSION_KEY)
    if user_id is None or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    user = load_backend(backend_path).get_user(user_id)
    if user is None:
        return AnonymousUser()
    if hasattr(user, "get_session_auth_hash"):
        stored = session.get(HASH_SESSION_KEY)
        verified = isinstance(stored, str) and (
            constant_time_compare(stored, user.get_session_auth_hash())
            or any(
                constant_time_compare(stored, fallback)
                for fallback in user.get_session_auth_fallback_hash()
            )
        )
        if not verified:
            session.flush()
            return AnonymousUser()
    return user


class AuthMiddleware(ChannelsAuthMiddleware):  # type: ignore[misc]
    """Channels' AuthMiddleware with ``get_user`` above."""

    async def resolve_scope(self, scope: Scope) -> None:
        scope["user"]._wrapped = await get_user(scope)


def SessionMiddlewareStack(inner: Any) -> Any:
    return CookieMiddleware(SessionMiddleware(inner))


def AuthMiddlewareStack(inner: Any) -> Any:
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))


class SessionRefreshMixin:
    """Keep the HTTP session alive while its websocket is used.

    Put it first in the bases: ``class Chat(SessionRefreshMixin,
    AsyncWebsocketConsumer)``; works the same with AsyncJsonWebsocketConsumer,
    WebsocketConsumer and JsonWebsocketConsumer. A received message refreshes
    the session (renews its idle timer and checks it is alive) when the last
    refresh is ``session_refresh_interval`` seconds old: by default
    (``SESSION_NG["WEBSOCKET_REFRESH_INTERVAL"]`` None) the session's renewal
    period, the rule HTTP reads follow. With a channel layer, a socket closes
    as soon as its session ends; without one, at the first refresh after the
    end, so within a period of it.
    """

    # None: SESSION_NG["WEBSOCKET_REFRESH_INTERVAL"], whose None is the
    # session's renewal period; 0 refreshes on every message.
    session_refresh_interval: float | None = None
    scope: Scope
    groups: list[str] | None

    def websocket_connect(self, message: dict[str, Any]) -> Any:
        # Join the session's group before the consumer's own connect(), so an
        # end that happens from then on reaches this socket. Channels' own
        # websocket_connect adds self.groups and its websocket_disconnect
        # discards them.
        group = self._session_ng_group()
        self._session_ng_joined = group
        self._session_ng_joined_at = time.monotonic()
        self._session_ng_key = getattr(self.scope.get("session"), "session_key", None)
        if group is not None:
            self.groups = [*(self.groups or []), group]
        if not isinstance(self, SyncConsumer):
            return self._session_ng_aconnect(message)
        super().websocket_connect(message)  # type: ignore[misc]
        # connect() may have logged the socket in (a token, say): follow the key.
        self._session_ng_follow()
        return None

    async def _session_ng_aconnect(self, message: dict[str, Any]) -> None:
        await super().websocket_connect(message)  # type: ignore[misc]
        await self._session_ng_follow()

    def _session_ng_group(self) -> str | None:
        """The session's group, or None (anonymous, or no layer to join)."""
        key = getattr(self.scope.get("session"), "session_key", None)
        if key is None:
            return None
        # Ends are sent on the default layer: a consumer on another one would
        # never hear them (it still closes at its next message).
        layer = getattr(self, "channel_layer", None)
        if layer is None or getattr(self, "channel_layer_alias", None) != DEFAULT_CHANNEL_LAYER:
            return None
        # A layer without groups cannot be joined (Channels would refuse the
        # connection): such sockets close at their next message instead.
        if "groups" not in getattr(layer, "extensions", ()):
            return None
        return group_name(str(key))

    def session_ng_end(self, message: dict[str, Any]) -> Any:
        """The session ended (``socket_groups``): close the socket.

        Unless this socket rotated the key itself (``channels.auth.login()``
        over the socket calls ``cycle_key()``): its session lives on under the
        new key, so the socket moves to the new key's group instead.
        """
        joined = getattr(self, "_session_ng_joined", None)
        ended = message.get("group")
        if getattr(self, "_session_ng_closed", False) or (ended is not None and ended != joined):
            # The end of a key this socket has moved away from: nothing to do
            # (an async consumer's handler must still return an awaitable).
            return None if isinstance(self, SyncConsumer) else _nothing()
        current = self._session_ng_group()
        if current is not None and current != joined:
            return self._session_ng_move(joined, current)
        return self._session_ng_close()

    def _session_ng_followed(self) -> tuple[str | None, str] | None:
        """(old group, new group) when the socket's session key changed since
        it joined (it logged in over itself), else None. Cheap: compares keys."""
        key = getattr(self.scope.get("session"), "session_key", None)
        if key is None or key == getattr(self, "_session_ng_key", None):
            return None
        self._session_ng_key = key
        new = self._session_ng_group()
        joined = getattr(self, "_session_ng_joined", None)
        if new is None or new == joined:
            return None
        return joined, new

    def _session_ng_follow(self) -> Any:
        """Move to the new key's group if the key changed since the socket
        joined (awaitable for an async consumer, as ``_session_ng_move``)."""
        moved = self._session_ng_followed()
        if moved is None:
            return None if isinstance(self, SyncConsumer) else _nothing()
        return self._session_ng_move(*moved)

    def _session_ng_move(self, old: str | None, new: str) -> Any:
        """Leave the old key's group for the new key's."""
        if not isinstance(self, SyncConsumer):
            return self._session_ng_amove(old, new)
        from asgiref.sync import async_to_sync

        self._session_ng_moved(old, new)
        layer = self.channel_layer
        if old is not None:
            async_to_sync(layer.group_discard)(old, self.channel_name)
        async_to_sync(layer.group_add)(new, self.channel_name)
        return None

    async def _session_ng_amove(self, old: str | None, new: str) -> None:
        self._session_ng_moved(old, new)
        layer = self.channel_layer  # type: ignore[attr-defined]
        if old is not None:
            await layer.group_discard(old, self.channel_name)  # type: ignore[attr-defined]
        await layer.group_add(new, self.channel_name)  # type: ignore[attr-defined]

    def _session_ng_moved(self, old: str | None, new: str) -> None:
        self._session_ng_joined = new
        self._session_ng_joined_at = time.monotonic()
        self._session_ng_key = getattr(self.scope.get("session"), "session_key", None)
        # Channels' websocket_disconnect discards these.
        self.groups = [g for g in (self.groups or []) if g != old] + [new]

    def _session_ng_close(self) -> Any:
        """Close with WEBSOCKET_CLOSE_CODE, or its stand-in if the server refuses it.

        Once: from then on the socket's messages are dropped unhandled (the
        server may still deliver frames that were on their way), and a second
        end does nothing (a server may refuse to close twice).
        """
        code = conf.snapshot().websocket_close_code
        if not isinstance(self, SyncConsumer):
            return self._session_ng_aclose(code)
        if getattr(self, "_session_ng_closed", False):
            return None
        self._session_ng_closed = True
        try:
            self.close(code=code)
        except Exception as exc:
            if not _refusable(code):
                raise
            self.close(code=_stand_in(code, exc))
        return None

    async def _session_ng_aclose(self, code: int) -> None:
        if getattr(self, "_session_ng_closed", False):
            return
        self._session_ng_closed = True
        try:
            await self.close(code=code)  # type: ignore[attr-defined]
        except Exception as exc:
            if not _refusable(code):
                raise
            await self.close(code=_stand_in(code, exc))  # type: ignore[attr-defined]

    def websocket_receive(self, message: dict[str, Any]) -> Any:
        # Channels' sync consumers subclass AsyncConsumer too: test for them first.
        if not isinstance(self, SyncConsumer):
            return self._session_ng_areceive(message)
        if getattr(self, "_session_ng_closed", False):
            return None  # closed because the session ended: not handled
        key = self._session_ng_due()
        if key is not None:
            alive = driver.run(store_sessions.touch_now([key], force=True))[0]
            if not alive:
                return self._session_ng_close()
            stale = self._session_ng_stale_group()
            if stale is not None:
                from asgiref.sync import async_to_sync

                async_to_sync(self.channel_layer.group_add)(stale, self.channel_name)
        super().websocket_receive(message)  # type: ignore[misc]
        # The handler may have logged in over the socket (a new key): follow it.
        self._session_ng_follow()
        return None

    async def _session_ng_areceive(self, message: dict[str, Any]) -> None:
        if getattr(self, "_session_ng_closed", False):
            return  # closed because the session ended: not handled
        key = self._session_ng_due()
        if key is not None:
            alive = await touch_queue.queue().touch(key)
            if not alive:
                await self._session_ng_aclose(conf.snapshot().websocket_close_code)
                return
            stale = self._session_ng_stale_group()
            if stale is not None:
                await self.channel_layer.group_add(stale, self.channel_name)  # type: ignore[attr-defined]
        await super().websocket_receive(message)  # type: ignore[misc]
        await self._session_ng_follow()

    def _session_ng_stale_group(self) -> str | None:
        """The joined group, when the layer may be about to forget this socket
        in it (channels_redis drops members ``group_expiry`` seconds, a day by
        default, after they joined): joining again renews the membership."""
        joined = getattr(self, "_session_ng_joined", None)
        if joined is None:
            return None
        layer = getattr(self, "channel_layer", None)
        expiry = getattr(layer, "group_expiry", None)
        if not isinstance(expiry, int | float) or isinstance(expiry, bool):
            return None  # a layer whose groups do not expire
        now = time.monotonic()
        if now - getattr(self, "_session_ng_joined_at", now) < expiry / 2:
            return None
        self._session_ng_joined_at = now
        return str(joined)

    def _session_ng_due(self) -> str | None:
        """The key to refresh now, or None (no session, or refreshed recently).

        On every message: the interval is worked out at each refresh, not here.
        """
        now = time.monotonic()
        if now < getattr(self, "_session_ng_next", 0.0):
            return None
        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        if key is None:
            return None  # an anonymous socket: nothing to keep alive
        interval = self.session_refresh_interval
        if interval is None:
            interval = conf.snapshot().websocket_refresh_interval
        if interval is None:
            period = getattr(session, "renewal_period", None)
            interval = period() if callable(period) else 0.0
        self._session_ng_next = now + float(interval)
        return str(key)

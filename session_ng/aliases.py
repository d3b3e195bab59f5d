"""Several sessions in one browser: a request's alias map (``SessionManager``).

The cookie format and the alias rules are pure functions in ``session_ng.ids``,
re-exported here, where they have always been importable from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from session_ng.backends.redis import SessionStore
from session_ng.conf import conf
from session_ng.exceptions import TooManySessions
from session_ng.ids import (
    ALIAS_RE,
    ALIAS_SEPARATOR,
    DEFAULT_ALIAS,
    MAX_PAIRS_PARSED,
    PAIR_SEPARATOR,
    alias_order,
    encode_url,
    format_cookie,
    is_valid_alias,
    next_alias,
    param_name,
    parse_cookie,
    query_without,
)
from session_ng.resolvers import Resolution
from session_ng.store import driver
from session_ng.store import sessions as store_sessions
from session_ng.store.sessions import Glance

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "ALIAS_RE",
    "ALIAS_SEPARATOR",
    "DEFAULT_ALIAS",
    "MAX_PAIRS_PARSED",
    "PAIR_SEPARATOR",
    "Resolution",
    "SessionManager",
    "alias_order",
    "encode_url",
    "format_cookie",
    "is_valid_alias",
    "next_alias",
    "param_name",
    "parse_cookie",
    "query_without",
]


class SessionManager:
    """``request.session_manager``: this browser's sessions, by alias."""

    def __init__(self, request: HttpRequest, resolution: Resolution) -> None:
        self.request = request
        self.resolution = resolution
        # Aliases whose key turned out to be unknown or expired; pruned from
        # the cookie on this response.
        self._dead: set[str] = set()
        # Aliases whose anonymous sessions were ended to make room for a new
        # one (see check_new_alias); pruned from the cookie too.
        self._evicted: set[str] = set()
        # Whether anything asked about the browser's sessions (an account
        # switcher): the response then depends on the cookie, and varies on it.
        self.consulted = False

    @property
    def current_alias(self) -> str:
        return self.resolution.alias

    def session_keys(self) -> dict[str, str]:
        """alias -> session key, as the response's cookie will hold them."""
        self.consulted = True
        keys = self.prune(self.resolution.sessions)
        # The current session's key as it is now: rotated by login, or None
        # once flushed or found expired.
        current = self.request.session.session_key
        if current is not None:
            keys[self.current_alias] = current
        else:
            keys.pop(self.current_alias, None)
        return keys

    def new_alias(self) -> str:
        """The first alias with no session: for an "add another account" link."""
        return next_alias(set(self.session_keys()))

    def encode_url(self, url: str, alias: str | int | None = None) -> str:
        """``url`` under ``alias`` (this request's alias by default).

        A link to the default alias from another alias's page says ``_s=0``
        explicitly: without it, the browser's Referer would keep the link on
        the page's own alias.
        """
        param = conf.snapshot().alias_param
        if not param:
            return url
        target = self.current_alias if alias is None else alias
        return encode_url(
            url, str(param), target, explicit_default=self.current_alias != DEFAULT_ALIAS
        )

    def names_alias(self, url: str) -> bool:
        """Whether ``url``'s query already has the alias parameter."""
        param = conf.snapshot().alias_param
        query = url.partition("#")[0].partition("?")[2]
        return bool(param) and any(param_name(p) == param for p in query.split("&") if p)

    # --- the MAX_ALIASES limit ------------------------------------------------

    def check_new_alias(self) -> None:
        """Make room for a session under this new alias, or raise TooManySessions.

        ``MAX_ALIASES`` counts the browser's sessions, this new one included.
        When the cookie looks full, the others are looked up (one round trip):
        dead ones do not count, and anonymous ones are ended, least recently
        used first, to make room. Only signed-in sessions can refuse a new one.
        """
        evict = self._room_needed(None)
        if evict is None:
            return
        evict = self._room_needed(self.glances())
        for key in evict or ():
            self.request.session.delete(key)

    async def acheck_new_alias(self) -> None:
        evict = self._room_needed(None)
        if evict is None:
            return
        evict = self._room_needed(await self.aglances())
        for key in evict or ():
            await self.request.session.adelete(key)

    def _room_needed(self, seen: dict[str, Glance] | None) -> list[str] | None:
        """The keys to end so that one more session fits; None when the
        cookie alone shows there is room (``seen`` None: not looked up yet)."""
        limit = conf.snapshot().max_aliases
        current = self.current_alias
        if seen is None:
            others = [a for a in self.session_keys() if a != current]
            return None if len(others) < limit else []
        alive = {a: g for a, g in seen.items() if a != current}
        excess = len(alive) - limit + 1
        if excess <= 0:
            return []
        anonymous = sorted(
            (glance.accessed, alias) for alias, glance in alive.items() if glance.user is None
        )
        if len(anonymous) < excess:
            signed_in = len(alive) - len(anonymous)
            raise TooManySessions(
                "This browser already has the most signed-in accounts allowed "
                f"({signed_in}). Sign out of one of them, then try again."
            )
        keys = self.session_keys()
        chosen = [alias for _, alias in anonymous[:excess]]
        self._evicted.update(chosen)
        return [keys[alias] for alias in chosen]

    # --- the other sessions ---------------------------------------------------

    def users(self) -> dict[str, str | None]:
        """alias -> logged-in user id (None if anonymous), live sessions only.

        One round trip for all aliases; aliases found dead are pruned from the
        cookie on this response.
        """
        return {alias: glance.user for alias, glance in self.glances().items()}

    async def ausers(self) -> dict[str, str | None]:
        return {alias: glance.user for alias, glance in (await self.aglances()).items()}

    def glances(self) -> dict[str, Glance]:
        """alias -> what a look at each live session shows (one round trip)."""
        keys = self.session_keys()
        if not keys:
            return {}
        # Through the store when it is session_ng's, so an outage is flagged
        # for the middleware's 503 like any other.
        session = self.request.session
        if isinstance(session, SessionStore):
            return self._sort_out(keys, session.glance(list(keys.values())))
        return self._sort_out(
            keys, driver.run(store_sessions.peek(conf.snapshot().namespace, list(keys.values())))
        )

    async def aglances(self) -> dict[str, Glance]:
        keys = self.session_keys()
        if not keys:
            return {}
        session = self.request.session
        if isinstance(session, SessionStore):
            return self._sort_out(keys, await session.aglance(list(keys.values())))
        return self._sort_out(
            keys,
            await driver.arun(store_sessions.peek(conf.snapshot().namespace, list(keys.values()))),
        )

    def _sort_out(self, keys: dict[str, str], alive: dict[str, Glance]) -> dict[str, Glance]:
        result: dict[str, Glance] = {}
        for alias, key in keys.items():
            if key in alive:
                result[alias] = alive[key]
            elif alias != self.current_alias:
                self._dead.add(alias)
        return result

    def prune(self, sessions: dict[str, str]) -> dict[str, str]:
        """Drop the other aliases known to be dead (found so by glances(), or
        by the store's load, which checks them in the same round trip) or
        ended to make room, and keep at most ``MAX_ALIASES`` (the current
        alias first, then the others in alias order): no cookie names more."""
        session = self.request.session
        alive = session.companions_alive if isinstance(session, SessionStore) else None
        current = self.current_alias
        gone = self._dead | self._evicted
        kept = {
            a: k
            for a, k in sessions.items()
            if a == current or (a not in gone and (alive is None or k in alive))
        }
        limit = conf.snapshot().max_aliases
        if len(kept) > limit:
            order = sorted((a for a in kept if a != current), key=alias_order)
            allowed = set(order[: limit - (1 if current in kept else 0)]) | {current}
            kept = {a: k for a, k in kept.items() if a in allowed}
        return kept

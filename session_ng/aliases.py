"""Several sessions in one browser: the alias map and its cookie format.

A browser's sessions travel in the one session cookie. With only the default
alias the value is the bare session key, exactly what Django's own middleware
writes, so existing cookies keep working both ways. With several, the value is
``alias.key`` pairs joined by ``~``, for example ``0.<key>~1.<key>~work.<key>``:
``.`` and ``~`` are cookie-safe (RFC 6265 cookie-octets, no quoting) and can
appear in neither an alias (``[A-Za-z0-9_-]``) nor a key (``[a-z0-9]``).

Anything that does not parse is dropped, pair by pair; nothing from the cookie
reaches Redis unless it is a well-formed key.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, TypeGuard
from urllib.parse import quote, unquote_plus

from session_ng import repository
from session_ng.conf import conf
from session_ng.exceptions import TooManySessions
from session_ng.keys import is_valid_session_key

if TYPE_CHECKING:
    from django.http import HttpRequest

    from session_ng.resolvers import Resolution

DEFAULT_ALIAS = "0"
ALIAS_RE = re.compile(r"[A-Za-z0-9_-]{1,50}")
PAIR_SEPARATOR = "~"
ALIAS_SEPARATOR = "."
# Bound the work a hostile cookie can cause (browsers cap a cookie at ~4 KB).
MAX_PAIRS_PARSED = 64


def is_valid_alias(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and ALIAS_RE.fullmatch(value) is not None


def parse_cookie(value: str | None) -> dict[str, str]:
    """The alias -> session key map a cookie value holds (first pair wins)."""
    if not value:
        return {}
    if is_valid_session_key(value):
        return {DEFAULT_ALIAS: value}
    found: dict[str, str] = {}
    for pair in value.split(PAIR_SEPARATOR, MAX_PAIRS_PARSED)[:MAX_PAIRS_PARSED]:
        alias, sep, key = pair.partition(ALIAS_SEPARATOR)
        if sep and is_valid_alias(alias) and is_valid_session_key(key) and alias not in found:
            found[alias] = key
    return found


def format_cookie(sessions: dict[str, str]) -> str:
    """The cookie value for an alias map ("" for none)."""
    if not sessions:
        return ""
    if list(sessions) == [DEFAULT_ALIAS]:
        return sessions[DEFAULT_ALIAS]
    return PAIR_SEPARATOR.join(
        f"{alias}{ALIAS_SEPARATOR}{key}" for alias, key in sorted(sessions.items(), key=_order)
    )


def _order(item: tuple[str, str]) -> tuple[int, int, str]:
    # The default first, then numeric aliases in number order, then the rest.
    alias = item[0]
    if alias == DEFAULT_ALIAS:
        return (0, 0, "")
    if alias.isdigit():
        return (1, int(alias), alias)
    return (2, 0, alias)


def next_alias(used: set[str]) -> str:
    """The first unused numeric alias: "0", "1", "2", ..."""
    n = 0
    while str(n) in used:
        n += 1
    return str(n)


def encode_url(url: str, param: str, alias: str) -> str:
    """``url`` with the alias parameter added, replaced, or (default) removed.

    Other query parameters are kept byte for byte and in order, and so is the
    fragment; the alias is URL-encoded. An alias that is not valid is treated
    as the default, so hostile input is never reflected into a link.
    """
    base, hash_mark, fragment = url.partition("#")
    path, _, query = base.partition("?")
    kept = [part for part in query.split("&") if part and _name(part) != param]
    if alias != DEFAULT_ALIAS and is_valid_alias(alias):
        kept.append(f"{quote(param, safe='')}={quote(alias, safe='')}")
    if kept:
        path += "?" + "&".join(kept)
    return path + hash_mark + fragment


def _name(part: str) -> str:
    return unquote_plus(part.partition("=")[0])


class SessionManager:
    """``request.session_manager``: this browser's sessions, by alias."""

    def __init__(self, request: HttpRequest, resolution: Resolution) -> None:
        self.request = request
        self.resolution = resolution
        # Aliases whose key turned out to be unknown or expired; pruned from
        # the cookie on this response.
        self._dead: set[str] = set()

    @property
    def current_alias(self) -> str:
        return self.resolution.alias

    def session_keys(self) -> dict[str, str]:
        """alias -> session key, as the response's cookie will hold them."""
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

    def encode_url(self, url: str, alias: str | None = None) -> str:
        param = conf.ALIAS_PARAM
        if not param:
            return url
        return encode_url(url, str(param), self.current_alias if alias is None else alias)

    def names_alias(self, url: str) -> bool:
        """Whether ``url``'s query already has the alias parameter."""
        param = conf.ALIAS_PARAM
        query = url.partition("#")[0].partition("?")[2]
        return bool(param) and any(_name(p) == param for p in query.split("&") if p)

    def check_new_alias(self) -> None:
        """Raise TooManySessions if a session under this new alias would not fit.

        Dead aliases do not count: when the cookie looks full, the others are
        looked up (one round trip) before refusing.
        """
        limit = int(conf.MAX_ALIASES)
        others = {a for a in self.session_keys() if a != self.current_alias}
        if len(others) >= limit:
            others = {a for a in self.users() if a != self.current_alias}
        if len(others) >= limit:
            raise TooManySessions(f"more than {limit} sessions in one browser")

    async def acheck_new_alias(self) -> None:
        limit = int(conf.MAX_ALIASES)
        others = {a for a in self.session_keys() if a != self.current_alias}
        if len(others) >= limit:
            others = {a for a in await self.ausers() if a != self.current_alias}
        if len(others) >= limit:
            raise TooManySessions(f"more than {limit} sessions in one browser")

    def users(self) -> dict[str, str | None]:
        """alias -> logged-in user id (None if anonymous), live sessions only.

        One round trip for all aliases; aliases found dead are pruned from the
        cookie on this response.
        """
        keys = self.session_keys()
        if not keys:
            return {}
        # Through the store when it is session_ng's, so an outage is flagged
        # for the middleware's 503 like any other.
        run = getattr(self.request.session, "_run", repository.run)
        return self._sort_out(keys, run(repository.peek(conf.namespace, list(keys.values()))))

    async def ausers(self) -> dict[str, str | None]:
        keys = self.session_keys()
        if not keys:
            return {}
        arun = getattr(self.request.session, "_arun", repository.arun)
        return self._sort_out(
            keys, await arun(repository.peek(conf.namespace, list(keys.values())))
        )

    def _sort_out(
        self, keys: dict[str, str], alive: dict[str, str | None]
    ) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        for alias, key in keys.items():
            if key in alive:
                result[alias] = alive[key]
            elif alias != self.current_alias:
                self._dead.add(alias)
        return result

    def prune(self, sessions: dict[str, str]) -> dict[str, str]:
        """Drop the other aliases known to be dead: found so by users(), or by
        the store's load, which checks them in the same round trip."""
        alive = getattr(self.request.session, "companions_alive", None)
        return {
            a: k
            for a, k in sessions.items()
            if a == self.current_alias or (a not in self._dead and (alive is None or k in alive))
        }

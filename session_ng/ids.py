"""Aliases and their cookie format, as pure functions: no I/O, no Django request.

A browser's sessions travel in the one session cookie. With only the default
alias the value is the bare session key, exactly what Django's own middleware
writes, so existing cookies keep working both ways. With several, the value is
``alias.key`` pairs joined by ``~``, for example ``0.<key>~1.<key>~work.<key>``:
``.`` and ``~`` are cookie-safe (RFC 6265 cookie-octets, no quoting) and can
appear in neither an alias (``[A-Za-z0-9_-]``) nor a key (``[a-z0-9]``).

Anything that does not parse is dropped, pair by pair; nothing from the cookie
reaches Redis unless it is a well-formed key. The resolvers (which id a
request names) and the alias map of a request (``aliases.SessionManager``)
both build on this module, which imports neither.
"""

from __future__ import annotations

import re
from typing import TypeGuard
from urllib.parse import quote, unquote_plus

from session_ng.keys import is_valid_session_key

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
    return alias_order(item[0])


def alias_order(alias: str) -> tuple[int, int, str]:
    """Sort key: the default first, then numeric aliases in number order, then the rest."""
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


def encode_url(url: str, param: str, alias: str | int, explicit_default: bool = False) -> str:
    """``url`` with the alias parameter added, replaced, or (default) removed.

    Other query parameters are kept byte for byte and in order (empty ones
    too), and so is the fragment; the alias is URL-encoded. An int alias is
    its decimal form. An alias that is not valid is treated as the default,
    so hostile input is never reflected into a link. With
    ``explicit_default`` the default alias is written out (``_s=0``) rather
    than left implicit: a link from another alias's page needs it, since a
    request without the parameter inherits its Referer's alias.
    """
    if isinstance(alias, int) and not isinstance(alias, bool) and alias >= 0:
        alias = str(alias)
    base, hash_mark, fragment = url.partition("#")
    path, _, query = base.partition("?")
    kept = query_without(query, param)
    if not is_valid_alias(alias):
        alias = DEFAULT_ALIAS
    if alias != DEFAULT_ALIAS or explicit_default:
        kept.append(f"{quote(param, safe='')}={quote(alias, safe='')}")
    if kept:
        path += "?" + "&".join(kept)
    return path + hash_mark + fragment


def query_without(query: str, param: str) -> list[str]:
    """The segments of a query string, minus those that name ``param``
    (byte for byte, empty ones included)."""
    return [part for part in query.split("&") if param_name(part) != param] if query else []


def param_name(part: str) -> str:
    """The (decoded) name of one query-string segment."""
    return unquote_plus(part.partition("=")[0])

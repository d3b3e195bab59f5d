"""Where a request's session id comes from: the cookie, a header, or both.

``ID_RESOLVERS`` lists them in order; the first that yields a well-formed key
wins. The cookie carries every alias of a browser (see ``aliases``); the
header carries one session, for clients that are not browsers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.http import HttpRequest

from session_ng.aliases import DEFAULT_ALIAS, is_valid_alias, parse_cookie
from session_ng.conf import conf
from session_ng.keys import is_valid_session_key

COOKIE = "cookie"
HEADER = "header"


@dataclass
class Resolution:
    """What the request brought."""

    alias: str = DEFAULT_ALIAS
    # alias -> key, as the cookie had them (well-formed ones only).
    sessions: dict[str, str] = field(default_factory=dict)
    # Which resolver the current session's key came from, if any.
    source: str | None = None
    had_cookie: bool = False
    # The request carried the header at all (even empty): a client that
    # speaks the header, which no cross-site form can imitate.
    header_present: bool = False
    header_key: str | None = None


def current_alias(request: HttpRequest, param: str | None = None) -> str:
    if param is None:
        param = conf.snapshot().alias_param
        if param is None:
            return DEFAULT_ALIAS
    query = request.META.get("QUERY_STRING", "")
    if param not in query and "%" not in query:
        # Most requests name no alias: no need to parse the query string.
        # (With a "%" the name may be percent-encoded: parse it.)
        return DEFAULT_ALIAS
    value = request.GET.get(param)
    # Anything malformed is the default alias; it is never echoed back.
    return value if is_valid_alias(value) else DEFAULT_ALIAS


def resolve(request: HttpRequest) -> Resolution:
    snap = conf.snapshot()
    alias = DEFAULT_ALIAS if snap.alias_param is None else current_alias(request, snap.alias_param)
    result = Resolution(alias=alias)
    cookie_value = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    result.had_cookie = cookie_value is not None
    resolvers = snap.id_resolvers
    if COOKIE in resolvers:
        result.sessions = parse_cookie(cookie_value)
    if HEADER in resolvers:
        # request.META, not request.headers: that builds a dict of them all.
        value = request.META.get(snap.header_meta_key)
        result.header_present = value is not None
        if is_valid_session_key(value):
            result.header_key = value
    for resolver in resolvers:
        if resolver == COOKIE and result.alias in result.sessions:
            result.source = COOKIE
            break
        if resolver == HEADER and result.header_key is not None:
            # A header names one session; it is the default alias's.
            result.alias = DEFAULT_ALIAS
            result.source = HEADER
            break
    if result.source is None and result.header_present and not result.sessions:
        # A header client starting out (placeholder value): its session will
        # travel in the header, which names the default alias.
        result.alias = DEFAULT_ALIAS
    return result


def current_key(resolution: Resolution) -> str | None:
    if resolution.source == HEADER:
        return resolution.header_key
    if resolution.source == COOKIE:
        return resolution.sessions[resolution.alias]
    return None

"""Where a request's session id comes from: the cookie, a header, or both.

``ID_RESOLVERS`` lists the ones a site accepts. The cookie carries every alias
of a browser (see ``aliases``); the header carries one session, for clients
that are not browsers. A request that sends the header is such a client: the
header alone names its session, and its cookie is neither read nor written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest

from session_ng.conf import conf
from session_ng.ids import DEFAULT_ALIAS, is_valid_alias, parse_cookie
from session_ng.keys import is_valid_session_key

COOKIE = "cookie"
HEADER = "header"

# Where the request's alias came from (Resolution.alias_source).
FROM_URL = "url"
FROM_REFERER = "referer"
# Referers longer than this are not parsed for an alias (browsers cap them
# at 4 KB; this bounds the work a hostile header can cause).
MAX_REFERER_LENGTH = 4096


@dataclass
class Resolution:
    """What the request brought."""

    alias: str = DEFAULT_ALIAS
    # FROM_URL (the query string named it), FROM_REFERER (inherited from the
    # same-origin page the request came from), or None (the default alias).
    alias_source: str | None = None
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
    """The alias the request's own URL names (the default if none)."""
    if param is None:
        param = conf.snapshot().alias_param
        if param is None:
            return DEFAULT_ALIAS
    return url_alias(request, param) or DEFAULT_ALIAS


def url_alias(request: HttpRequest, param: str) -> str | None:
    """The alias the query string names, or None when it names none (or a
    malformed one, which is never echoed back)."""
    query = request.META.get("QUERY_STRING", "")
    if param not in query and "%" not in query:
        # Most requests name no alias: no need to parse the query string.
        # (With a "%" the name may be percent-encoded: parse it.)
        return None
    value = request.GET.get(param)
    return value if is_valid_alias(value) else None


def referer_alias(request: HttpRequest, param: str) -> str | None:
    """The alias named by the request's Referer, if that is a page of this
    same origin (scheme, host and port); None otherwise.

    Browsers send it by default for same-origin requests (Django's default
    SECURE_REFERRER_POLICY is "same-origin"), so links and forms of apps that
    never heard of aliases (the admin) stay on their tab's account. A
    cross-origin Referer is ignored: another site cannot choose the account.
    """
    referer = request.META.get("HTTP_REFERER")
    if not referer or (param not in referer and "%" not in referer):
        return None
    if len(referer) > MAX_REFERER_LENGTH:
        return None
    try:
        parts = urlsplit(referer)
        host = request.get_host()
    except (ValueError, DisallowedHost):
        return None
    if parts.scheme != request.scheme or parts.netloc.lower() != host.lower():
        return None
    values = parse_qs(parts.query, keep_blank_values=True).get(param)
    if not values:
        return None
    # The last value, as request.GET.get() reads a URL's own parameter.
    return values[-1] if is_valid_alias(values[-1]) else None


def resolve(request: HttpRequest) -> Resolution:
    snap = conf.snapshot()
    result = Resolution()
    if snap.alias_param is not None:
        alias = url_alias(request, snap.alias_param)
        if alias is not None:
            result.alias, result.alias_source = alias, FROM_URL
        else:
            alias = referer_alias(request, snap.alias_param)
            if alias is not None:
                result.alias, result.alias_source = alias, FROM_REFERER
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
    if result.header_present:
        # A client that sends the header (even a placeholder) is a header
        # client, whatever its cookie jar holds: its session is the one the
        # header names, in the default alias, and its response carries the id
        # in the header, never in a cookie (a jar would keep that cookie and
        # send it along, and with it CSRF checks no API client passes). No
        # cross-site form can send a header, so no forged request can choose
        # its session this way either.
        result.alias, result.alias_source = DEFAULT_ALIAS, None
        result.sessions = {}
        if result.header_key is not None:
            result.source = HEADER
        return result
    if COOKIE in resolvers and result.alias in result.sessions:
        result.source = COOKIE
    return result


def current_key(resolution: Resolution) -> str | None:
    if resolution.source == HEADER:
        return resolution.header_key
    if resolution.source == COOKIE:
        return resolution.sessions[resolution.alias]
    return None

"""``{% load session_ng %}{% session_url "/inbox" alias %}``."""

from __future__ import annotations

from typing import Any

from django import template

from session_ng.aliases import encode_url
from session_ng.conf import conf

register = template.Library()


@register.simple_tag(takes_context=True)
def session_url(context: dict[str, Any], url: str, alias: Any = None) -> str:
    """``url`` for the session under ``alias`` (default: the current one).

    Autoescaped like any other tag output. Needs the ``request`` context
    processor; without session_ng's middleware, the alias is used as given.
    """
    request = context.get("request")
    manager = getattr(request, "session_manager", None)
    if manager is not None:
        return str(manager.encode_url(url, None if alias is None else str(alias)))
    param = conf.snapshot().alias_param
    if not param or alias is None:
        return url
    return encode_url(url, str(param), str(alias))

"""{% session_url %} inside a request, outside one, and escaping."""

from __future__ import annotations

from django.template import Context, Template
from django.test import RequestFactory

from session_ng.middleware import SessionMiddleware

TAG = "{% load session_ng %}{% session_url url alias %}"


def render(request: object, url: str, alias: object = None) -> str:
    return Template(TAG).render(Context({"request": request, "url": url, "alias": alias}))


def request_under(alias: str | None) -> object:
    request = RequestFactory().get("/" if alias is None else f"/?_s={alias}")
    SessionMiddleware(lambda r: None).process_request(request)  # type: ignore[arg-type,return-value]
    return request


def test_current_alias_by_default() -> None:
    assert render(request_under("2"), "/inbox") == "/inbox?_s=2"
    assert render(request_under(None), "/inbox?_s=2") == "/inbox"


def test_an_explicit_alias_wins() -> None:
    # From another alias's page, a link to the default account says so: a
    # link without the parameter would inherit the page's alias through the
    # Referer.
    assert render(request_under("2"), "/inbox", "0") == "/inbox?_s=0"
    assert render(request_under(None), "/inbox", "0") == "/inbox"
    assert render(request_under(None), "/inbox", 3) == "/inbox?_s=3"


def test_without_the_middleware_the_alias_is_used_as_given() -> None:
    assert render(None, "/inbox", "1") == "/inbox?_s=1"
    assert render(None, "/inbox") == "/inbox"


def test_output_is_autoescaped() -> None:
    html = render(request_under("1"), '/a?x="<b>"&y=1')
    assert html == "/a?x=&quot;&lt;b&gt;&quot;&amp;y=1&amp;_s=1"


def test_aliases_off_leaves_urls_alone(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "ALIAS_PARAM": None}
    assert render(request_under(None), "/inbox?_s=4", "2") == "/inbox?_s=4"

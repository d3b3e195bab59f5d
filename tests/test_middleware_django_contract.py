"""Django's own ``SessionMiddlewareTests``, run against session_ng's middleware.

The Django tests build ``SessionMiddleware`` by its module-level name; we bind
that name to ours for the duration of each test. Redis is the real one, and
SESSION_NG has its defaults (the cookie resolver only), where session_ng's
middleware promises to do what Django's does.
"""

from __future__ import annotations

import pytest
import sessions_tests.tests as django_tests
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from session_ng.backends.redis import SessionStore
from session_ng.middleware import SessionMiddleware


@pytest.fixture(autouse=True)
def _use_session_ng_middleware(monkeypatch: pytest.MonkeyPatch, settings, redis_server) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(django_tests, "SessionMiddleware", SessionMiddleware)
    settings.SESSION_NG = {"REDIS_URL": redis_server.url}


class SessionNgMiddlewareContractTests(django_tests.SessionMiddlewareTests):  # type: ignore[misc]
    def test_empty_session_saved(self) -> None:
        # Django's version reads the db engine's Session table; this is the
        # same test reading what this engine stored in Redis instead.
        def response_set_session(request: HttpRequest) -> HttpResponse:
            request.session["foo"] = "bar"
            return HttpResponse("Session test")

        request = RequestFactory().get("/")
        middleware = SessionMiddleware(response_set_session)
        response = middleware(request)
        key = request.session.session_key
        assert tuple(request.session.items()) == (("foo", "bar"),)
        assert f"Set-Cookie: sessionid={key}" in str(response.cookies)
        assert response.headers["Vary"] == "Cookie"

        del request.session["foo"]
        response = middleware.process_response(request, HttpResponse("Session test"))
        assert dict(request.session.values()) == {}
        assert SessionStore(key).load() == {}
        assert SessionStore().exists(key) is True  # emptied, not flushed
        assert f"Set-Cookie: sessionid={key}" in str(response.cookies)
        assert response.headers["Vary"] == "Cookie"


def test_the_name_really_is_ours() -> None:
    assert django_tests.SessionMiddleware is SessionMiddleware

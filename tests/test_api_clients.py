"""API clients as people write them: ``requests.Session`` and ``httpx.Client``,
whose cookie jars keep whatever a response sets, against a live server that
takes session ids in the cookie and in the X-Auth-Token header.

The whole flow that failed before: log in with the header, then POST (which
Django's CSRF check guards) and log out, all with the jar on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests

from session_ng import keys
from session_ng.backends.redis import SessionStore

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.standalone]


@pytest.fixture
def users(django_user_model) -> None:  # type: ignore[no-untyped-def]
    # A transactional test empties tables afterwards; make the users here.
    user = django_user_model.objects.get_or_create(username="alice")[0]
    user.set_password("alice-password")
    user.save()


def with_requests(base: str) -> tuple[Any, Callable[..., Any]]:
    client = requests.Session()
    return client, lambda method, path, **kw: client.request(method, base + path, **kw)


def with_httpx(base: str) -> tuple[Any, Callable[..., Any]]:
    client = httpx.Client(base_url=base)
    return client, lambda method, path, **kw: client.request(method, path, **kw)


@pytest.mark.parametrize("make", [with_requests, with_httpx], ids=["requests", "httpx"])
def test_a_header_client_with_a_cookie_jar(make, live_server, users, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "ID_RESOLVERS": ["cookie", "header"]}
    client, call = make(live_server.url)
    with client:
        login = {"username": "alice", "password": "alice-password"}
        response = call("POST", "/api/login/", data=login, headers={"X-Auth-Token": "new"})
        assert response.status_code == 200
        token = response.headers["X-Auth-Token"]
        assert keys.is_valid_session_key(token)
        assert "sessionid" not in response.cookies
        assert sorted(response.headers["Cache-Control"].split(", ")) == ["no-store", "private"]
        auth = {"X-Auth-Token": token}
        # A write, guarded by Django's CSRF check: the header exempts it.
        response = call("POST", "/api/session/", data={"cart": "3 apples"}, headers=auth)
        assert response.status_code == 200
        assert response.json() == {"user": "alice", "session": {"cart": "3 apples"}}
        assert "sessionid" not in {c.name for c in jar(client)}
        response = call("POST", "/api/logout/", headers=auth)
        assert response.status_code == 200
        assert response.headers["X-Auth-Token"] == ""
        assert not SessionStore().exists(token)


def test_header_ids_only_give_a_client_without_the_header_its_token(live_server, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "ID_RESOLVERS": ["header"]}
    with httpx.Client(base_url=live_server.url) as client:
        # No header at all: a page that starts a session (it counts visits)
        # hands its token out, and the client sends it from then on.
        response = client.get("/")
        assert response.status_code == 200
        token = response.headers["X-Auth-Token"]
        assert keys.is_valid_session_key(token)
        assert "sessionid" not in {c.name for c in jar(client)}
        response = client.get("/", headers={"X-Auth-Token": token})
        assert "X-Auth-Token" not in response.headers  # known id: not sent again
        assert SessionStore(token).load()["visits"] == 2


def jar(client: Any) -> Any:
    return client.cookies.jar if isinstance(client, httpx.Client) else client.cookies

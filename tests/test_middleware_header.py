"""Session ids in the X-Auth-Token header, for clients that are not browsers."""

from __future__ import annotations

import contextlib

import pytest
import redis
from django.test import Client

from session_ng import keys
from session_ng.backends.redis import SessionStore

pytestmark = pytest.mark.django_db

ALICE = {"username": "alice", "password": "alice-password"}


def header_client() -> Client:
    # No cookie jar use at all: every request carries only what we pass.
    return Client(enforce_csrf_checks=True)


def api_login(client: Client) -> str:
    # A header client sends the header from the start (here empty).
    response = client.post("/api/login/", ALICE, headers={"X-Auth-Token": ""})
    assert response.status_code == 200
    token: str = response["X-Auth-Token"]
    assert keys.is_valid_session_key(token)
    client.cookies.clear()  # a REST client keeps the header, not cookies
    return token


def test_login_returns_the_id_in_the_header_and_it_is_accepted() -> None:
    client = header_client()
    token = api_login(client)
    response = client.get("/api/session/", headers={"X-Auth-Token": token})
    assert response.json()["user"] == "alice"
    assert "sessionid" not in response.cookies  # the session came from the header
    assert response["Vary"] == "Cookie, X-Auth-Token"
    assert "X-Auth-Token" not in response  # unchanged id: not sent again


def test_rotation_sends_the_new_id(r: redis.Redis) -> None:
    client = header_client()
    store = SessionStore()
    store["colour"] = "red"
    store.save()
    anonymous = store.session_key
    assert anonymous is not None
    response = client.post("/api/login/", ALICE, headers={"X-Auth-Token": anonymous})
    rotated = response["X-Auth-Token"]
    assert rotated != anonymous
    assert not r.exists(keys.session_hash("session_ng", anonymous))
    data = client.get("/api/session/", headers={"X-Auth-Token": rotated}).json()
    assert data == {"user": "alice", "session": {"colour": "red"}}


def test_logout_with_the_header_needs_no_csrf_token_and_clears_it(r: redis.Redis) -> None:
    client = header_client()
    token = api_login(client)
    response = client.post("/api/logout/", headers={"X-Auth-Token": token})
    assert response.status_code == 200
    assert response["X-Auth-Token"] == ""
    assert not r.exists(keys.session_hash("session_ng", token))


def test_without_the_header_a_session_cookie_gets_the_csrf_check() -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.get("/")  # a session cookie
    response = browser.post("/api/logout/")
    assert response.status_code == 403


def test_the_header_wins_when_both_are_sent_and_the_cookie_is_left_alone(r: redis.Redis) -> None:
    # A client whose jar holds a session cookie and that sends the header is
    # a header client: the header's session is used, the cookie's is neither
    # read nor written, and CSRF checks do not apply (no cross-site form can
    # send the header, and the cookie chooses nothing).
    signed_in = Client()
    signed_in.post("/login/", {"username": "bob", "password": "bob-password"})
    bob_key = signed_in.cookies["sessionid"].value
    browser = Client(enforce_csrf_checks=True)
    browser.cookies = signed_in.cookies
    token = api_login(header_client())
    response = browser.get("/api/session/", headers={"X-Auth-Token": token})
    assert response.json()["user"] == "alice"
    assert "sessionid" not in response.cookies
    response = browser.post("/api/logout/", headers={"X-Auth-Token": token})
    assert response.status_code == 200
    assert response["X-Auth-Token"] == ""
    assert "sessionid" not in response.cookies
    assert not r.exists(keys.session_hash("session_ng", token))
    assert r.exists(keys.session_hash("session_ng", bob_key)) == 1


@pytest.mark.parametrize("bad", ["nope", "A" * 32, "a" * 7, "{" + "a" * 32 + "}", "a" * 129])
def test_a_malformed_header_is_ignored(bad: str, r: redis.Redis) -> None:
    client = header_client()
    response = client.get("/api/session/", headers={"X-Auth-Token": bad})
    assert response.json() == {"user": None, "session": {}}
    assert r.dbsize() == 0


def test_header_only_configuration(settings, redis_server) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {"REDIS_URL": redis_server.url, "ID_RESOLVERS": ["header"]}
    client = header_client()
    response = client.post("/api/login/", ALICE, headers={"X-Auth-Token": "new"})
    assert "sessionid" not in response.cookies
    token = response["X-Auth-Token"]
    response = client.get("/api/session/", headers={"X-Auth-Token": token})
    assert response.json()["user"] == "alice"
    assert response["Vary"] == "X-Auth-Token"


def test_header_ids_only_give_a_new_session_its_token_without_the_header(
    settings, redis_server, r: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    # As Spring Session's header resolver does: with header ids only, a
    # client that sent no header still learns its new session's id.
    settings.SESSION_NG = {"REDIS_URL": redis_server.url, "ID_RESOLVERS": ["header"]}
    client = Client()
    response = client.post("/api/login/", ALICE)
    assert response.status_code == 200
    token = response["X-Auth-Token"]
    assert keys.is_valid_session_key(token)
    assert "sessionid" not in response.cookies
    assert sorted(response["Cache-Control"].split(", ")) == ["no-store", "private"]
    # (login() also rotates the CSRF cookie, and Django's CSRF middleware
    # adds "Cookie" for it.)
    assert response["Vary"] == "Cookie, X-Auth-Token"
    assert r.hget(keys.session_hash("session_ng", token), "u") is not None
    response = client.get("/api/session/", headers={"X-Auth-Token": token})
    assert response.json()["user"] == "alice"
    assert "X-Auth-Token" not in response


def test_with_cookie_ids_only_the_header_is_just_a_header(
    settings, redis_server, r: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {"REDIS_URL": redis_server.url, "ID_RESOLVERS": ["cookie"]}
    client = header_client()
    response = client.get("/", headers={"X-Auth-Token": "new"})
    assert "X-Auth-Token" not in response
    key = response.cookies["sessionid"].value
    assert r.exists(keys.session_hash("session_ng", key)) == 1
    # And it exempts nothing from CSRF.
    assert client.post("/api/logout/", headers={"X-Auth-Token": key}).status_code == 403


def test_a_custom_header_name(settings, redis_server) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {
        "REDIS_URL": redis_server.url,
        "ID_RESOLVERS": ["header"],
        "HEADER_NAME": "X-Session",
    }
    client = header_client()
    token = client.post("/api/login/", ALICE, headers={"X-Session": ""})["X-Session"]
    assert client.get("/api/session/", headers={"X-Session": token}).json()["user"] == "alice"


def test_a_browser_never_gets_its_session_id_in_a_header() -> None:
    # Both resolvers are on, but a browser sends no X-Auth-Token: its new
    # session id goes only into the HttpOnly cookie, out of page scripts' reach.
    browser = Client()
    response = browser.post("/login/", ALICE)
    assert "sessionid" in response.cookies
    assert "X-Auth-Token" not in response


def test_a_forged_cross_site_login_is_refused() -> None:
    # What a cross-site form delivers: no cookies (SameSite=Lax) and no header.
    response = Client(enforce_csrf_checks=True).post("/api/login/", ALICE)
    assert response.status_code == 403


def test_the_header_alone_exempts_from_csrf_even_before_a_session_exists() -> None:
    response = header_client().post("/api/login/", ALICE, headers={"X-Auth-Token": "new"})
    assert response.status_code == 200


def test_a_header_client_starting_out_gets_the_default_alias() -> None:
    client = header_client()
    response = client.post("/api/login/?_s=3", ALICE, headers={"X-Auth-Token": "new"})
    token = response["X-Auth-Token"]
    assert "sessionid" not in response.cookies  # a header client never gets the cookie
    assert client.get("/api/session/", headers={"X-Auth-Token": token}).json()["user"] == "alice"


def test_vary_after_a_handled_outage_names_every_resolver_input(settings) -> None:  # type: ignore[no-untyped-def]
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    from harness.redis_server import free_port
    from session_ng.exceptions import SessionStoreUnavailable
    from session_ng.middleware import SessionMiddleware

    settings.SESSION_NG = {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "ID_RESOLVERS": ["header"],
    }

    def view(request: HttpRequest) -> HttpResponse:
        with contextlib.suppress(SessionStoreUnavailable):
            request.session.get("x")
        return HttpResponse("fine")

    request = RequestFactory().get("/", headers={"X-Auth-Token": "d" * 32})
    response = SessionMiddleware(view)(request)
    assert response["Vary"] == "X-Auth-Token"

"""What apps that never heard of aliases need: Referer-sticky aliases, alias
limits that cannot lock a browser out, and responses that caches handle right."""

from __future__ import annotations

import pytest
import redis
from django.http import HttpRequest, HttpResponse
from django.template import RequestContext, Template
from django.test import Client, RequestFactory

from session_ng import keys
from session_ng.aliases import parse_cookie
from session_ng.middleware import SessionMiddleware
from tests.test_middleware_aliases import ALICE, BOB, alive

pytestmark = pytest.mark.django_db

NAVIGATE = {"sec-fetch-mode": "navigate"}


def cookie(client: Client) -> dict[str, str]:
    return parse_cookie(client.cookies["sessionid"].value)


# --- the Referer's alias -------------------------------------------------------


def who(client: Client, url: str = "/api/session/", **headers: str) -> str | None:
    user: str | None = client.get(url, headers=headers).json()["user"]
    return user


def test_a_request_without_an_alias_keeps_its_same_origin_referers(two_users: Client) -> None:
    assert who(two_users, referer="http://testserver/admin/?_s=1") == "bob"
    assert who(two_users, referer="http://testserver/admin/?x=1&_s=1#top") == "bob"
    assert who(two_users, referer="http://testserver/admin/") == "alice"
    assert who(two_users) == "alice"


@pytest.mark.parametrize(
    "referer",
    [
        "http://elsewhere.example/?_s=1",  # another site cannot choose the account
        "https://testserver/?_s=1",  # another scheme is another origin
        "http://testserver:8080/?_s=1",  # and so is another port
        "http://testserver/?_s=<b>",  # malformed: the default
        "http://testserver/?_s=" + "1" * 60,
        "not a url [",
        "http://[::1/?_s=1",
    ],
)
def test_other_origins_and_malformed_referers_mean_the_default(
    two_users: Client, referer: str
) -> None:
    assert who(two_users, referer=referer) == "alice"


def test_the_urls_own_alias_wins_over_the_referers(two_users: Client) -> None:
    assert who(two_users, "/api/session/?_s=0", referer="http://testserver/?_s=1") == "alice"
    assert who(two_users, "/api/session/?_s=1", referer="http://testserver/?_s=0") == "bob"


def test_a_navigation_moves_the_alias_into_the_address_bar(two_users: Client, roundtrips) -> None:  # type: ignore[no-untyped-def]
    before = two_users.cookies["sessionid"].value
    roundtrips.reset()
    response = two_users.get(
        "/admin/auth/user/?o=1", headers={"referer": "http://testserver/admin/?_s=1", **NAVIGATE}
    )
    assert response.status_code == 307
    assert response["Location"] == "/admin/auth/user/?o=1&_s=1"
    assert sorted(response["Cache-Control"].split(", ")) == ["no-store", "private"]
    assert response["Vary"] == "Referer"
    assert "sessionid" not in response.cookies
    assert roundtrips.count == 0  # decided before any session I/O
    assert two_users.cookies["sessionid"].value == before


def test_a_form_posted_from_an_alias_page_lands_on_that_account(
    two_users: Client, r: redis.Redis
) -> None:
    # The admin's logout form: action="/admin/logout/", no alias.
    sessions = cookie(two_users)
    referer = {"referer": "http://testserver/?_s=1"}
    response = two_users.post("/logout/", headers={**referer, **NAVIGATE})
    assert response.status_code == 307  # the browser posts again, to /logout/?_s=1
    assert response["Location"] == "/logout/?_s=1"
    assert alive(r, sessions["1"])
    assert alive(r, sessions["0"])
    # The same POST without Sec-Fetch-Mode (a script's fetch) is handled at once.
    response = two_users.post("/logout/", headers=referer)
    assert response.status_code == 302
    assert response["Location"] == "/?_s=1"
    assert not alive(r, sessions["1"])
    assert alive(r, sessions["0"])
    assert who(two_users) == "alice"


@pytest.mark.parametrize("path", ["//elsewhere.example/", "//elsewhere.example/x?_s=1"])
def test_a_navigation_to_a_protocol_relative_path_is_not_redirected(path: str) -> None:
    # (A backslash cannot do the same: get_full_path() percent-encodes it.)
    request = RequestFactory().get("/", headers={"referer": "http://testserver/?_s=1", **NAVIGATE})
    request.path = path
    response = SessionMiddleware(lambda request: HttpResponse("here"))(request)
    assert response.status_code == 200
    assert request.session_manager.current_alias == "1"  # type: ignore[attr-defined]


def test_a_response_whose_account_the_referer_chose_varies_on_it(two_users: Client) -> None:
    response = two_users.get("/api/session/", headers={"referer": "http://testserver/?_s=1"})
    assert response.json()["user"] == "bob"
    assert response["Vary"] == "Cookie, X-Auth-Token, Referer"
    response = two_users.get("/api/session/?_s=1", headers={"referer": "http://testserver/?_s=1"})
    assert response["Vary"] == "Cookie, X-Auth-Token"


# --- alias limits --------------------------------------------------------------


def test_anonymous_aliases_make_room_for_a_sign_in_oldest_first(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "MAX_ALIASES": 3}
    client = Client()
    client.post("/login/", ALICE)
    client.get("/?_s=1")  # pages that write the session for anonymous visitors
    client.get("/?_s=2")
    anonymous = cookie(client)
    for alias in ("1", "2"):  # a renewal period later (a minute at most) ...
        r.hincrby(keys.session_hash("session_ng", anonymous[alias]), "a", -61_000)
    client.get("/?_s=1")  # ... alias 1 is used again: alias 2's session is the oldest
    assert set(anonymous) == {"0", "1", "2"}
    response = client.post("/login/?_s=3", BOB)
    assert response.status_code == 302
    after = cookie(client)
    assert set(after) == {"0", "1", "3"}
    assert after["1"] == anonymous["1"]
    assert not alive(r, anonymous["2"])  # ended, not just forgotten
    assert who(client, "/api/session/?_s=3") == "bob"
    assert who(client) == "alice"


def test_cross_site_links_to_every_alias_never_block_a_sign_in(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "MAX_ALIASES": 10}
    client = Client()
    client.post("/login/", ALICE)
    for n in range(1, 12):
        assert client.get(f"/?_s={n}").status_code == 200
        assert len(cookie(client)) <= 10
    assert client.post("/login/?_s=20", BOB).status_code == 302
    sessions = cookie(client)
    assert len(sessions) == 10
    assert "0" in sessions
    assert "20" in sessions
    assert who(client) == "alice"
    assert who(client, "/api/session/?_s=20") == "bob"


def test_concurrent_requests_from_one_cookie_never_name_more_than_the_limit(
    settings, r: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    # Concurrent requests all carry the same cookie: replay it for each.
    settings.SESSION_NG = {**settings.SESSION_NG, "MAX_ALIASES": 4}
    client = Client()
    client.post("/login/", ALICE)
    for n in (1, 2, 3):
        client.get(f"/?_s={n}")
    stale = client.cookies["sessionid"].value
    for n in range(4, 28):
        client.cookies["sessionid"] = stale
        response = client.get(f"/?_s={n}")
        assert response.status_code == 200
        sent = parse_cookie(response.cookies["sessionid"].value)
        assert len(sent) <= 4
        assert "0" in sent
        assert str(n) in sent


def test_a_crafted_cookie_with_too_many_live_sessions_is_trimmed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "MAX_ALIASES": 10}
    pairs = []
    for n in range(15):
        helper = Client()
        helper.get("/")
        pairs.append(f"{n}.{helper.cookies['sessionid'].value}")
    client = Client()
    client.cookies["sessionid"] = "~".join(pairs)
    response = client.get("/?_s=3")
    sent = parse_cookie(response.cookies["sessionid"].value)
    assert sorted(sent, key=int) == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


def test_a_refused_sign_in_writes_nothing_and_offers_a_way_out(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "MAX_ALIASES": 2}
    client = Client()
    client.post("/login/", ALICE)
    client.post("/login/?_s=1", BOB)
    before = sorted(r.scan_iter())
    response = client.post("/login/?_s=2", ALICE)
    assert response.status_code == 400
    html = response.content.decode()
    assert "the most signed-in accounts allowed (2)" in html
    assert 'id="way-out" href="/?_s=0"' in html
    assert sorted(r.scan_iter()) == before
    assert "sessionid" not in response.cookies


# --- caches ----------------------------------------------------------------------


def test_a_page_that_only_shows_the_account_switcher_varies_on_cookie(two_users: Client) -> None:
    def view(request: HttpRequest) -> HttpResponse:
        template = Template("{% for a in session_accounts %}{{ a.alias }};{% endfor %}")
        return HttpResponse(template.render(RequestContext(request)))

    request = RequestFactory().get("/")
    request.COOKIES["sessionid"] = two_users.cookies["sessionid"].value
    response = SessionMiddleware(view)(request)
    assert response.content == b"0;1;"
    assert response["Vary"] == "Cookie, X-Auth-Token"


def test_the_per_site_cache_never_shares_a_new_sessions_header_id(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "ID_RESOLVERS": ["header"]}
    settings.MIDDLEWARE = [
        "django.middleware.cache.UpdateCacheMiddleware",
        *settings.MIDDLEWARE,
        "django.middleware.cache.FetchFromCacheMiddleware",
    ]
    tokens = set()
    for _ in range(3):
        response = Client().get("/", headers={"X-Auth-Token": "new"})
        assert response.status_code == 200
        tokens.add(response["X-Auth-Token"])
    assert len(tokens) == 3
    assert all(keys.is_valid_session_key(t) for t in tokens)


# --- the alias parameter is the middleware's -------------------------------------


def test_views_never_see_the_alias_parameter() -> None:
    seen = {}

    def view(request: HttpRequest) -> HttpResponse:
        seen["GET"] = request.GET.dict()
        seen["path"] = request.get_full_path()
        return HttpResponse("ok")

    request = RequestFactory().get("/list/?q=a+b&_s=1&&%5Fs=2&o=1")
    SessionMiddleware(view)(request)
    # The last value wins, as request.GET.get() reads it.
    assert request.session_manager.current_alias == "2"  # type: ignore[attr-defined]
    assert seen == {"GET": {"q": "a b", "o": "1"}, "path": "/list/?q=a+b&&o=1"}
    # A malformed alias is the default, and hidden from the view too.
    request = RequestFactory().get("/list/?_s=%3Cb%3E&x=1")
    SessionMiddleware(view)(request)
    assert seen == {"GET": {"x": "1"}, "path": "/list/?x=1"}


def test_an_admin_changelist_under_an_alias(two_users: Client) -> None:
    # The admin takes every query parameter as a filter and refuses unknown
    # ones (a redirect to ?e=1): it must never see the alias.
    # (testproject's alice and bob are staff.)
    response = two_users.get("/admin/auth/user/?_s=1")
    assert response.status_code == 200
    assert response.context["user"].username == "bob"
    response = two_users.get("/admin/auth/user/?_s=0&o=1")
    assert response.status_code == 200
    assert response.context["user"].username == "alice"


# --- another engine ----------------------------------------------------------------


@pytest.mark.parametrize(
    "engine",
    ["django.contrib.sessions.backends.signed_cookies", "django.contrib.sessions.backends.db"],
)
def test_with_another_engine_the_middleware_is_djangos(settings, engine: str) -> None:  # type: ignore[no-untyped-def]
    # Other engines' keys are not session_ng's ([a-z0-9], 8 to 128): the
    # signed_cookies engine's key is the signed data itself. The middleware
    # then does exactly what Django's does.
    settings.SESSION_ENGINE = engine
    client = Client()
    assert client.post("/login/", ALICE).status_code == 302
    cookie_value = client.cookies["sessionid"].value
    if engine.endswith("signed_cookies"):
        assert ":" in cookie_value  # Django's signed data, kept as Django wrote it
    assert who(client) == "alice"
    assert who(client, "/api/session/?_s=1") == "alice"  # no aliases with another engine
    assert client.post("/logout/").status_code == 302
    assert who(client) is None

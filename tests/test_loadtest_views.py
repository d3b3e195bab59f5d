"""The load test's views (``make loadtest``): the async twins that uvicorn serves
answer exactly as the sync views that gunicorn serves, so that the table's
WSGI and ASGI rows measure the same work."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

from bench.loadtest.middleware import BROWSER_HEADER, SESSION_HEADER
from bench.loadtest.run import PASSWORD

LOGIN = {"username": "lt0", "password": PASSWORD}
# (method, view, form, the answer: status and body). A login again as the
# session's user keeps the counter.
STEPS: list[tuple[str, str, dict[str, str], tuple[int, str]]] = [
    ("get", "read/", {}, (403, "not logged in")),
    ("post", "write/", {}, (403, "not logged in")),
    ("post", "login/", {**LOGIN, "password": "wrong"}, (403, "wrong username or password")),
    ("post", "login/", LOGIN, (200, "0")),
    ("post", "write/", {}, (200, "1")),
    ("post", "write/", {}, (200, "2")),
    ("get", "read/", {}, (200, "2")),
    ("post", "login/", LOGIN, (200, "2")),
    ("get", "read/", {}, (200, "2")),
]


DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


# As bench.loadtest.settings runs them: session_ng behind its middleware, and the
# cache engine (on the tests' local-memory cache) behind Django's.
@pytest.fixture(autouse=True, params=["session_ng", "cache"])
def _loadtest_site(request: pytest.FixtureRequest, settings: Any) -> None:
    settings.ROOT_URLCONF = "bench.loadtest.urls"
    settings.MIDDLEWARE = ["bench.loadtest.middleware.browser_tag", *settings.MIDDLEWARE]
    if request.param == "cache":
        settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
        settings.MIDDLEWARE = [
            DJANGO_MIDDLEWARE if name == "session_ng.middleware.SessionMiddleware" else name
            for name in settings.MIDDLEWARE
        ]


def _answer(response: Any, client: Client | AsyncClient) -> tuple[int, str]:
    # What mix.lua reads besides the body: its browser echoed, and the
    # session cookie's value in a header of its own.
    assert response[BROWSER_HEADER] == "7"
    if "sessionid" in response.cookies:
        assert response[SESSION_HEADER] == client.cookies["sessionid"].value
    return response.status_code, response.content.decode()


@pytest.mark.django_db
def test_the_sync_views_count_writes_and_keep_them_across_a_login() -> None:
    User.objects.create_user("lt0", password=PASSWORD)
    client = Client()
    for method, view, form, expected in STEPS:
        response = getattr(client, method)(f"/lt/{view}", form, headers={BROWSER_HEADER: "7"})
        assert _answer(response, client) == expected, (method, view)


# transaction: the async views reach SQLite from sync_to_async's thread,
# which a test's open transaction would lock out.
@pytest.mark.django_db(transaction=True)
async def test_the_async_views_answer_as_the_sync_ones() -> None:
    await sync_to_async(User.objects.create_user)("lt0", password=PASSWORD)
    client = AsyncClient()
    for method, view, form, expected in STEPS:
        call = getattr(client, method)
        response = await call(f"/lt/async/{view}", form, headers={BROWSER_HEADER: "7"})
        assert _answer(response, client) == expected, (method, view)

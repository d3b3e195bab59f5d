"""Requests through the real ``SessionMiddleware``, with a browser's cookie jar.

The "site" is a handful of views behind one middleware instance. A ``Browser``
keeps the session cookie from response to request, so every figure includes
what a real request costs: cookie parsing, the store's lazy load, the
middleware's save decision and its ``Set-Cookie``.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.models import AnonymousUser, User, update_last_login
from django.contrib.auth.signals import user_logged_in
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.test import RequestFactory
from django.utils.crypto import get_random_string

View = Callable[[HttpRequest], HttpResponse]

# A few attributes of the size a real site keeps: what "read" loads and
# "login" carries over to the new key.
PROFILE = {
    "theme": "dark",
    "language": "en",
    "recently_viewed": [101, 205, 309, 412],
    "flags": {"beta": True, "tour_done": False},
}
CART = [
    {"sku": "A-100", "qty": 1, "price": "19.90"},
    {"sku": "B-220", "qty": 2, "price": "4.50"},
    {"sku": "C-314", "qty": 1, "price": "112.00"},
]


def _ok() -> HttpResponse:
    return HttpResponse(b"ok")


def new_view(request: HttpRequest) -> HttpResponse:
    request.session["greeting"] = "hello"
    return _ok()


def setup_view(request: HttpRequest) -> HttpResponse:
    request.session.update(PROFILE)
    return _ok()


def read_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(request.session.get("theme")))


def write_view(request: HttpRequest) -> HttpResponse:
    # A value that differs every time: an engine that skips unchanged
    # attributes must still write.
    request.session["counter"] = int(request.GET["n"])
    return _ok()


# Filled by prepare_login(): fetching the user is not the session engine's work.
USERS_BY_PK: dict[int, User] = {}


def prepare_login() -> list[int]:
    """Keep the users in memory and stop login() from updating ``last_login``.

    Both are SQL that every engine would pay alike; without them the login
    figure is the session engine's own work (load, key rotation, save).
    Returns the users' primary keys.
    """
    user_logged_in.disconnect(update_last_login, dispatch_uid="update_last_login")
    USERS_BY_PK.update((user.pk, user) for user in User.objects.order_by("pk"))
    return list(USERS_BY_PK)


def login_view(request: HttpRequest) -> HttpResponse:
    user = USERS_BY_PK[int(request.GET["user"])]
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return _ok()


def untouched_view(request: HttpRequest) -> HttpResponse:
    return _ok()


def append_view(request: HttpRequest) -> HttpResponse:
    # Read-modify-write of this thread's own list: the lost-writes figure.
    name = f"t{request.GET['thread']}"
    entries = request.session.get(name, [])
    entries.append(int(request.GET["n"]))
    request.session[name] = entries
    return _ok()


def shop_view(request: HttpRequest) -> HttpResponse:
    # What a typical logged-in session holds besides the auth keys.
    request.session["cart"] = CART
    request.session["_csrftoken"] = get_random_string(32)
    return _ok()


VIEWS: dict[str, View] = {
    "/new": new_view,
    "/setup": setup_view,
    "/read": read_view,
    "/write": write_view,
    "/login": login_view,
    "/untouched": untouched_view,
    "/append": append_view,
    "/shop": shop_view,
}


def dispatch(request: HttpRequest) -> HttpResponse:
    """The bench's URLconf: one view per path, nothing else in between."""
    return VIEWS[request.path](request)


def make_site() -> SessionMiddleware:
    """The middleware for the current ``SESSION_ENGINE`` (read once, at init)."""
    return SessionMiddleware(dispatch)


class Browser:
    """One client: a cookie jar holding at most the session cookie."""

    factory = RequestFactory()

    def __init__(self, site: SessionMiddleware, session_key: str | None = None) -> None:
        self.site = site
        self.session_key = session_key

    def get(self, path: str, **params: str | int) -> HttpResponseBase:
        headers = {}
        if self.session_key is not None:
            headers["cookie"] = f"{settings.SESSION_COOKIE_NAME}={self.session_key}"
        data = {name: str(value) for name, value in params.items()}
        request = self.factory.get(path, data, headers=headers)
        # What AuthenticationMiddleware would set; login() replaces it.
        request.user = AnonymousUser()
        response = self.site(request)
        if not isinstance(response, HttpResponseBase):
            raise TypeError("the bench's views are synchronous")
        self._keep_cookie(response)
        return response

    def _keep_cookie(self, response: HttpResponseBase) -> None:
        morsel = response.cookies.get(settings.SESSION_COOKIE_NAME)
        if morsel is None:
            return
        # The middleware deletes the cookie of a session that became empty.
        if morsel["max-age"] == 0 or not morsel.value:
            self.session_key = None
        else:
            self.session_key = morsel.value

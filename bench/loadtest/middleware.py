"""Tags each response for wrk's script (``bench/loadtest/mix.lua``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

BROWSER_HEADER = "X-Loadtest-Browser"
BROWSER_META = "HTTP_X_LOADTEST_BROWSER"
SESSION_HEADER = "X-Loadtest-Session"

SyncHandler = Callable[[HttpRequest], HttpResponseBase]
AsyncHandler = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def _tag(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    # From META: request.headers would build a dict of every header, a cost
    # of this harness that should not land on one engine and not the other.
    browser = str(request.META.get(BROWSER_META, ""))
    if browser.isdigit():
        response[BROWSER_HEADER] = browser
    morsel = response.cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is not None:
        response[SESSION_HEADER] = morsel.value
    return response


@sync_and_async_middleware
def browser_tag(get_response: SyncHandler | AsyncHandler) -> SyncHandler | AsyncHandler:
    """Echo the browser id, and copy the session cookie into a header.

    wrk does not say which connection a response came on, so the script names
    the browser in every request and finds it again by this echo. And wrk keeps
    one value per header name, so a second ``Set-Cookie`` (csrftoken, at login)
    could hide the session's; ``X-Loadtest-Session`` carries its value alone
    (empty when the cookie is deleted).

    Sync and async: under ASGI a sync-only middleware, outermost, would move
    every request of the async views into a thread and back.
    """
    if iscoroutinefunction(get_response):
        get_async: AsyncHandler = get_response

        async def amiddleware(request: HttpRequest) -> HttpResponseBase:
            return _tag(request, await get_async(request))

        return amiddleware
    get_sync: SyncHandler = get_response  # type: ignore[assignment]

    def middleware(request: HttpRequest) -> HttpResponseBase:
        return _tag(request, get_sync(request))

    return middleware

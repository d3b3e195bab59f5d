"""The load test's views: each answers with the session's counter, as text.

``bench/loadtest/mix.lua`` compares every answer with the number of writes it was
acknowledged for that session. The sync views are served by gunicorn (WSGI),
their async twins, which do the same work through the session's async API, by
uvicorn (ASGI).
"""

from __future__ import annotations

from django.contrib.auth import SESSION_KEY, aauthenticate, alogin, authenticate, login
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

COUNTER = "count"


def _counter(request: HttpRequest, status: int = 200) -> HttpResponse:
    value = int(request.session.get(COUNTER, 0))
    return HttpResponse(str(value), status=status, content_type="text/plain")


def _anonymous() -> HttpResponse:
    return HttpResponse("not logged in", status=403, content_type="text/plain")


@require_GET
def ping(request: HttpRequest) -> HttpResponse:
    """Is the server up (no session)."""
    return HttpResponse("ok", content_type="text/plain")


# wrk's browsers send no CSRF token: the POST views are exempt.
@csrf_exempt
@require_POST
def login_view(request: HttpRequest) -> HttpResponse:
    """Log a user in, with a real password check (MD5: see bench.loadtest.settings).

    The first login rotates the key (cycle_key). Logging in again as the
    session's user keeps the key and the data (Django's login() flushes only
    another user's session), so the answer is the counter the session held.
    """
    user = authenticate(
        request,
        username=request.POST.get("username", ""),
        password=request.POST.get("password", ""),
    )
    if user is None:
        return HttpResponse("wrong username or password", status=403, content_type="text/plain")
    login(request, user)
    return _counter(request)


@require_GET
def read(request: HttpRequest) -> HttpResponse:
    """A page that reads the session (no SQL: the user id is in the session)."""
    if SESSION_KEY not in request.session:
        return _anonymous()
    return _counter(request)


@csrf_exempt
@require_POST
def write(request: HttpRequest) -> HttpResponse:
    """Add one to the session's counter and answer with the new value."""
    if SESSION_KEY not in request.session:
        return _anonymous()
    request.session[COUNTER] = int(request.session.get(COUNTER, 0)) + 1
    return _counter(request)


# --- async: the ASGI runs ----------------------------------------------------
# The same work as above through the session's async methods, so that the
# request stays on the event loop: session_ng's store calls Redis natively;
# the cache engine's goes through sync_to_async (django-redis has no async
# API), as does Django's middleware when it saves. A plain `in` or [] here
# would load the session with a blocking call on the event loop.


async def _acounter(request: HttpRequest, status: int = 200) -> HttpResponse:
    value = int(await request.session.aget(COUNTER, 0))
    return HttpResponse(str(value), status=status, content_type="text/plain")


@csrf_exempt
@require_POST
async def alogin_view(request: HttpRequest) -> HttpResponse:
    """login_view through aauthenticate() and alogin()."""
    user = await aauthenticate(
        request,
        username=request.POST.get("username", ""),
        password=request.POST.get("password", ""),
    )
    if user is None:
        return HttpResponse("wrong username or password", status=403, content_type="text/plain")
    await alogin(request, user)
    return await _acounter(request)


@require_GET
async def aread(request: HttpRequest) -> HttpResponse:
    """read, through the session's async API."""
    if not await request.session.ahas_key(SESSION_KEY):
        return _anonymous()
    return await _acounter(request)


@csrf_exempt
@require_POST
async def awrite(request: HttpRequest) -> HttpResponse:
    """write, through the session's async API."""
    if not await request.session.ahas_key(SESSION_KEY):
        return _anonymous()
    await request.session.aset(COUNTER, int(await request.session.aget(COUNTER, 0)) + 1)
    return await _acounter(request)

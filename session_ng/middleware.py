"""``session_ng.middleware.SessionMiddleware``: Django's, plus aliases and header ids.

It subclasses Django's ``SessionMiddleware``, so every check and app that
looks for Django's (the admin's ``admin.E410``) finds it.

With one alias and the cookie resolver it does what Django's middleware does:
the same cookie settings, the same ``Vary: Cookie`` rules (including on mere
access), ``SessionInterrupted`` (400) when the session was deleted during the
request, and the cookie deleted when the session is emptied. One deliberate
difference: a session that was accessed is saved even if ``modified`` is
False. With this engine a save that changes nothing costs nothing, and it
catches in-place mutation (``session["cart"].append(x)``) and renews the cookie,
so the cookie never dies before the sliding server-side session.

Both sync and async: under ASGI the session is saved with native async calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from django.template import TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.utils.http import http_date, url_has_allowed_host_and_scheme

from session_ng import resolvers
from session_ng.aliases import (
    DEFAULT_ALIAS,
    SessionManager,
    encode_url,
    format_cookie,
    query_without,
)
from session_ng.backends.redis import SessionStore as RedisSessionStore
from session_ng.conf import conf
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.store.records import now_ms

logger = logging.getLogger("session_ng")

UNAVAILABLE_MESSAGE = (
    "The session service is temporarily unavailable. You are still signed in; "
    "please try again in a moment."
)
# Django's own wording for the same case.
INTERRUPTED_MESSAGE = (
    "The request's session was deleted before the request completed. "
    "The user may have logged out in a concurrent request, for example."
)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


RETRY_AFTER_SECONDS = 5


def unavailable_response() -> HttpResponse:
    """503 with Retry-After, and no Set-Cookie: the browser keeps its cookie.

    Rendered from the site's ``503.html`` template when it has one (with
    ``message`` and ``retry_after``, and no request: its context processors
    would need the session), plain text otherwise.
    """
    context = {"message": UNAVAILABLE_MESSAGE, "retry_after": RETRY_AFTER_SECONDS}
    body: str
    try:
        body, content_type = render_to_string("503.html", context), "text/html; charset=utf-8"
    except TemplateDoesNotExist:
        body, content_type = UNAVAILABLE_MESSAGE, "text/plain"
    response = HttpResponse(body, status=503, content_type=content_type)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def uses_cookie(resolution: resolvers.Resolution) -> bool:
    """Whether the response carries the session id in the cookie."""
    return resolvers.COOKIE in conf.snapshot().id_resolvers and not resolution.header_present


def uses_header(resolution: resolvers.Resolution) -> bool:
    """Whether the response carries the session id in the header: to a client
    that sent it, or to every client when the site takes header ids only (as
    Spring Session's header resolver does)."""
    id_resolvers = conf.snapshot().id_resolvers
    return resolvers.HEADER in id_resolvers and (
        resolution.header_present or resolvers.COOKIE not in id_resolvers
    )


class SessionMiddleware(DjangoSessionMiddleware):
    sync_capable = True
    async_capable = True

    if TYPE_CHECKING:  # set by MiddlewareMixin, absent from django-stubs
        async_mode: bool

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        super().__init__(get_response)  # Django's: self.SessionStore, the engine's store
        # With another engine (signed_cookies, db, ...) this is Django's
        # middleware, unchanged: aliases, header ids and the 503 need
        # session_ng's store, and other engines' keys are not session_ng's.
        store = self.SessionStore
        self.our_store = store if issubclass(store, RedisSessionStore) else None

    # --- request -------------------------------------------------------------

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        early = self.process_request(request)
        if early is not None:
            return early
        response: HttpResponseBase = self.get_response(request)  # type: ignore[assignment]
        failed = self._failed_response(request, response)
        if failed is not None:
            return failed
        try:
            return self.process_response(request, response)
        except SessionStoreUnavailable:
            return unavailable_response()

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        early = self.process_request(request)
        if early is not None:
            return early
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]
        get_response = self.get_response  # type: ignore[assignment]
        response = await get_response(request)
        failed = self._failed_response(request, response)
        if failed is not None:
            return failed
        try:
            return await self.aprocess_response(request, response)
        except SessionStoreUnavailable:
            return unavailable_response()

    def process_request(self, request: HttpRequest) -> HttpResponse | None:  # type: ignore[override]
        if self.our_store is None:
            super().process_request(request)
            return None
        resolution = resolvers.resolve(request)
        param = conf.snapshot().alias_param
        if param is not None:
            _hide_alias_param(request, param)
        if resolution.alias_source == resolvers.FROM_REFERER:
            moved = _alias_in_address_bar(request, resolution.alias)
            if moved is not None:
                return moved
        request.session = session = self.our_store(resolvers.current_key(resolution))
        if (
            resolution.had_cookie
            and not resolution.sessions
            and not resolution.header_present  # a header client's cookie names nothing
        ):
            # Maybe a cookie of Django's signed_cookies engine (MIGRATE_FROM).
            session.adopt_signed_cookie(request.COOKIES[settings.SESSION_COOKIE_NAME])
        request.session_manager = manager = SessionManager(request, resolution)  # type: ignore[attr-defined]
        companions = (
            [key for alias, key in resolution.sessions.items() if alias != resolution.alias]
            if resolution.source == resolvers.COOKIE
            else []
        )
        # A session created under a new alias must fit MAX_ALIASES; the store
        # asks the manager before it writes anything.
        new_alias = (
            resolution.source != resolvers.HEADER and resolution.alias not in resolution.sessions
        )
        session.bind_request(companions, manager if new_alias else None)
        if resolution.header_present:
            # A browser cannot attach this header to a cross-site request
            # (that needs a CORS preflight the site must allow), and the
            # session is the header's alone: a cookie the client's jar sends
            # along plays no part in it, so no forged request can ride on one.
            request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        return None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, SessionStoreUnavailable):
            return unavailable_response()
        # TooManySessions is a BadRequest: Django renders it through the
        # site's 400 handler, like its own SessionInterrupted.
        if isinstance(exception, UpdateError):
            # login()'s cycle_key() found the session deleted meanwhile.
            raise SessionInterrupted(INTERRUPTED_MESSAGE) from None
        return None

    @staticmethod
    def _failed_response(
        request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase | None:
        """The store raised in a template or another middleware, and the
        handler turned that into a 500 before it reached us. (A view that
        caught the error and answered itself keeps its answer.)"""
        if response.status_code < 500:
            return None
        session = _own(request.session)
        failure = None if session is None else session.failure
        if isinstance(failure, SessionStoreUnavailable):
            return unavailable_response()
        if failure is not None:
            return response_for_exception(request, failure)
        return None

    # --- response ------------------------------------------------------------

    def process_response(  # type: ignore[override]
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if self.our_store is None:
            return super().process_response(request, response)  # type: ignore[arg-type]
        plan = self._plan(request, response)
        if plan is None:
            return response
        session = request.session
        if plan.save:
            plan.renew = _mark_renewal(session)
            ours = _own(session)
            try:
                if ours is not None:
                    ours.save_changes()  # nothing changed: no round trip
                else:
                    session.save()
            except UpdateError:
                raise SessionInterrupted(INTERRUPTED_MESSAGE) from None
        return self._finish(request, response, plan)

    async def aprocess_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if self.our_store is None:
            # Another engine's save is synchronous I/O.
            django_response: HttpResponseBase = await sync_to_async(
                super().process_response, thread_sensitive=True
            )(request, response)  # type: ignore[arg-type]
            return django_response
        plan = self._plan(request, response)
        if plan is None:
            return response
        session = request.session
        if plan.save:
            plan.renew = _mark_renewal(session)
            ours = _own(session)
            try:
                if ours is not None:
                    await ours.asave_changes()  # nothing changed: no round trip
                else:
                    await session.asave()
            except UpdateError:
                raise SessionInterrupted(INTERRUPTED_MESSAGE) from None
        return self._finish(request, response, plan)

    def _plan(self, request: HttpRequest, response: HttpResponseBase) -> _Plan | None:
        try:
            session = request.session
            manager: SessionManager = request.session_manager  # type: ignore[attr-defined]
            accessed, modified, empty = session.accessed, session.modified, session.is_empty()
        except AttributeError:
            return None
        ours = _own(session)
        if ours is not None and isinstance(ours.failure, SessionStoreUnavailable):
            # Redis failed earlier in this request and the view answered
            # anyway: keep its answer, write nothing, touch no cookie.
            if accessed:
                patch_vary_headers(response, self._vary_inputs())
            return None
        plan = _Plan(manager=manager, accessed=accessed)
        if empty:
            # This alias's session is gone (flushed, or never existed): forget
            # it, and delete the cookie once no alias is left.
            plan.drop_current = manager.resolution.alias in manager.resolution.sessions or (
                manager.resolution.source == resolvers.HEADER
            )
        else:
            plan.save = (
                modified or accessed or settings.SESSION_SAVE_EVERY_REQUEST
            ) and response.status_code < 500
            resolution = manager.resolution
            if (
                plan.save
                and session.session_key is None
                and not (uses_cookie(resolution) or uses_header(resolution))
            ):
                # A new session whose id this response can carry neither in a
                # cookie nor in the header (header ids only, and the request
                # sent none): nobody could ever use it, so it is not stored.
                plan.save = False
        return plan

    @staticmethod
    def _cookie_age(at_browser_close: bool, age: int) -> tuple[int | None, str | None]:
        if at_browser_close:
            return None, None
        return age, http_date(time.time() + age)

    def _finish(
        self, request: HttpRequest, response: HttpResponseBase, plan: _Plan
    ) -> HttpResponseBase:
        manager = plan.manager
        resolution = manager.resolution
        key = request.session.session_key
        need_vary = plan.accessed
        wrote_header = False
        sessions = dict(resolution.sessions)
        if plan.drop_current:
            sessions.pop(resolution.alias, None)
        elif plan.save and key is not None:
            sessions[resolution.alias] = key
        sessions = manager.prune(sessions)
        snap = conf.snapshot()

        if uses_header(resolution):
            if plan.drop_current and resolution.source == resolvers.HEADER:
                # Flushed (logout): tell the client to forget its id.
                response[snap.header_name] = ""
                wrote_header = True
            elif plan.save and key is not None and key != resolution.header_key:
                # Only to a client that sent the header, or on a site that
                # takes header ids only: a browser's page scripts could read
                # it, which HttpOnly cookies exist to prevent. Created, or
                # rotated (login): the client must learn the new id.
                response[snap.header_name] = key
                wrote_header = True
            if wrote_header:
                # A session id is nobody else's: no cache may keep or share
                # this response (new clients all send the same placeholder).
                patch_cache_control(response, private=True, no_store=True)

        if uses_cookie(resolution):
            if not sessions:
                if resolution.had_cookie:
                    # Nothing left in it (or nothing valid ever was).
                    response.delete_cookie(
                        settings.SESSION_COOKIE_NAME,
                        path=settings.SESSION_COOKIE_PATH,
                        domain=settings.SESSION_COOKIE_DOMAIN,
                        samesite=settings.SESSION_COOKIE_SAMESITE,
                    )
                    need_vary = True
            elif (plan.save and plan.renew) or sessions != resolution.sessions:
                if not plan.save:
                    # Only the other aliases changed (one was pruned or logged
                    # out): the cookie keeps the site's default lifetime.
                    max_age, expires = self._cookie_age(
                        settings.SESSION_EXPIRE_AT_BROWSER_CLOSE, settings.SESSION_COOKIE_AGE
                    )
                else:
                    # After the save, so the session is loaded: no I/O here,
                    # in the async path either.
                    session = request.session
                    max_age, expires = self._cookie_age(
                        session.get_expire_at_browser_close(), session.get_expiry_age()
                    )
                if plan.save and len(sessions) > 1 and max_age is not None:
                    if settings.SESSION_EXPIRE_AT_BROWSER_CLOSE:
                        # The cookie carries other sessions, which end with
                        # the browser: so does the cookie. This session's own
                        # life is still kept by Redis.
                        max_age, expires = None, None
                    else:
                        # The cookie carries other sessions too: never
                        # shorten it below the default lifetime because of
                        # this one.
                        max_age = max(max_age, settings.SESSION_COOKIE_AGE)
                        expires = http_date(time.time() + max_age)
                response.set_cookie(
                    settings.SESSION_COOKIE_NAME,
                    format_cookie(sessions),
                    max_age=max_age,
                    expires=expires,
                    domain=settings.SESSION_COOKIE_DOMAIN,
                    path=settings.SESSION_COOKIE_PATH,
                    # set_cookie() treats False as Django's "or None" does.
                    secure=bool(settings.SESSION_COOKIE_SECURE),
                    httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
                    samesite=settings.SESSION_COOKIE_SAMESITE,
                )
                need_vary = True

        if resolution.alias != DEFAULT_ALIAS:
            self._keep_alias_in_redirect(request, response, manager)
        # An account switcher read the browser's sessions: the page depends on
        # the cookie as much as one that read its own session.
        depends = plan.accessed or manager.consulted
        vary = []
        if (need_vary or manager.consulted) and resolvers.COOKIE in snap.id_resolvers:
            vary.append("Cookie")
        if (depends or wrote_header) and resolvers.HEADER in snap.id_resolvers:
            vary.append(snap.header_name)
        if depends and resolution.alias_source == resolvers.FROM_REFERER:
            # The account was the Referer's choice.
            vary.append("Referer")
        if vary:
            patch_vary_headers(response, vary)
        return response

    @staticmethod
    def _vary_inputs() -> list[str]:
        """Every request input that could have chosen the session: a cache
        must key on all of them."""
        inputs = []
        snap = conf.snapshot()
        if resolvers.COOKIE in snap.id_resolvers:
            inputs.append("Cookie")
        if resolvers.HEADER in snap.id_resolvers:
            inputs.append(snap.header_name)
        return inputs

    @staticmethod
    def _keep_alias_in_redirect(
        request: HttpRequest, response: HttpResponseBase, manager: SessionManager
    ) -> None:
        location = response.get("Location")
        if response.status_code not in REDIRECT_STATUSES or not location:
            return
        # Only for this site's own URLs (an alias is nobody else's business),
        # and not where the view chose an alias itself.
        if manager.names_alias(location):
            return
        if url_has_allowed_host_and_scheme(
            location, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            response["Location"] = manager.encode_url(location)


def _hide_alias_param(request: HttpRequest, param: str) -> None:
    """Take the alias parameter out of the query string the view sees.

    The alias is the middleware's business: apps that read every parameter
    (the admin's changelists take each one as a filter, and refuse unknown
    ones) or copy the query into their own links never see it. Links still
    keep the alias, through the Referer and redirects.
    """
    query = request.META.get("QUERY_STRING", "")
    if param not in query and "%" not in query:
        return
    kept = query_without(query, param)
    if len(kept) == len(query.split("&")):
        return
    request.META["QUERY_STRING"] = "&".join(kept)
    request.GET = QueryDict(request.META["QUERY_STRING"], encoding=request.encoding)


def _alias_in_address_bar(request: HttpRequest, alias: str) -> HttpResponse | None:
    """For a page navigation that inherited its alias from the Referer, a 307
    to the same URL with the alias in it: the tab's address bar then names
    the account, so the page's own links and forms pass it on in turn (the
    Referer alone would keep it for one click only). 307 repeats the method
    and body, so a form's POST (the admin's logout) lands once, on the right
    account. Other requests (fetch, images) just use the alias: the page they
    serve keeps its URL.
    """
    if request.META.get("HTTP_SEC_FETCH_MODE") != "navigate" or alias == DEFAULT_ALIAS:
        return None
    location = encode_url(request.get_full_path(), str(conf.snapshot().alias_param), alias)
    if not location.startswith("/") or location.startswith(("//", "/\\")):
        return None  # never a protocol-relative URL, which could leave the site
    response = HttpResponse(status=307)
    response["Location"] = location
    patch_cache_control(response, private=True, no_store=True)
    patch_vary_headers(response, ["Referer"])
    return response


class _Plan:
    __slots__ = ("accessed", "drop_current", "manager", "renew", "save")

    def __init__(self, manager: SessionManager, accessed: bool) -> None:
        self.manager = manager
        self.accessed = accessed
        self.save = False
        # Whether a saved session's cookie is sent again (see renewal_due).
        self.renew = True
        self.drop_current = False


# A read-only request renews the cookie at most once per this share of the
# idle timeout (and at least a second apart): the cookie may run out that
# much before the session. 1% of Django's two weeks is 3 h 22 min.
RENEWAL_SHARE = 100
MIN_RENEWAL_PERIOD_MS = 1000


def renewal_due(session: SessionBase) -> bool:
    """Whether this response must send the cookie again.

    Always when the session changed. For a request that only read it, when
    the cookie was last sent (the hash's ``renewed`` field, written by the
    save of the response that sent it) a renewal period ago or more: so the
    cookie never runs out more than a period before the idle timer, whatever
    else slides that timer (websocket messages, REFRESH_ON_ACCESS = False).
    """
    if session.modified or settings.SESSION_SAVE_EVERY_REQUEST:
        return True
    ours = _own(session)
    last = None if ours is None else ours.last_cookie_renewal()
    if last is None:
        return True
    renewed, max_inactive = last
    age = max_inactive if max_inactive > 0 else settings.SESSION_COOKIE_AGE
    period = max(MIN_RENEWAL_PERIOD_MS, int(age) * 1000 // RENEWAL_SHARE)
    return bool(now_ms() - renewed >= period)


def _own(session: SessionBase) -> RedisSessionStore | None:
    """``session`` if it is session_ng's store (what the middleware uses of
    it beyond ``SessionBase``), None for another engine's (a view may set
    ``request.session`` to one)."""
    return session if isinstance(session, RedisSessionStore) else None


def _mark_renewal(session: SessionBase) -> bool:
    """renewal_due(), and if so tell a session_ng store to record it."""
    due = renewal_due(session)
    ours = _own(session)
    if due and ours is not None:
        ours.renew_cookie()
    return due

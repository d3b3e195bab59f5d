"""A login endpoint for header clients has no session yet to prove anything.

It is exempt from CSRF only when the request carries no cookies at all, so a
browser (which would send its cookies cross-site) still gets the full check.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware


def csrf_exempt_unless_cookie(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if request.COOKIES:
            reason = CsrfViewMiddleware(view).process_view(request, view, args, kwargs)
            if reason is not None:
                return reason
        return view(request, *args, **kwargs)

    wrapper.csrf_exempt = True  # type: ignore[attr-defined]
    return wrapper

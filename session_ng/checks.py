"""System checks: settings problems from ``conf.problems()``, with their ids."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from session_ng.conf import conf

ENGINE = "session_ng.backends.redis"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
OUR_MIDDLEWARE = "session_ng.middleware.SessionMiddleware"


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = [
        Error(p.msg, hint=p.hint or None, id=p.id) for p in conf.problems()
    ]
    if settings.SESSION_ENGINE != ENGINE:
        messages.append(
            Warning(
                f"session_ng is installed but SESSION_ENGINE is {settings.SESSION_ENGINE!r}.",
                hint=f"Set SESSION_ENGINE = {ENGINE!r}.",
                id="session_ng.W001",
            )
        )
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if DJANGO_MIDDLEWARE in middleware and OUR_MIDDLEWARE in middleware:
        messages.append(
            Warning(
                "Both Django's and session_ng's SessionMiddleware are in MIDDLEWARE; the later "
                "one replaces request.session, and aliases and header ids stop working.",
                hint=f"Remove {DJANGO_MIDDLEWARE!r}.",
                id="session_ng.W002",
            )
        )
    return messages


@register(Tags.compatibility)
def check_migration(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``SESSION_NG["MIGRATE_FROM"]`` names an engine session_ng can migrate from."""
    from session_ng.migration import SUPPORTED, problem

    found = problem()
    if found is None:
        return []
    return [
        Error(
            found,
            hint=f"Use one of {', '.join(SUPPORTED)} (or a subclass of one), the engine "
            "the site used before session_ng; None once the switch is done.",
            id="session_ng.E017",
        )
    ]


@register(Tags.compatibility, deploy=True)
def check_keyspace_notifications(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``manage.py check --deploy``: does Redis publish the events the worker needs?

    Asks Redis by making it publish (no CONFIG, which managed Redis may forbid).
    """
    if conf.problems():
        return []  # the settings errors say what to fix first
    from session_ng.events import probe_now, retryable

    try:
        missing = probe_now()
    except Exception as exc:
        if not retryable(exc):
            raise
        return [Warning(f"Could not reach Redis to check keyspace notifications: {exc}",
                        id="session_ng.W004")]  # fmt: skip
    if not missing:
        return []
    return [
        Warning(
            f"Redis does not publish {' and '.join(missing)} keyspace events, so "
            "session_ng_worker cannot report expired sessions promptly or deletes made "
            "outside session_ng.",
            hint="Set notify-keyspace-events to include 'Egx' (with "
            "CONFIGURE_KEYSPACE_NOTIFICATIONS the worker does it itself).",
            id="session_ng.W003",
        )
    ]


# Django's own session-cookie deployment checks (security.W010-W015) run only
# when this app or this middleware path is installed, named exactly so.
DJANGO_SESSIONS_APP = "django.contrib.sessions"


@register(Tags.security, deploy=True)
def check_session_cookie(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``check --deploy``: the session cookie's Secure and HttpOnly flags.

    session_ng needs neither ``django.contrib.sessions`` nor Django's
    middleware, and without them Django's own checks of these two settings
    never run. These say the same then, and nothing when Django's run.
    """
    if DJANGO_SESSIONS_APP in settings.INSTALLED_APPS or DJANGO_MIDDLEWARE in list(
        getattr(settings, "MIDDLEWARE", None) or []
    ):
        return []  # Django's security.W010-W015 cover them
    messages: list[CheckMessage] = []
    if settings.SESSION_COOKIE_SECURE is not True:
        messages.append(
            Warning(
                "SESSION_COOKIE_SECURE is not True: browsers send the session cookie over "
                "plain HTTP too, where anyone on the network can read it and take over "
                "the session.",
                hint="Serve the site over HTTPS and set SESSION_COOKIE_SECURE = True.",
                id="session_ng.W012",
            )
        )
    if settings.SESSION_COOKIE_HTTPONLY is not True:
        messages.append(
            Warning(
                "SESSION_COOKIE_HTTPONLY is not True: the page's scripts can read the "
                "session cookie, so a cross-site scripting flaw can steal the session.",
                hint="Set SESSION_COOKIE_HTTPONLY = True (Django's default).",
                id="session_ng.W015",
            )
        )
    return messages

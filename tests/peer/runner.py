"""The TEST_RUNNER of the peer run: session_ng in Django's place, and a record
of every test's outcome for ``tests.peer.__main__`` to judge.

Substitution: runtests.py sets ``settings.MIDDLEWARE`` to its own list, and
tests set it again with ``override_settings`` / ``modify_settings``, naming
``django.contrib.sessions.middleware.SessionMiddleware``. The runner replaces
that name with session_ng's middleware in the list runtests.py set, and again
whenever MIDDLEWARE changes (Django's ``setting_changed`` signal, sent as an
override is entered and left), so every middleware chain the suites build and
every check that reads MIDDLEWARE sees session_ng's, as in a project that
installed it. Tests that construct Django's class by import, not by setting,
keep Django's. The runner also adds ``session_ng`` to INSTALLED_APPS (its
checks and signal receivers, as install.rst asks). Forked test processes
(``--parallel``) inherit all of this.
"""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.test.runner import DiscoverRunner

DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
SESSION_NG_MIDDLEWARE = "session_ng.middleware.SessionMiddleware"


def substituted(middleware: Any) -> Any:
    if isinstance(middleware, list | tuple) and DJANGO_MIDDLEWARE in middleware:
        return type(middleware)(
            SESSION_NG_MIDDLEWARE if path == DJANGO_MIDDLEWARE else path for path in middleware
        )
    return middleware


def substitute_on_change(*, setting: str, value: Any, **kwargs: Any) -> None:
    if setting == "MIDDLEWARE":
        new = substituted(value)
        if new is not value:
            # The override being entered (or the settings being restored)
            # is what ``settings`` wraps now: this replaces the value there.
            settings.MIDDLEWARE = new


class OutcomeRecord(unittest.TextTestResult):
    """Every test id with its outcome, also for results replayed from forked
    processes (Django's parallel suite calls these same methods)."""

    outcomes: dict[str, str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes = {}

    def _set(self, test: Any, outcome: str) -> None:
        # A failure recorded by a subtest is not undone by the parent's end.
        if self.outcomes.get(test.id()) not in ("failure", "error"):
            self.outcomes[test.id()] = outcome

    def addSuccess(self, test: Any) -> None:
        super().addSuccess(test)
        self._set(test, "success")

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._set(test, "failure")

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._set(test, "error")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._set(test, "failure" if failed else "error")

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._set(test, "skip")

    def addExpectedFailure(self, test: Any, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._set(test, "expected failure")

    def addUnexpectedSuccess(self, test: Any) -> None:
        super().addUnexpectedSuccess(test)
        self._set(test, "unexpected success")


class PeerRunner(DiscoverRunner):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if settings.SESSION_ENGINE == "session_ng.backends.redis":
            settings.MIDDLEWARE = substituted(settings.MIDDLEWARE)
            setting_changed.connect(substitute_on_change, dispatch_uid="peer.substitute")
            settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "session_ng"]
            # runtests.py set the registry's apps already; set them again
            # with session_ng among them.
            apps.unset_installed_apps()
            apps.set_installed_apps(settings.INSTALLED_APPS)

    def get_resultclass(self) -> Any:
        return OutcomeRecord

    def run_suite(self, suite: Any, **kwargs: Any) -> Any:
        # What the suites start from, for the caller to check that the
        # substitution took place.
        started_with = {
            "engine": settings.SESSION_ENGINE,
            "middleware": list(settings.MIDDLEWARE),
            "session_ng_installed": apps.is_installed("session_ng"),
        }
        result = super().run_suite(suite, **kwargs)
        with open(os.environ["PEER_RESULTS"], "w") as out:
            json.dump({**started_with, "outcomes": result.outcomes}, out)
        return result

"""Django's own ``SessionTestsMixin`` against session_ng's engine, unchanged."""

from __future__ import annotations

from django.test import SimpleTestCase
from sessions_tests.tests import SessionTestsMixin

from session_ng.backends.redis import SessionStore


class RedisSessionContractTests(SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
    backend = SessionStore

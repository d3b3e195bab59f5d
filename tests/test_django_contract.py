"""Django's own ``SessionTestsMixin`` against session_ng's engine, unchanged
but for one test where session_ng is deliberately stricter."""

from __future__ import annotations

from django.test import SimpleTestCase
from sessions_tests.tests import SessionTestsMixin

from session_ng.backends.redis import SessionStore


class RedisSessionContractTests(SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
    backend = SessionStore

    def test_session_key_valid_string_saved(self) -> None:
        # Django accepts any key of 8+ characters. session_ng accepts only what
        # it generates, [a-z0-9]{32,128}, so nothing else reaches a Redis key
        # name; an 8-character key is refused, a well-formed one kept.
        self.session._session_key = "12345678"
        assert self.session.session_key is None
        good = "a1" * 16
        self.session._session_key = good
        assert self.session.session_key == good

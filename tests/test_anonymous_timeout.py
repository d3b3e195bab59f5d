"""SESSION_NG["ANONYMOUS_MAX_INACTIVE"]: sessions with no signed-in user end
sooner, so anonymous traffic costs Redis less memory."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.checks import check_settings

pytestmark = pytest.mark.django_db
NS = "session_ng"
ALICE = {"username": "alice", "password": "alice-password"}


@pytest.fixture
def short_anonymous(settings: Any) -> None:
    settings.SESSION_NG = {**settings.SESSION_NG, "ANONYMOUS_MAX_INACTIVE": 600}


def life(r: Any, key: str) -> tuple[int, float]:
    """(max_inactive stored, seconds the shadow key has left)."""
    stored = int(r.hget(keys.session_hash(NS, key), "i"))
    return stored, r.pttl(keys.session_shadow(NS, key)) / 1000


def test_an_anonymous_session_gets_the_shorter_timeout(short_anonymous: None, r: Any) -> None:
    client = Client()
    client.get("/")
    stored, left = life(r, client.cookies["sessionid"].value)
    assert stored == 600
    assert 601 < left <= 606  # and a renewal period: a hundredth of it


def test_signing_in_gives_the_full_timeout(short_anonymous: None, r: Any, settings: Any) -> None:
    client = Client()
    client.get("/")
    client.post("/login/", ALICE)
    stored, left = life(r, client.cookies["sessionid"].value)
    assert stored == settings.SESSION_COOKIE_AGE
    full = settings.SESSION_COOKIE_AGE + 60  # and a renewal period: a minute at most
    assert full - 5 < left <= full


def test_signing_out_ends_the_session_and_the_next_one_is_short(
    short_anonymous: None, r: Any
) -> None:
    client = Client()
    client.post("/login/", ALICE)
    client.post("/logout/")
    client.get("/")
    assert life(r, client.cookies["sessionid"].value)[0] == 600


def test_a_views_own_expiry_wins(short_anonymous: None, r: Any) -> None:
    s = SessionStore()
    s.set_expiry(3600)
    s.save()
    assert s.session_key is not None
    assert life(r, s.session_key)[0] == 3600


def test_a_timeout_longer_than_the_cookie_age_changes_nothing(settings: Any, r: Any) -> None:
    settings.SESSION_NG = {**settings.SESSION_NG, "ANONYMOUS_MAX_INACTIVE": 10**8}
    s = SessionStore()
    s["a"] = 1
    s.save()
    assert s.session_key is not None
    assert life(r, s.session_key)[0] == settings.SESSION_COOKIE_AGE


def test_off_by_default(r: Any, settings: Any) -> None:
    client = Client()
    client.get("/")
    assert life(r, client.cookies["sessionid"].value)[0] == settings.SESSION_COOKIE_AGE


@pytest.mark.parametrize("value", [0, -5, 1.5, "600", True])
def test_a_bad_value_is_refused_by_its_check(settings: Any, value: object) -> None:
    settings.SESSION_NG = {"REDIS_URL": "redis://127.0.0.1/0", "ANONYMOUS_MAX_INACTIVE": value}
    assert [m.id for m in check_settings()] == ["session_ng.E020"]


def test_a_good_value_passes_its_check(settings: Any) -> None:
    settings.SESSION_NG = {"REDIS_URL": "redis://127.0.0.1/0", "ANONYMOUS_MAX_INACTIVE": 900}
    assert check_settings() == []

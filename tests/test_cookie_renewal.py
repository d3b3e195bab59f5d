"""When session_ng's middleware sends the cookie again.

A session that changed always gets its cookie. A request that only read it
renews the cookie when it was last sent a renewal period ago or more (1% of
the idle timeout, at least a second; the time is the hash's ``renewed``
field): often enough that the cookie never runs out more than one period
before the idle timer, rarely enough that most read-only responses carry no
Set-Cookie (cheaper, and cacheable).
"""

from __future__ import annotations

import pytest
import redis
from django.test import AsyncClient, Client

from session_ng import keys

pytestmark = pytest.mark.django_db
NS = "session_ng"
AGE = 1000  # s: a renewal period of 10 s


def started(client: Client, r: redis.Redis) -> str:
    response = client.post("/api/session/", {"theme": "dark"})
    assert "sessionid" in response.cookies  # created: always sent
    return client.cookies["sessionid"].value


def age_session(r: redis.Redis, key: str, seconds: int) -> None:
    """As if the cookie had last been sent ``seconds`` ago."""
    hash_key = keys.session_hash(NS, key)
    renewed = int(r.hget(hash_key, "r") or 0)
    assert renewed > 0  # written by the save of the response that sent it
    r.hset(hash_key, "r", renewed - seconds * 1000)


def test_reads_within_one_period_send_no_cookie(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_AGE = AGE
    client = Client()
    started(client, r)
    for _ in range(3):
        response = client.get("/api/session/")
        assert response.json()["session"] == {"theme": "dark"}
        assert "sessionid" not in response.cookies
        assert "Cookie" in response["Vary"]  # still varies: it read the session


def test_the_first_read_of_a_new_period_renews(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_AGE = AGE
    client = Client()
    key = started(client, r)
    age_session(r, key, seconds=25)  # sent 25 s ago: 2.5 periods
    response = client.get("/api/session/")
    morsel = response.cookies["sessionid"]
    assert (morsel.value, morsel["max-age"]) == (key, AGE)
    # That response recorded itself: the next read is within the period.
    assert "sessionid" not in client.get("/api/session/").cookies


def test_reads_that_do_not_slide_the_timer_still_renew(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_AGE = AGE
    settings.SESSION_NG = {**settings.SESSION_NG, "REFRESH_ON_ACCESS": False}
    client = Client()
    key = started(client, r)
    assert "sessionid" not in client.get("/api/session/").cookies
    age_session(r, key, seconds=11)
    assert client.get("/api/session/").cookies["sessionid"].value == key


async def test_websocket_touches_do_not_stand_in_for_a_renewal(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    from session_ng.store import driver, sessions
    from session_ng.store.records import now_ms

    settings.SESSION_COOKIE_AGE = AGE
    client = AsyncClient()
    key = (await client.post("/api/session/", {"theme": "dark"})).cookies["sessionid"].value
    age_session(r, key, seconds=11)
    # A chat's messages slide the timer (and "accessed") without any cookie.
    await driver.arun(sessions.touch(NS, key, now_ms()))
    assert (await client.get("/api/session/")).cookies["sessionid"].value == key


def test_a_change_always_renews(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_AGE = AGE
    client = Client()
    key = started(client, r)
    response = client.post("/api/session/", {"theme": "light"})
    assert response.cookies["sessionid"].value == key


def test_save_every_request_renews_every_time(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_AGE = AGE
    settings.SESSION_SAVE_EVERY_REQUEST = True
    client = Client()
    started(client, r)
    assert "sessionid" in client.get("/api/session/").cookies


def test_the_period_has_a_floor_of_one_second(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_AGE = 10  # 1% would be 100 ms
    client = Client()
    key = started(client, r)
    assert "sessionid" not in client.get("/api/session/").cookies
    age_session(r, key, seconds=1)
    assert "sessionid" in client.get("/api/session/").cookies


async def test_async_requests_follow_the_same_rule(settings, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_AGE = AGE
    client = AsyncClient()
    response = await client.post("/api/session/", {"theme": "dark"})
    key = response.cookies["sessionid"].value
    assert "sessionid" not in (await client.get("/api/session/")).cookies
    age_session(r, key, seconds=25)
    assert (await client.get("/api/session/")).cookies["sessionid"].value == key

"""A Redis filled to ``maxmemory`` under ``noeviction`` refuses writes: what
only frees memory (a logout, "sign out everywhere") must still work."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import Client

from harness.redis_server import RedisServer
from session_ng import api, keys
from session_ng.backends.redis import SessionStore
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.store import client as store_client
from session_ng.store import driver
from session_ng.store import sessions as store_sessions

pytestmark = [pytest.mark.standalone, pytest.mark.django_db]
NS = "session_ng"
ALICE = {"username": "alice", "password": "alice-password"}


@pytest.fixture
def small_redis(settings: Any) -> Iterator[redis.Redis]:
    with RedisServer("--maxmemory", "8mb", "--maxmemory-policy", "noeviction") as server:
        settings.SESSION_NG = {"REDIS_URL": server.url, "ID_RESOLVERS": ["cookie", "header"]}
        store_client.reset()
        client = redis.Redis.from_url(server.url)
        try:
            yield client
        finally:
            client.close()
            store_client.reset()


def fill(r: redis.Redis) -> None:
    """Write filler keys until Redis refuses them; then a new session is refused too."""
    # Big blocks, then small ones: Redis refuses a write only once it is
    # over the limit, so the last small one takes it past.
    for size in (20_000, 100):
        for i in range(100_000):
            try:
                r.set(f"filler:{size}:{i}", "x" * size)
            except redis.exceptions.OutOfMemoryError:
                break
        else:
            raise AssertionError("Redis never filled up")
    # Just over the limit, Redis can fall under it again (a client's buffers
    # shrink) and accept a write the test expects it to refuse: it did, once
    # in CI, on Valkey 9. A limit a megabyte under what it uses keeps it full.
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", max(1, used - 1_000_000))
    with pytest.raises(SessionStoreUnavailable):
        SessionStore().save()


def logged_in(user_id: str) -> str:
    s = SessionStore()
    s["_auth_user_id"] = user_id
    s.save()
    assert s.session_key is not None
    return s.session_key


def test_delete_works_when_redis_is_full(small_redis: redis.Redis) -> None:
    key = logged_in("41")
    fill(small_redis)
    SessionStore().delete(key)
    assert small_redis.exists(keys.session_hash(NS, key), keys.session_shadow(NS, key)) == 0
    assert small_redis.exists(keys.user_index(NS, "41")) == 0


def test_sign_out_everywhere_works_when_redis_is_full(small_redis: redis.Redis) -> None:
    sessions = [logged_in("42") for _ in range(3)]
    fill(small_redis)
    assert api.delete_sessions("42") == 3
    assert [small_redis.exists(keys.session_hash(NS, k)) for k in sessions] == [0, 0, 0]


def test_a_logout_request_works_when_redis_is_full(small_redis: redis.Redis) -> None:
    client = Client()
    signed_in = client.post("/api/login/", ALICE, HTTP_X_AUTH_TOKEN="")
    assert signed_in.status_code == 200
    token = signed_in["X-Auth-Token"]
    fill(small_redis)
    response = client.post("/api/logout/", HTTP_X_AUTH_TOKEN=token)
    assert response.status_code == 200
    assert response.json() == {"user": None}
    assert small_redis.exists(keys.session_hash(NS, token)) == 0


def test_signed_in_reads_work_when_redis_is_full(small_redis: redis.Redis) -> None:
    """Reads write nothing but a renewal that is due, which takes no memory
    (so a full Redis allows it), and the cookie's renewal record, which is
    skipped when Redis refuses it: never a 503."""
    client = Client()
    assert client.post("/login/", ALICE).status_code == 302
    assert client.post("/api/session/", {"theme": "dark"}).status_code == 200
    key = client.cookies["sessionid"].value
    name = keys.session_hash(NS, key)
    # The next read's idle-timer renewal and cookie renewal are both due.
    small_redis.hincrby(name, "a", -61_000)
    small_redis.hincrby(name, "r", -13_000_000)
    before = small_redis.hgetall(name)
    fill(small_redis)
    expected = {"user": "alice", "session": {"theme": "dark"}}
    for _ in range(2):
        response = client.get("/api/session/")
        assert (response.status_code, response.json()) == (200, expected)
        assert response.cookies["sessionid"].value == key  # the cookie is renewed
        after = small_redis.hgetall(name)
        assert int(after[b"a"]) > int(before[b"a"])  # the idle timer too
        # The cookie's renewal record could not be written; nothing else was.
        assert {**after, b"a": before[b"a"]} == before
    # A write is refused, with a clear answer.
    response = Client(raise_request_exception=False, HTTP_COOKIE=f"sessionid={key}").post(
        "/api/session/", {"theme": "light"}
    )
    assert response.status_code == 503
    assert small_redis.hget(name, ".theme") == b'"dark"'
    # Signing out frees memory: it works.
    assert client.post("/logout/").status_code == 302
    assert small_redis.exists(name) == 0


def test_a_websocket_refresh_works_when_redis_is_full(small_redis: redis.Redis) -> None:
    """SessionRefreshMixin's refresh (a forced touch) takes no memory."""
    from session_ng.store.records import now_ms

    key = logged_in("43")
    name = keys.session_hash(NS, key)
    before = int(small_redis.hget(name, "a") or 0)
    fill(small_redis)
    touch = store_sessions.touch(NS, key, before + 1_000, force=True)
    assert driver.run(touch) is True
    assert int(small_redis.hget(name, "a") or 0) == before + 1_000
    assert small_redis.pttl(keys.session_shadow(NS, key)) > 1_209_659_000 - (now_ms() - before)

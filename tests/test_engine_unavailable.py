"""Redis down: a clear, logged error; never an empty session or a logout."""

from __future__ import annotations

import gc
import logging
import warnings

import pytest
import redis.exceptions
from django.test import Client
from redis.cluster import RedisCluster

from harness.redis_server import RedisServer, free_port
from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.middleware import UNAVAILABLE_MESSAGE
from session_ng.store import client as store_client
from session_ng.store import driver


@pytest.fixture
def down(settings) -> str:  # type: ignore[no-untyped-def]
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.SESSION_NG = {"REDIS_URL": url, "SOCKET_TIMEOUT": 0.5}
    return url


def test_every_operation_raises_a_clear_error(down: str, caplog: pytest.LogCaptureFixture) -> None:
    key = "c" * 32
    with caplog.at_level(logging.ERROR, logger="session_ng"):
        for call in (
            lambda: SessionStore(key).load(),
            lambda: SessionStore(key).exists(key),
            lambda: SessionStore(key).delete(),
            lambda: SessionStore().save(),
            SessionStore.clear_expired,
        ):
            with pytest.raises(
                SessionStoreUnavailable, match=r"The session store \(Redis\) is unavailable"
            ):
                call()
    assert len(caplog.records) == 5
    assert all("session store unavailable" in r.getMessage() for r in caplog.records)


async def test_async_operations_raise_the_same_error(down: str) -> None:
    with pytest.raises(SessionStoreUnavailable):
        await SessionStore("c" * 32).aload()
    with pytest.raises(SessionStoreUnavailable):
        await SessionStore().asave()


def test_session_ng_middleware_answers_503_and_keeps_the_cookie(down: str) -> None:
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "d" * 32
    response = client.get("/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    # testproject's 503.html: a page with the message and a way back.
    assert response["Content-Type"] == "text/html; charset=utf-8"
    html = response.content.decode()
    assert f'<p id="reason">{UNAVAILABLE_MESSAGE}</p>' in html
    assert 'id="way-out"' in html
    assert "sessionid" not in response.cookies  # not deleted, not replaced


def test_without_a_503_template_the_answer_is_plain_text(down: str, settings) -> None:  # type: ignore[no-untyped-def]
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "APP_DIRS": False, "DIRS": []},
        # the demo's own templates, without its 503.html
    ]
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "d" * 32
    response = client.get("/api/session/")
    assert response.status_code == 503
    assert response["Content-Type"] == "text/plain"
    assert response.content.decode() == UNAVAILABLE_MESSAGE


def test_django_middleware_fails_loudly_and_keeps_the_cookie(down: str, settings) -> None:  # type: ignore[no-untyped-def]
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware"
        if m == "session_ng.middleware.SessionMiddleware"
        else m
        for m in settings.MIDDLEWARE
    ]
    client = Client(raise_request_exception=False)
    client.cookies["sessionid"] = "d" * 32
    response = client.get("/")
    assert response.status_code == 500
    assert "sessionid" not in response.cookies


def test_service_resumes_after_redis_restarts(settings) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer().start()
    try:
        settings.SESSION_NG = {"REDIS_URL": server.url, "SOCKET_TIMEOUT": 0.5}
        s = SessionStore()
        s["a"] = 1
        s.save()
        key = s.session_key
        server.stop()
        with pytest.raises(SessionStoreUnavailable):
            SessionStore(key).load()
        # Same port, empty server (no persistence): the pooled connection is
        # stale and the scripts are gone; both are recovered transparently.
        server = RedisServer(port=server.port).start()
        t = SessionStore()
        t["b"] = 2
        t.save()
        assert SessionStore(t.session_key)["b"] == 2
    finally:
        server.stop()
        store_client.reset()


async def test_asgi_requests_get_the_503_too(down: str) -> None:
    from django.test import AsyncClient

    client = AsyncClient(raise_request_exception=False)
    client.cookies["sessionid"] = "d" * 32
    response = await client.get("/")
    assert response.status_code == 503
    assert "sessionid" not in response.cookies


def test_a_view_that_handles_the_outage_keeps_its_answer(down: str) -> None:
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory

    from session_ng.middleware import SessionMiddleware

    def view(request: HttpRequest) -> HttpResponse:
        try:
            request.session.get("x")
        except SessionStoreUnavailable:
            return HttpResponse("degraded but fine")
        return HttpResponse("normal")

    request = RequestFactory().get("/")
    request.COOKIES["sessionid"] = "d" * 32
    response = SessionMiddleware(view)(request)
    assert (response.status_code, response.content) == (200, b"degraded but fine")
    assert "sessionid" not in response.cookies


@pytest.mark.parametrize(
    ("setup", "renews"),
    [
        # Full: maxmemory reached with noeviction refuses every write that
        # may take memory; a renewal takes none (touch.lua is allow-oom).
        ([("maxmemory", "1"), ("maxmemory-policy", "noeviction")], True),
        # Too few replicas for min-replicas-to-write (NOREPLICAS): refused
        # like MISCONF, which a failed snapshot gives and a test cannot.
        ([("min-replicas-to-write", "1")], False),
    ],
)
def test_a_redis_that_refuses_writes_is_unavailable_too(redis_server, setup, renews) -> None:  # type: ignore[no-untyped-def]
    import redis

    s = SessionStore()
    s["a"] = 1
    s.save()
    admin = redis.Redis.from_url(redis_server.url)
    assert s.session_key is not None
    hash_name = keys.session_hash("session_ng", s.session_key)
    before = {name: admin.config_get(name)[name] for name, _ in setup}
    try:
        for name, value in setup:
            admin.config_set(name, value)
        client = Client(raise_request_exception=False)
        client.cookies["sessionid"] = s.session_key
        response = client.get("/")  # counts the visit: a write
        assert response.status_code == 503
        assert "sessionid" not in response.cookies
        t = SessionStore(s.session_key)
        t["b"] = 2
        with pytest.raises(SessionStoreUnavailable):
            t.save()
        # Reads go on: a load writes nothing unless its renewal is due, and
        # a renewal Redis refuses is skipped (the next read tries again).
        assert SessionStore(s.session_key).load() == {"a": 1}
        for name, value in before.items():
            admin.config_set(name, value)
        due = admin.hincrby(hash_name, "a", -61_000)
        for name, value in setup:
            admin.config_set(name, value)
        assert SessionStore(s.session_key).load() == {"a": 1}
        assert (int(admin.hget(hash_name, "a") or 0) > due) == renews
    finally:
        for name, value in before.items():
            admin.config_set(name, value)
        admin.close()
    assert SessionStore(s.session_key).load() == {"a": 1}  # nothing was lost


def test_a_cluster_no_node_of_which_answers_is_an_outage() -> None:
    with pytest.raises(redis.exceptions.RedisClusterException) as raised:
        RedisCluster(host="127.0.0.1", port=free_port(), socket_timeout=0.5)
    assert driver.is_outage(raised.value)


def test_a_cluster_client_on_a_server_without_cluster_mode_is_a_mistake_not_an_outage(
    redis_server: RedisServer,
) -> None:
    # redis-py says "cannot be connected" here too; the node's own answer
    # (raised as the cause) tells a misconfiguration from a server that is
    # down, which would be retried for ever and answered 503.
    with pytest.raises(redis.exceptions.RedisClusterException) as raised:
        RedisCluster.from_url(redis_server.url)
    text, outage = str(raised.value), driver.is_outage(raised.value)
    # redis-py's failed constructor leaves its connection to the node for
    # the garbage collector (held by the traceback): collect it here.
    del raised
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert "Cluster mode is not enabled" in text
    assert not outage


@pytest.mark.parametrize(
    ("reply", "outage"),
    [
        ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable", True),
        ("BUSY Redis is busy running a script. You can only call SCRIPT KILL", True),
        ("NOREPLICAS Not enough good replicas to write.", True),
        ("BUSYKEY Target key name already exists.", False),
        ("ERR unknown command 'FOO'", False),
    ],
)
def test_replies_are_told_apart_by_their_error_code(reply: str, outage: bool) -> None:
    assert driver.is_outage(redis.exceptions.ResponseError(reply)) is outage

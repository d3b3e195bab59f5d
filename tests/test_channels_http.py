"""session_ng.channels' stacks on HTTP: Channels' HttpCommunicator, real Redis.

Behind Channels' own SessionMiddlewareStack an HTTP consumer's session is
saved and its cookie set when the response starts; session_ng's stack must do
the same (in session_ng's cookie format), and Channels' login and logout must
work on session_ng's stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from channels import sessions as channels_sessions
from channels.auth import login, logout
from channels.consumer import AsyncConsumer
from channels.generic.websocket import WebsocketConsumer
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.contrib.auth import SESSION_KEY, user_logged_in, user_logged_out
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import SuspiciousOperation

from session_ng import keys
from session_ng.aliases import format_cookie, parse_cookie
from session_ng.backends.redis import SessionStore
from session_ng.channels import SessionMiddlewareStack, get_user
from session_ng.conf import conf

pytestmark = pytest.mark.django_db(transaction=True)

Handler = Callable[[Any], Awaitable[None]]


def http_app(handler: Handler, status: int = 200, stack: Any = SessionMiddlewareStack) -> Any:
    """An HTTP consumer that runs ``handler(session)``, then answers with the
    session's key (or "-") as the body."""

    class Consumer(AsyncConsumer):  # type: ignore[misc]
        async def http_request(self, event: dict[str, Any]) -> None:
            session = self.scope["session"]
            await handler(session)
            await self.send({"type": "http.response.start", "status": status, "headers": []})
            body = (session.session_key or "-").encode()
            await self.send({"type": "http.response.body", "body": body})

    return stack(Consumer.as_asgi())


async def get(app: Any, path: str = "/page/", cookie: str | None = None) -> dict[str, Any]:
    headers = [(b"cookie", f"sessionid={cookie}".encode())] if cookie is not None else []
    response: dict[str, Any] = await HttpCommunicator(
        app, "GET", path, headers=headers
    ).get_response()
    return response


def set_cookies(response: dict[str, Any]) -> list[str]:
    return [v.decode() for n, v in response["headers"] if n.lower() == b"set-cookie"]


def session_cookie(response: dict[str, Any]) -> Any:
    """The one Set-Cookie of the response, parsed (a morsel)."""
    [header] = set_cookies(response)
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie["sessionid"]


async def make_session(**data: Any) -> str:
    s = SessionStore()
    await s.aupdate(data)
    await s.asave()
    assert s.session_key is not None
    return s.session_key


async def nothing(session: Any) -> None:
    return None


async def set_color(session: Any) -> None:
    await session.aset("color", "blue")


async def test_a_written_session_is_saved_and_its_cookie_set(settings) -> None:  # type: ignore[no-untyped-def]
    response = await get(http_app(set_color))
    key = response["body"].decode()
    assert response["status"] == 200
    morsel = session_cookie(response)
    assert morsel.value == key
    assert morsel["max-age"] == str(settings.SESSION_COOKIE_AGE)
    assert morsel["expires"]
    assert morsel["path"] == "/"
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert not morsel["secure"]
    assert await SessionStore(key).aget("color") == "blue"


@pytest.mark.parametrize("samesite", ["Strict", "None"])
async def test_the_cookie_follows_the_cookie_settings(settings, samesite: str) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_SAMESITE = samesite
    settings.SESSION_COOKIE_SECURE = True
    settings.SESSION_COOKIE_DOMAIN = "example.test"
    settings.SESSION_COOKIE_PATH = "/app/"
    morsel = session_cookie(await get(http_app(set_color)))
    assert morsel["samesite"] == samesite
    assert morsel["secure"] is True
    assert morsel["domain"] == "example.test"
    assert morsel["path"] == "/app/"


async def test_an_invalid_samesite_setting_fails_loudly(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_COOKIE_SAMESITE = "Hello"
    with pytest.raises(AssertionError, match="samesite"):
        await get(http_app(set_color))


async def test_a_session_expiring_at_browser_close_gets_a_session_cookie() -> None:
    async def short(session: Any) -> None:
        await session.aset("x", 1)
        await session.aset_expiry(0)

    morsel = session_cookie(await get(http_app(short)))
    assert morsel["max-age"] == ""
    assert morsel["expires"] == ""


async def test_an_untouched_or_unchanged_session_costs_no_save_and_no_cookie(
    r: redis.Redis,
    roundtrips,  # type: ignore[no-untyped-def]
) -> None:
    key = await make_session(color="red")

    async def read(session: Any) -> None:
        assert await session.aget("color") == "red"

    await get(http_app(read), cookie=key)  # warm the connection
    roundtrips.reset()
    response = await get(http_app(read), cookie=key)
    assert response["body"].decode() == key
    assert set_cookies(response) == []
    assert roundtrips.count == 1  # the load: nothing to save
    roundtrips.reset()
    assert set_cookies(await get(http_app(nothing), cookie=key)) == []
    assert roundtrips.count == 1


async def test_an_in_place_change_is_saved() -> None:
    key = await make_session(cart=[1])

    async def add(session: Any) -> None:
        (await session.aget("cart")).append(2)  # no modified = True

    await get(http_app(add), cookie=key)
    assert await SessionStore(key).aget("cart") == [1, 2]


async def test_a_server_error_saves_nothing() -> None:
    response = await get(http_app(set_color, status=500))
    assert response["status"] == 500
    assert response["body"] == b"-"
    assert set_cookies(response) == []


async def test_an_explicit_save_of_a_session_deleted_meanwhile_is_refused(r: redis.Redis) -> None:
    # Saved (created) by the consumer, then logged out by another request
    # before this response starts: saving it again must not bring it back.
    created: list[str] = []

    async def save_then_lose(session: Any) -> None:
        await session.asave()
        created.append(session.session_key)
        await SessionStore(session.session_key).aflush()

    with pytest.raises(SuspiciousOperation, match="deleted before the request completed"):
        await get(http_app(save_then_lose))
    assert not r.exists(keys.session_hash(conf.snapshot().namespace, created[0]))


async def test_channels_own_stack_refuses_it_too_with_session_ngs_engine(
    r: redis.Redis,
) -> None:
    # Channels' stack saves a modified session with a plain asave(): the
    # engine itself must find that the session is gone, changed or not.
    created: list[str] = []

    async def save_then_lose(session: Any) -> None:
        await session.asave()
        created.append(session.session_key)
        await SessionStore(session.session_key).aflush()

    app = http_app(save_then_lose, stack=channels_sessions.SessionMiddlewareStack)
    with pytest.raises(SuspiciousOperation):
        await get(app)
    assert not r.exists(keys.session_hash(conf.snapshot().namespace, created[0]))


async def test_a_flushed_session_deletes_the_cookie(r: redis.Redis) -> None:
    key = await make_session(color="red")

    async def flush(session: Any) -> None:
        await session.aflush()

    response = await get(http_app(flush), cookie=key)
    morsel = session_cookie(response)
    assert morsel.value == ""
    assert morsel["max-age"] == "0"
    assert not r.exists(keys.session_hash(conf.snapshot().namespace, key))
    # Nothing saved in its place (Channels' own stack stores an empty one).
    assert r.keys(f"{conf.snapshot().namespace}:sessions:*:expires") == []


async def test_an_alias_request_adds_its_session_to_the_browsers_cookie() -> None:
    first = await make_session(name="alice")
    response = await get(http_app(set_color), path="/page/?_s=1", cookie=first)
    second = response["body"].decode()
    assert second != first
    assert parse_cookie(session_cookie(response).value) == {"0": first, "1": second}
    assert await SessionStore(first).aget("color") is None
    assert await SessionStore(second).aget("color") == "blue"


async def test_flushing_one_alias_keeps_the_others_and_dead_ones_are_dropped() -> None:
    alice, bob, gone = [await make_session(name=n) for n in ("alice", "bob", "gone")]
    await SessionStore(gone).adelete()
    cookie = format_cookie({"0": alice, "1": bob, "2": gone})

    async def flush(session: Any) -> None:
        assert await session.aget("name") == "bob"
        await session.aflush()

    response = await get(http_app(flush), path="/page/?_s=1", cookie=cookie)
    assert session_cookie(response).value == alice  # one session left: a bare key
    assert await SessionStore(alice).aget("name") == "alice"


async def test_a_new_alias_past_max_aliases_is_refused_with_a_400(  # type: ignore[no-untyped-def]
    settings, r: redis.Redis
) -> None:
    settings.SESSION_NG = {**settings.SESSION_NG, "MAX_ALIASES": 2}
    signed_in = [await make_session(_auth_user_id=str(n)) for n in (1, 2)]
    cookie = format_cookie({"0": signed_in[0], "1": signed_in[1]})
    response = await get(http_app(set_color), path="/page/?_s=2", cookie=cookie)
    assert response["status"] == 400
    assert set_cookies(response) == []
    assert response["body"] == (
        b"This browser already has the most signed-in accounts allowed (2). "
        b"Sign out of one of them, then try again."
    )
    assert len(r.keys(f"{conf.snapshot().namespace}:sessions:*:expires")) == 2  # nothing stored


async def test_a_new_alias_ends_an_anonymous_session_to_make_room(  # type: ignore[no-untyped-def]
    settings, r: redis.Redis
) -> None:
    settings.SESSION_NG = {**settings.SESSION_NG, "MAX_ALIASES": 2}
    alice, anonymous = await make_session(_auth_user_id="1"), await make_session(n=1)
    cookie = format_cookie({"0": alice, "1": anonymous})
    response = await get(http_app(set_color), path="/page/?_s=2", cookie=cookie)
    assert response["status"] == 200
    sent = parse_cookie(session_cookie(response).value)
    assert set(sent) == {"0", "2"}
    assert sent["0"] == alice
    assert not await SessionStore().aexists(anonymous)


async def test_concurrent_requests_keep_their_own_scopes() -> None:
    class PathEcho(AsyncConsumer):  # type: ignore[misc]
        async def http_request(self, event: dict[str, Any]) -> None:
            await self.scope["session"].asave()
            await asyncio.sleep(0.05 if self.scope["path"] == "/first/" else 0)
            await self.send({"type": "http.response.start", "status": 200, "headers": []})
            body = self.scope["path"].encode()
            await self.send({"type": "http.response.body", "body": body})

    app = SessionMiddlewareStack(PathEcho.as_asgi())
    first, second = await asyncio.gather(
        HttpCommunicator(app, "GET", "/first/").get_response(),
        HttpCommunicator(app, "GET", "/second/").get_response(),
    )
    assert (first["body"], second["body"]) == (b"/first/", b"/second/")
    first_key = session_cookie(first).value
    assert first_key != session_cookie(second).value


async def test_concurrent_sockets_keep_their_own_scopes() -> None:
    class PathEcho(WebsocketConsumer):  # type: ignore[misc]
        def connect(self) -> None:
            self.accept()

        def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            self.send(text_data=self.scope["path"])

    app = SessionMiddlewareStack(PathEcho.as_asgi())
    first, second = WebsocketCommunicator(app, "/first/"), WebsocketCommunicator(app, "/second/")
    assert (await first.connect())[0]
    assert (await second.connect())[0]
    await second.send_to(text_data="?")
    assert await second.receive_from() == "/second/"
    await first.send_to(text_data="?")
    assert await first.receive_from() == "/first/"
    await first.disconnect()
    await second.disconnect()


# --- Channels' login() and logout() on session_ng's stores ---------------------


class Caught:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


async def test_login_logs_in_rotates_and_switches_users(django_user_model) -> None:  # type: ignore[no-untyped-def]
    create = sync_to_async(django_user_model.objects.create_user)
    bob, bill = await create("bob", password="x"), await create("bill", password="x")
    session = SessionStore()
    await session.acreate()
    first_key = session.session_key
    scope: dict[str, Any] = {"session": session}
    assert isinstance(await get_user(scope), AnonymousUser)
    caught = Caught()
    user_logged_in.connect(caught)
    try:
        await login(scope, bob)
        assert [c["user"] for c in caught.calls] == [bob]
        assert scope["user"] == bob
        assert await get_user(scope) == bob
        assert session[SESSION_KEY] == str(bob.pk)
        assert session.session_key != first_key  # rotated
        await sync_to_async(session.save)()
        assert await SessionStore(session.session_key).aget(SESSION_KEY) == str(bob.pk)
        assert not await SessionStore().aexists(first_key)

        await login(scope, bill)
        assert await get_user(scope) == bill
        assert session[SESSION_KEY] == str(bill.pk)
    finally:
        user_logged_in.disconnect(caught)


async def test_login_needs_a_session_and_a_user() -> None:
    with pytest.raises(ValueError, match="Cannot find session in scope"):
        await login({}, None)
    session = SessionStore()
    await session.acreate()
    with pytest.raises(ValueError, match="User must be passed"):
        await login({"session": session}, None)


async def test_logout_ends_the_login_and_only_a_login(django_user_model) -> None:  # type: ignore[no-untyped-def]
    bob = await sync_to_async(django_user_model.objects.create_user)("bob", password="x")
    session = SessionStore()
    await session.acreate()
    scope: dict[str, Any] = {"session": session}
    caught = Caught()
    user_logged_out.connect(caught)
    try:
        await logout(scope)  # nobody logged in: no signal, no user put in the scope
        assert caught.calls == []
        assert "user" not in scope
        await login(scope, bob)
        logged_in_key = session.session_key
        await logout(scope)
        assert [c["user"] for c in caught.calls] == [bob]
        assert isinstance(scope["user"], AnonymousUser)
        assert isinstance(await get_user(scope), AnonymousUser)
        assert SESSION_KEY not in session
        assert not await SessionStore().aexists(logged_in_key)
    finally:
        user_logged_out.disconnect(caught)

"""session_ng.channels with Channels' WebsocketCommunicator and real Redis."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
import redis
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from channels.testing import WebsocketCommunicator

from session_ng import keys
from session_ng.aliases import format_cookie
from session_ng.backends.redis import SessionStore
from session_ng.channels import AuthMiddlewareStack, SessionMiddlewareStack, SessionRefreshMixin
from session_ng.store import driver

# Channels closes stale database connections around every message.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _touch_script_loaded(r: redis.Redis) -> None:
    # A server's first touch sends touch.lua itself (NOSCRIPT, then EVAL): the
    # round trips counted below are those of a server that has it, whichever
    # test runs first.
    r.script_load(driver.TOUCH.source)


class AsyncEcho(SessionRefreshMixin, AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"{self.scope['session'].get('name')}:{text_data}")


class AsyncJsonEcho(SessionRefreshMixin, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"name": self.scope["session"].get("name"), "got": content})


class SyncEcho(SessionRefreshMixin, WebsocketConsumer):
    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=f"{self.scope['session'].get('name')}:{text_data}")


class SyncJsonEcho(SessionRefreshMixin, JsonWebsocketConsumer):
    def connect(self) -> None:
        self.accept()

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"name": self.scope["session"].get("name"), "got": content})


class Throttled(AsyncEcho):
    session_refresh_interval = 60.0


ALL = [AsyncEcho, AsyncJsonEcho, SyncEcho, SyncJsonEcho]


async def make_session(**data: Any) -> str:
    s = SessionStore()
    await s.aupdate(data)
    await s.asave()
    assert s.session_key is not None
    return s.session_key


def communicator(consumer: type, cookie: str | None, path: str = "/ws/") -> WebsocketCommunicator:
    headers = [(b"cookie", f"sessionid={cookie}".encode())] if cookie else []
    return WebsocketCommunicator(SessionMiddlewareStack(consumer.as_asgi()), path, headers=headers)


async def say(comm: WebsocketCommunicator, consumer: type, text: str) -> Any:
    if consumer in (AsyncJsonEcho, SyncJsonEcho):
        await comm.send_json_to({"text": text})
        return await comm.receive_json_from()
    await comm.send_to(text_data=text)
    return await comm.receive_from()


def expected(consumer: type, name: str | None, text: str) -> Any:
    if consumer in (AsyncJsonEcho, SyncJsonEcho):
        return {"name": name, "got": {"text": text}}
    return f"{name}:{text}"


@pytest.mark.parametrize("consumer", ALL)
async def test_every_message_refreshes_the_session(
    consumer: type, r: redis.Redis, roundtrips, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "WEBSOCKET_REFRESH_INTERVAL": 0}
    key = await make_session(name="ann")
    shadow = keys.session_shadow("session_ng", key)
    comm = communicator(consumer, key)
    connected, _ = await comm.connect()
    assert connected
    await say(comm, consumer, "warm")
    for i in range(3):
        r.pexpire(shadow, 10_000)  # most of the idle time gone
        roundtrips.reset()
        assert await say(comm, consumer, f"m{i}") == expected(consumer, "ann", f"m{i}")
        assert roundtrips.count == 1  # one touch, no data read or written
        assert r.pttl(shadow) > 1_209_650_000  # the idle timeout and a period
    await comm.disconnect()


@pytest.mark.parametrize("consumer", ALL)
async def test_by_default_a_socket_refreshes_once_per_renewal_period(
    consumer: type, r: redis.Redis, roundtrips, settings
) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "RENEWAL_PERIOD": 0.3}
    key = await make_session(name="ann")
    hash_name = keys.session_hash("session_ng", key)
    comm = communicator(consumer, key)
    assert (await comm.connect())[0]
    await say(comm, consumer, "warm")  # the first message refreshes
    accessed = int(r.hget(hash_name, "a") or 0)
    roundtrips.reset()
    for i in range(3):
        assert await say(comm, consumer, f"m{i}") == expected(consumer, "ann", f"m{i}")
    assert roundtrips.count == 0  # within the period: no round trip at all
    await asyncio.sleep(0.35)
    assert await say(comm, consumer, "later") == expected(consumer, "ann", "later")
    assert roundtrips.count == 1  # one touch, which renews whether or not a read would
    assert int(r.hget(hash_name, "a") or 0) > accessed
    await comm.disconnect()


@pytest.mark.parametrize("consumer", ALL)
async def test_a_message_after_the_session_ended_closes_with_1008(
    consumer: type, r: redis.Redis
) -> None:
    key = await make_session(name="bob")
    comm = communicator(consumer, key)
    await comm.connect()
    await SessionStore(key).adelete()  # logout in another tab
    if consumer in (AsyncJsonEcho, SyncJsonEcho):
        await comm.send_json_to({"text": "hello?"})
    else:
        await comm.send_to(text_data="hello?")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 1008}


async def test_flush_and_expiry_close_it_too(r: redis.Redis, settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "WEBSOCKET_CLOSE_CODE": 4001}
    key = await make_session(name="cy")
    comm = communicator(AsyncEcho, key)
    await comm.connect()
    s = SessionStore(key)
    await s.aload()
    await s.aflush()
    await comm.send_to(text_data="x")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4001}

    short = SessionStore()
    await short.aset("name", "dee")
    await short.aset_expiry(1)
    await short.asave()
    comm = communicator(AsyncEcho, short.session_key)
    await comm.connect()
    await asyncio.sleep(1.1)
    await comm.send_to(text_data="still there?")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4001}


async def test_the_alias_in_the_query_string_picks_the_session() -> None:
    first = await make_session(name="first")
    second = await make_session(name="second")
    cookie = format_cookie({"0": first, "1": second})
    for path, name in (("/ws/", "first"), ("/ws/?_s=1", "second"), ("/ws/?_s=<x>", "first")):
        comm = communicator(AsyncEcho, cookie, path)
        await comm.connect()
        assert await comm.receive_nothing() is True
        await comm.send_to(text_data="hi")
        assert await comm.receive_from() == f"{name}:hi"
        await comm.disconnect()


async def test_an_anonymous_socket_is_left_alone(roundtrips) -> None:  # type: ignore[no-untyped-def]
    comm = communicator(AsyncEcho, None)
    await comm.connect()
    roundtrips.reset()
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "None:hi"
    assert roundtrips.count == 0
    await comm.disconnect()


async def test_the_refresh_interval_saves_round_trips(roundtrips) -> None:  # type: ignore[no-untyped-def]
    key = await make_session(name="eve")
    comm = communicator(Throttled, key)
    await comm.connect()
    roundtrips.reset()
    for i in range(5):
        await comm.send_to(text_data=str(i))
        await comm.receive_from()
    assert roundtrips.count == 1  # the first message only
    await comm.disconnect()


async def test_the_interval_setting_applies_to_every_consumer(settings, roundtrips) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "WEBSOCKET_REFRESH_INTERVAL": 60}
    key = await make_session(name="eve")
    comm = communicator(AsyncEcho, key)
    await comm.connect()
    roundtrips.reset()
    for i in range(5):
        await comm.send_to(text_data=str(i))
        assert await comm.receive_from() == f"eve:{i}"
    assert roundtrips.count == 1  # the first message only
    await comm.disconnect()


class EveryMessage(AsyncEcho):
    session_refresh_interval = 0.0


async def test_the_consumers_interval_wins_over_the_setting(settings, roundtrips) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "WEBSOCKET_REFRESH_INTERVAL": 60}
    key = await make_session(name="eve")
    comm = communicator(EveryMessage, key)
    await comm.connect()
    roundtrips.reset()
    for i in range(3):
        await comm.send_to(text_data=str(i))
        assert await comm.receive_from() == f"eve:{i}"
    assert roundtrips.count == 3
    await comm.disconnect()


class WhoAmI(SessionRefreshMixin, AsyncWebsocketConsumer):
    """Says who ``scope["user"]`` is once connected."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send(text_data=user.get_username() if user.is_authenticated else "(anonymous)")


async def who_am_i(session_key: str) -> str:
    """What WhoAmI says behind AuthMiddlewareStack to a browser with this cookie."""
    comm = WebsocketCommunicator(
        AuthMiddlewareStack(WhoAmI.as_asgi()),
        "/ws/",
        headers=[(b"cookie", f"sessionid={session_key}".encode())],
    )
    await comm.connect()
    said: str = await comm.receive_from()
    await comm.disconnect()
    return said


async def signed_in(username: str, django_user_model: Any) -> str:
    """The key of a session in which a new user ``username`` is logged in."""
    from asgiref.sync import sync_to_async

    user = await sync_to_async(django_user_model.objects.create_user)(username, password="x")
    s = SessionStore()
    await s.aupdate(
        {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
        }
    )
    await s.asave()
    assert s.session_key is not None
    return s.session_key


async def test_auth_stack_gives_the_user(django_user_model) -> None:  # type: ignore[no-untyped-def]
    assert await who_am_i(await signed_in("alice", django_user_model)) == "alice"


# --- closing at once, through the channel layer's groups ----------------------------


@pytest.fixture(autouse=True)
def _fresh_layers() -> Any:
    # The in-memory layer's queues belong to the event loop that made them;
    # every test runs on a loop of its own.
    from channels.layers import channel_layers

    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


async def closed_with(comm: WebsocketCommunicator) -> Any:
    """What the server sent, without the client sending anything first."""
    return await comm.receive_output(timeout=2)


@pytest.mark.parametrize("consumer", ALL)
async def test_delete_elsewhere_closes_the_socket_at_once(consumer: type) -> None:
    key = await make_session(name="fay")
    comm = communicator(consumer, key)
    assert (await comm.connect())[0]
    await SessionStore(key).adelete()  # e.g. "sign out everywhere" in another tab
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}


async def test_flush_rotation_and_sync_delete_close_at_once() -> None:
    from asgiref.sync import sync_to_async

    # Logout in another tab: flush() deletes the session.
    key = await make_session(name="gus")
    comm = communicator(AsyncEcho, key)
    await comm.connect()
    other_tab = SessionStore(key)
    await other_tab.aload()
    await other_tab.aflush()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}

    # Login in another tab rotates the key: the old key is gone.
    key = await make_session(name="hal")
    comm = communicator(AsyncEcho, key)
    await comm.connect()
    other_tab = SessionStore(key)
    await other_tab.aload()
    await other_tab.acycle_key()
    assert other_tab.session_key not in (None, key)
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}

    # A sync view (a thread of its own) deleting it: the receiver still runs.
    key = await make_session(name="ida")
    comm = communicator(SyncEcho, key)
    await comm.connect()
    await sync_to_async(SessionStore(key).delete)()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}

    # Sync rotation too.
    key = await make_session(name="jan")
    comm = communicator(AsyncEcho, key)
    await comm.connect()

    def rotate() -> None:
        store = SessionStore(key)
        store.load()
        store.cycle_key()

    await sync_to_async(rotate)()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}


async def test_expiry_reported_by_the_sweep_closes_at_once(settings) -> None:  # type: ignore[no-untyped-def]
    from session_ng.events import asweep_and_report

    settings.SESSION_NG = {**settings.SESSION_NG, "WEBSOCKET_CLOSE_CODE": 4001}
    short = SessionStore()
    await short.aset("name", "kim")
    await short.aset_expiry(1)
    await short.asave()
    comm = communicator(AsyncEcho, short.session_key)
    await comm.connect()
    await asyncio.sleep(1.1)
    # What the worker does (here in this process, sharing its in-memory layer).
    assert await asweep_and_report(touch_current=True) >= 1
    assert await closed_with(comm) == {"type": "websocket.close", "code": 4001}


async def test_only_the_ended_sessions_sockets_close() -> None:
    ended, kept = await make_session(name="lea"), await make_session(name="max")
    comm_ended, comm_kept = communicator(AsyncEcho, ended), communicator(AsyncEcho, kept)
    anonymous = communicator(AsyncEcho, None)
    for comm in (comm_ended, comm_kept, anonymous):
        assert (await comm.connect())[0]
    await SessionStore(ended).adelete()
    assert await closed_with(comm_ended) == {"type": "websocket.close", "code": 1008}
    assert await comm_kept.receive_nothing() is True
    assert await anonymous.receive_nothing() is True
    await comm_kept.send_to(text_data="still here")
    assert await comm_kept.receive_from() == "max:still here"
    for comm in (comm_kept, anonymous):
        await comm.disconnect()


async def test_a_closed_socket_leaves_its_group() -> None:
    from channels.layers import get_channel_layer

    from session_ng.socket_groups import group_name

    key = await make_session(name="ned")
    comm = communicator(AsyncEcho, key)
    await comm.connect()
    layer = get_channel_layer()
    assert layer is not None
    assert len(layer.groups[group_name(key)]) == 1
    await comm.disconnect()
    assert group_name(key) not in layer.groups


async def test_without_a_channel_layer_the_next_message_closes(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CHANNEL_LAYERS = {}
    key = await make_session(name="ola")
    comm = communicator(AsyncEcho, key)
    await comm.connect()
    await SessionStore(key).adelete()
    assert await comm.receive_nothing() is True  # nobody could tell it
    await comm.send_to(text_data="anyone?")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 1008}


def test_group_names_are_short_ascii_and_hide_the_key() -> None:
    from session_ng.socket_groups import group_name

    key = "a" * 128
    name = group_name(key)
    assert name.startswith("session_ng.")
    assert len(name) == len("session_ng.") + 40 < 100
    assert key[:40] not in name
    assert group_name(key) == name
    assert group_name("b" * 128) != name


class RefusesProtocolCodes:
    """Wraps an ASGI app with daphne's rule (from Autobahn): an application may
    close only with 1000 or 3000-4999; anything else raises in send()."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        async def strict_send(message: dict[str, Any]) -> None:
            code = message.get("code")
            closing = message["type"] == "websocket.close" and code is not None
            if closing and code != 1000 and not 3000 <= code <= 4999:
                raise Exception(f"invalid close code {code}")
            await send(message)

        return await self.app(scope, receive, strict_send)


@pytest.mark.parametrize("consumer", ALL)
async def test_a_server_refusing_1008_gets_4008(consumer: type, caplog) -> None:  # type: ignore[no-untyped-def]
    from session_ng import channels as session_ng_channels

    session_ng_channels._warned_codes.clear()  # the warning is once per process
    key = await make_session(name="pia")
    app = RefusesProtocolCodes(SessionMiddlewareStack(consumer.as_asgi()))
    comm = WebsocketCommunicator(app, "/ws/", headers=[(b"cookie", f"sessionid={key}".encode())])
    assert (await comm.connect())[0]
    await SessionStore(key).adelete()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 4008}
    assert "refused websocket close code 1008" in caplog.text


async def test_a_code_the_server_accepts_is_sent_as_is(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**settings.SESSION_NG, "WEBSOCKET_CLOSE_CODE": 4401}
    key = await make_session(name="quy")
    app = RefusesProtocolCodes(SessionMiddlewareStack(AsyncEcho.as_asgi()))
    comm = WebsocketCommunicator(app, "/ws/", headers=[(b"cookie", f"sessionid={key}".encode())])
    await comm.connect()
    await SessionStore(key).adelete()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 4401}


class LogsInOverTheSocket(SessionRefreshMixin, AsyncWebsocketConsumer):
    """channels.auth.login() rotates the scope's session (cycle_key) and saves it."""

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "login":
            session = self.scope["session"]
            await session.acycle_key()
            await session.aset("_auth_user_id", "7")
            await session.asave()
            await self.send(text_data=session.session_key)
        else:
            await self.send(text_data=f"{self.scope['session'].get('name')}:{text_data}")


async def test_logging_in_over_the_socket_keeps_it_open_and_follows_the_new_key() -> None:
    key = await make_session(name="rae")
    comm = communicator(LogsInOverTheSocket, key)
    await comm.connect()
    await comm.send_to(text_data="login")
    new_key = await comm.receive_from()
    assert new_key != key
    assert await comm.receive_nothing() is True  # its own rotation did not close it
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "rae:hi"
    # It now belongs to the new key's group: a logout elsewhere closes it.
    await SessionStore(new_key).adelete()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}


async def test_a_broken_channel_layer_never_fails_a_logout(settings, caplog) -> None:  # type: ignore[no-untyped-def]
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "no.such.Layer"}}
    key = await make_session(name="sal")
    await SessionStore(key).adelete()  # no exception
    assert await SessionStore().aexists(key) is False
    assert "could not tell the sockets of session" in caplog.text


class StuckLayer:
    """A channel layer whose group_send never returns (a Redis that hangs)."""

    def __init__(self, **kwargs: Any) -> None:
        pass

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await asyncio.sleep(30)


async def test_a_hanging_channel_layer_delays_a_logout_by_at_most_the_timeout(
    settings, caplog, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import time

    from session_ng import socket_groups

    monkeypatch.setattr(socket_groups, "SEND_TIMEOUT", 0.2)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.test_channels.StuckLayer"}}
    key = await make_session(name="tom")
    started = time.monotonic()
    await SessionStore(key).adelete()
    assert time.monotonic() - started < 1.0
    assert await SessionStore().aexists(key) is False
    assert "could not tell the sockets of session" in caplog.text


class SignsInAnonymously(SessionRefreshMixin, AsyncWebsocketConsumer):
    """An anonymous socket whose user signs in over it: its session is new."""

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        session = self.scope["session"]
        if text_data == "login":
            await session.acycle_key()  # no key yet: Django's way makes a new session
            await session.aset("_auth_user_id", "8")
            await session.asave()
            await self.send(text_data=session.session_key)
        else:
            await self.send(text_data=f"{session.get('_auth_user_id')}:{text_data}")


async def test_an_anonymous_socket_that_signs_in_joins_its_new_sessions_group() -> None:
    comm = communicator(SignsInAnonymously, None)
    await comm.connect()
    await comm.send_to(text_data="login")
    key = await comm.receive_from()
    assert await comm.receive_nothing() is True
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "8:hi"
    await SessionStore(key).adelete()  # signed out elsewhere: closed at once
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}


class SyncLogsInOverTheSocket(SessionRefreshMixin, WebsocketConsumer):
    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        session = self.scope["session"]
        if text_data == "login":
            session.cycle_key()
            session["_auth_user_id"] = "9"
            session.save()
            self.send(text_data=session.session_key)
        else:
            self.send(text_data=f"{session.get('name')}:{text_data}")


async def test_a_sync_consumer_follows_its_own_login_too() -> None:
    key = await make_session(name="uma")
    comm = communicator(SyncLogsInOverTheSocket, key)
    await comm.connect()
    await comm.send_to(text_data="login")
    new_key = await comm.receive_from()
    assert new_key != key
    assert await comm.receive_nothing() is True
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "uma:hi"
    await SessionStore(new_key).adelete()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}


# --- after the end, and the edges of a socket's life --------------------------------


class ThrottledSync(SyncEcho):
    session_refresh_interval = 60.0


@pytest.mark.parametrize("consumer", [Throttled, ThrottledSync])
async def test_a_message_after_the_end_is_dropped_unhandled(consumer: type) -> None:
    key = await make_session(name="lou")
    comm = communicator(consumer, key)
    await comm.connect()
    assert await say(comm, consumer, "hi") == "lou:hi"  # refreshed: the next is not due
    await SessionStore(key).adelete()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}
    # A frame already on its way when the socket closed: never handled.
    await comm.send_to(text_data="late")
    assert await comm.receive_nothing() is True
    await comm.disconnect()


async def test_an_end_that_meets_a_dead_touch_closes_once(caplog) -> None:  # type: ignore[no-untyped-def]
    key = await make_session(name="max")
    comm = communicator(AsyncEcho, key)
    await comm.connect()
    await SessionStore(key).adelete()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}
    # Another end message for the same socket (a second worker, a retry).
    from channels.layers import get_channel_layer

    from session_ng.socket_groups import END_MESSAGE, group_name

    layer = get_channel_layer()
    await layer.group_send(group_name(key), {"type": END_MESSAGE, "group": group_name(key)})
    await comm.send_to(text_data="late")
    assert await comm.receive_nothing() is True  # no second close, no echo
    assert "refused websocket close code" not in caplog.text
    await comm.disconnect()


class SignsInOnConnect(SessionRefreshMixin, AsyncWebsocketConsumer):
    """Logs the socket in while connecting (as a token in the URL would)."""

    async def connect(self) -> None:
        session = self.scope["session"]
        await session.acycle_key()
        await session.aset("_auth_user_id", "7")
        await session.asave()
        await self.accept()
        await self.send(text_data=session.session_key)


async def test_a_socket_signed_in_while_connecting_joins_its_sessions_group() -> None:
    comm = communicator(SignsInOnConnect, None)
    await comm.connect()
    key = await comm.receive_from()
    await SessionStore(key).adelete()  # before it sent any message
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}


class SyncSignsInOnConnect(SessionRefreshMixin, WebsocketConsumer):
    def connect(self) -> None:
        session = self.scope["session"]
        session.cycle_key()
        session["_auth_user_id"] = "7"
        session.save()
        self.accept()
        self.send(text_data=session.session_key)


async def test_a_sync_socket_signed_in_while_connecting_joins_its_group_too() -> None:
    comm = communicator(SyncSignsInOnConnect, None)
    await comm.connect()
    key = await comm.receive_from()
    await SessionStore(key).adelete()
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}


async def test_a_layer_without_groups_is_not_joined(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.test_channels.NoGroupsLayer"}}
    settings.SESSION_NG = {**settings.SESSION_NG, "RENEWAL_PERIOD": 0.2}
    key = await make_session(name="ned")
    comm = communicator(AsyncEcho, key)
    assert (await comm.connect())[0]
    assert await say(comm, AsyncEcho, "hi") == "ned:hi"
    await SessionStore(key).adelete()
    # Nothing can tell it at once: its first message once its renewal period
    # is over (the interval between refreshes) closes it.
    await comm.send_to(text_data="again")
    assert await comm.receive_from() == "ned:again"
    await asyncio.sleep(0.25)
    await comm.send_to(text_data="later")
    assert await closed_with(comm) == {"type": "websocket.close", "code": 1008}


from channels.layers import InMemoryChannelLayer  # noqa: E402


class NoGroupsLayer(InMemoryChannelLayer):  # type: ignore[misc]
    """A layer with channels but no groups extension (no group_* methods:
    Channels refuses to connect a consumer with groups to it)."""

    extensions: ClassVar[list[str]] = ["flush"]

    def __getattribute__(self, name: str) -> Any:
        if name in ("group_add", "group_discard", "group_send"):
            raise AttributeError(name)
        return super().__getattribute__(name)


async def test_a_long_lived_socket_renews_its_group_membership(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"group_expiry": 2},
        }
    }
    from channels.layers import get_channel_layer

    from session_ng.socket_groups import group_name

    key = await make_session(name="ola")
    comm = communicator(AsyncEcho, key)
    await comm.connect()
    layer = get_channel_layer()
    (joined,) = layer.groups[group_name(key)].values()
    await asyncio.sleep(1.1)  # over half the layer's group_expiry
    assert await say(comm, AsyncEcho, "hi") == "ola:hi"
    (renewed,) = layer.groups[group_name(key)].values()
    assert renewed - joined >= 1.0
    assert await say(comm, AsyncEcho, "again") == "ola:again"
    (unchanged,) = layer.groups[group_name(key)].values()
    assert unchanged == renewed  # renewed once per half expiry, not per message
    await comm.disconnect()


async def test_auth_stack_accepts_a_session_signed_with_a_fallback_key(  # type: ignore[no-untyped-def]
    settings, django_user_model
) -> None:
    key = await signed_in("bea", django_user_model)
    # SECRET_KEY rotated since the user logged in.
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-for-the-rotation-test-0123456789"
    assert await who_am_i(key) == "bea"
    # Not rotated (the browser's cookie could not follow) and not flushed.
    assert await SessionStore().aexists(key) is True

    # A hash no key matches (the password changed): flushed, as Django does.
    settings.SECRET_KEY_FALLBACKS = []
    assert await who_am_i(key) == "(anonymous)"
    assert await SessionStore().aexists(key) is False


# Stored ids are not signed: one the pk field refuses, or one past the range of
# its column, must not reach the ORM.
@pytest.mark.parametrize("user_id", ["not-a-number", "9" * 25])
async def test_auth_stack_treats_an_unreadable_user_id_as_anonymous(user_id: str) -> None:
    s = SessionStore()
    await s.aupdate(
        {
            "_auth_user_id": user_id,
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        }
    )
    await s.asave()
    assert s.session_key is not None
    assert await who_am_i(s.session_key) == "(anonymous)"
    assert await SessionStore().aexists(s.session_key) is True  # kept, only not trusted

"""session_ng.channels with Channels' WebsocketCommunicator and real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

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

# Channels closes stale database connections around every message.
pytestmark = pytest.mark.django_db(transaction=True)


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
    consumer: type, r: redis.Redis, roundtrips
) -> None:  # type: ignore[no-untyped-def]
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
        assert r.pttl(shadow) > 1_209_590_000
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


async def test_auth_stack_gives_the_user(django_user_model) -> None:  # type: ignore[no-untyped-def]
    from asgiref.sync import sync_to_async

    user = await sync_to_async(django_user_model.objects.create_user)("alice", password="x")
    s = SessionStore()
    await s.aupdate(
        {
            "_auth_user_id": str(user.pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": user.get_session_auth_hash(),
        }
    )
    await s.asave()

    class WhoAmI(SessionRefreshMixin, AsyncWebsocketConsumer):
        async def connect(self) -> None:
            await self.accept()
            await self.send(text_data=self.scope["user"].get_username())

    app = AuthMiddlewareStack(WhoAmI.as_asgi())
    comm = WebsocketCommunicator(
        app, "/ws/", headers=[(b"cookie", f"sessionid={s.session_key}".encode())]
    )
    await comm.connect()
    assert await comm.receive_from() == "alice"
    await comm.disconnect()

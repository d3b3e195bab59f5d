"""The ASGI app the websocket bench serves with daphne: one echo consumer
plain, with ``SessionRefreshMixin``, and with the mixin and a one-second
``session_refresh_interval`` (0: a touch on every message), otherwise identical."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django_application = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from session_ng.channels import SessionMiddlewareStack, SessionRefreshMixin  # noqa: E402


class Echo(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)


class RefreshingEcho(SessionRefreshMixin, Echo):
    pass


class EveryMessageEcho(SessionRefreshMixin, Echo):
    # A touch on every message: what the default (once per renewal period)
    # saves, and the worst case of the knob.
    session_refresh_interval = 0.0


application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": SessionMiddlewareStack(
            URLRouter(
                [
                    path("ws/plain/", Echo.as_asgi()),
                    path("ws/refresh/", RefreshingEcho.as_asgi()),
                    path("ws/every-message/", EveryMessageEcho.as_asgi()),
                ]
            )
        ),
    }
)

"""The demo's chat: one room, over a websocket that keeps the HTTP session alive."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from session_ng.channels import SessionRefreshMixin

ROOM = "demo.chat"


class ChatConsumer(SessionRefreshMixin, AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Every message a user sends slides their session's idle timer (the mixin);
    their session ending anywhere closes this socket with code 1008."""

    # Channels joins these at connect; the mixin adds the session's group.
    groups: list[str] | None = [ROOM]  # noqa: RUF012 - Channels' own idiom

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # refuses the handshake: the page asks to sign in
            return
        await self.accept()
        await self.send_json({"type": "hello", "user": user.get_username()})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        text = str(content.get("text", "")).strip()[:500] if isinstance(content, dict) else ""
        if text:
            name = self.scope["user"].get_username()
            await self.channel_layer.group_send(
                ROOM, {"type": "chat.message", "user": name, "text": text}
            )

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "message", "user": event["user"], "text": event["text"]})

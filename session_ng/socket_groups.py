"""Close every websocket bound to a session when that session ends.

A socket that uses ``SessionRefreshMixin`` joins one channel-layer group per
session (``group_name(key)``) when it connects. When the session ends (deleted,
flushed, rotated away by ``cycle_key()``, or expired), the receivers below
send one ``session_ng.end`` message to that group, and each consumer in it, in
whichever process holds it, closes its socket. They run where the end is
seen: in the process that deleted or rotated the session, and in
``manage.py session_ng_worker`` for expiries and deletes made behind
session_ng's back. So every process must share the channel layer (e.g.
channels_redis); an in-memory layer only reaches sockets of its own process.

Without a channel layer nothing is sent, and the mixin notices the end at the
socket's next message instead.

Only connected (from ``AppConfig.ready``) when Channels is installed and
``CHANNEL_LAYERS`` is set, so sites without Channels pay nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from django.conf import settings

from session_ng.conf import conf
from session_ng.signals import session_deleted, session_expired, session_rotated

logger = logging.getLogger("session_ng.channels")

# The message type consumers receive; Channels calls its ``session_ng_end``.
END_MESSAGE = "session_ng.end"
# Seconds a group_send may take before the end is left to the next message.
SEND_TIMEOUT = 1.0


def group_name(session_key: str) -> str:
    """The group of the sockets bound to ``session_key``.

    A hash, not the key: group names end up in the channel layer's storage
    and logs, and must be short ASCII (under 100 characters).
    """
    digest = hashlib.sha256(f"{conf.snapshot().namespace}:{session_key}".encode()).hexdigest()
    return f"session_ng.{digest[:40]}"


def wanted() -> bool:
    """True when Channels is importable and a channel layer is configured."""
    if not getattr(settings, "CHANNEL_LAYERS", None):
        return False
    try:
        import channels.layers  # noqa: F401
    except ImportError:
        return False
    return True


async def close_sockets(session_key: str, reason: str) -> None:
    """Tell the sockets bound to ``session_key`` to close (``reason`` is for them).

    Never raises, and gives up after ``SEND_TIMEOUT``: the session has ended
    whatever happens here (its sockets still close at their next message), and
    a logout must not fail, nor the worker stall, because the channel layer is
    misconfigured, down or slow.
    """
    try:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        group = group_name(session_key)
        # The group goes with the message: a socket that has moved on to a new
        # key (it logged in over itself) ignores the end of its old one.
        message = {"type": END_MESSAGE, "reason": reason, "group": group}
        await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT)
    except Exception:
        logger.exception("could not tell the sockets of session %s… to close", session_key[:6])


async def _deleted(sender: Any, session_key: str, **kwargs: Any) -> None:
    await close_sockets(session_key, "deleted")


async def _expired(sender: Any, session_key: str, **kwargs: Any) -> None:
    await close_sockets(session_key, "expired")


async def _rotated(sender: Any, session_key: str, **kwargs: Any) -> None:
    await close_sockets(session_key, "rotated")


def connect() -> None:
    session_deleted.connect(_deleted, dispatch_uid="session_ng.socket_groups.deleted")
    session_expired.connect(_expired, dispatch_uid="session_ng.socket_groups.expired")
    session_rotated.connect(_rotated, dispatch_uid="session_ng.socket_groups.rotated")

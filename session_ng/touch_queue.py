"""Websocket refreshes of one event loop, sent together.

A refresh renews the session's idle timer whether or not a read would (it is
sent once per refresh interval, see SessionRefreshMixin): the messages in
between must not let the session end sooner than its idle timeout.

Each message a ``SessionRefreshMixin`` consumer receives waits for its
session's touch (the socket must close rather than handle a message of an
ended session), but the touches of many sockets need not each pay for a
round trip of their own. With nothing in flight, a touch goes out at once, by
itself; touches that arrive while one is in flight wait for it and then go out
together in one call of the touch script (and sockets of the same session share
one touch).
An idle server pays no added latency; a busy one pays one round trip per
batch instead of one per message. (The same idea as Nagle's algorithm.)
"""

from __future__ import annotations

import asyncio
import weakref

from session_ng.store import driver, sessions


class TouchQueue:
    def __init__(self) -> None:
        self.waiting: dict[str, list[asyncio.Future[bool]]] = {}
        self.sending = False
        self._drainer: asyncio.Task[None] | None = None  # held: tasks are weakly referenced

    async def touch(self, session_key: str) -> bool:
        """Slide ``session_key``'s idle timer; False if the session has ended."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self.waiting.setdefault(session_key, []).append(future)
        try:
            if not self.sending:
                # This caller sends the batch its own touch is in, then hands
                # what queued meanwhile to a task, so no caller waits on
                # others' batches.
                self.sending = True
                try:
                    await self._send_one()
                finally:
                    self.sending = False
                    if self.waiting:
                        self.sending = True
                        self._drainer = loop.create_task(self._drain())
            return await future
        except asyncio.CancelledError:
            # Nobody will read this touch's answer (or error) now.
            future.cancel()
            raise

    async def _drain(self) -> None:
        try:
            while self.waiting:
                await self._send_one()
        except asyncio.CancelledError:
            # Only a loop that shuts down cancels this task: its waiters must
            # not wait for an answer that no one will send.
            waiting, self.waiting = self.waiting, {}
            for futures in waiting.values():
                for future in futures:
                    future.cancel()
            raise
        finally:
            self.sending = False

    async def _send_one(self) -> None:
        batch, self.waiting = self.waiting, {}
        session_keys = list(batch)
        try:
            alive = await driver.arun(sessions.touch_now(session_keys, force=True))
        except asyncio.CancelledError:
            # The sender's task was cancelled (its socket went away): the
            # others still need their answers; the drain task sends them.
            for key, futures in batch.items():
                self.waiting.setdefault(key, []).extend(futures)
            raise
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, is_alive in zip(session_keys, alive, strict=True):
            for future in batch[key]:
                if not future.done():
                    future.set_result(is_alive)


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TouchQueue] = (
    weakref.WeakKeyDictionary()
)


def queue() -> TouchQueue:
    """The queue of the running event loop."""
    loop = asyncio.get_running_loop()
    touch_queue = _queues.get(loop)
    if touch_queue is None:
        touch_queue = _queues[loop] = TouchQueue()
    return touch_queue

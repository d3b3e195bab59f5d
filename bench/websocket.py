"""Websocket messages per second with and without ``SessionRefreshMixin``.

One daphne process serves ``bench.ws_app`` (testproject's settings, so the
channel layer is channels_redis on the bench's redis-server, as on a real
site); for each count in ``CONNECTIONS``, that many websocket clients in this
process each send ``MESSAGES`` messages one after the other, waiting for every
echo. Rounds alternate between the plain echo consumer and the same consumer
with the mixin, so both see the same machine; the best round of each counts.
The mixin's cost is one touch script per message (counted here from Redis's
own command statistics); concurrent sockets share round trips (touch_queue).
An echo does nothing else, so this is the mixin's worst case.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from websockets.asyncio.client import connect

from bench.report import TIMES
from harness.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = (1, 4, 16)
MESSAGES = 600  # per connection and round
ROUNDS = 4  # of each kind, alternating
TARGET = 0.95


@dataclass(frozen=True)
class WebsocketFigures:
    connections: int
    plain: float  # messages per second
    refreshing: float
    every_message: float  # with session_refresh_interval = 0: a touch per message
    touches_per_message: float  # EVALSHA calls the mixin added, per message

    @property
    def ratio(self) -> float:
        return self.refreshing / self.plain


@contextmanager
def daphne(redis_url: str) -> Iterator[int]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="session-ng-ws-bench-") as tmp:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "testproject.settings",
            "REDIS_URL": redis_url,
            "DJANGO_DB": str(Path(tmp) / "db.sqlite3"),
            "DJANGO_DEBUG": "0",
        }
        with open(Path(tmp) / "daphne.log", "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                 "bench.ws_app:application"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        text = (Path(tmp) / "daphne.log").read_text(errors="replace")
                        raise RuntimeError(f"daphne did not start:\n{text}") from None
                    time.sleep(0.1)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _client(port: int, path: str, session_key: str, go: asyncio.Event) -> None:
    async with connect(
        f"ws://127.0.0.1:{port}{path}", additional_headers={"Cookie": f"sessionid={session_key}"}
    ) as ws:
        await ws.send("warm-up")
        await ws.recv()
        await go.wait()
        for i in range(MESSAGES):
            text = f"m{i}"
            await ws.send(text)
            if await ws.recv() != text:
                raise RuntimeError(f"{path}: the echo was not {text!r}")


async def _round(port: int, path: str, session_keys: list[str]) -> float:
    """One round: every client sends its messages; messages per second."""
    go = asyncio.Event()
    clients = [asyncio.create_task(_client(port, path, key, go)) for key in session_keys]
    await asyncio.sleep(0.3)  # all connected and warmed up
    started = time.perf_counter()
    go.set()
    await asyncio.gather(*clients)
    return len(session_keys) * MESSAGES / (time.perf_counter() - started)


def _evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def measure_websocket(redis_url: str, progress: Callable[[str], None]) -> list[WebsocketFigures]:
    from session_ng.backends.redis import SessionStore

    session_keys = []
    for i in range(max(CONNECTIONS)):
        store = SessionStore()
        store["name"] = f"user{i}"
        store.save()
        assert store.session_key is not None
        session_keys.append(store.session_key)
    client = redis.Redis.from_url(redis_url)
    results = []
    try:
        with daphne(redis_url) as port:
            for count in CONNECTIONS:
                best = {"/ws/plain/": 0.0, "/ws/refresh/": 0.0, "/ws/every-message/": 0.0}
                added = {"/ws/plain/": 0, "/ws/refresh/": 0, "/ws/every-message/": 0}
                for n in range(ROUNDS):
                    # Alternating the order cancels a steady drift (daphne
                    # warming up, the machine's load) instead of handing it
                    # all to whichever configuration comes last.
                    for path in list(best) if n % 2 == 0 else list(best)[::-1]:
                        progress(f"  websocket {path} x{count} round {n + 1}/{ROUNDS}")
                        before = _evalsha_calls(client)
                        rate = asyncio.run(_round(port, path, session_keys[:count]))
                        added[path] += _evalsha_calls(client) - before
                        best[path] = max(best[path], rate)
                messages = ROUNDS * count * (MESSAGES + 1)  # the warm-up message too
                results.append(
                    WebsocketFigures(
                        connections=count,
                        plain=best["/ws/plain/"],
                        refreshing=best["/ws/refresh/"],
                        every_message=best["/ws/every-message/"],
                        touches_per_message=(added["/ws/refresh/"] - added["/ws/plain/"])
                        / messages,
                    )
                )
    finally:
        client.close()
    return results


def render(results: list[WebsocketFigures]) -> str:
    lines = [
        f"Websocket echo under daphne: messages/s without and with SessionRefreshMixin "
        f"(N connections x {MESSAGES} messages, best of {ROUNDS} alternating rounds; "
        f"target >= {TARGET}{TIMES}):",
        "",
        "  connections  plain msg/s  mixin msg/s  ratio  touches/msg  verdict"
        "  mixin, every message  ratio",
    ]
    for f in results:
        verdict = "met" if f.ratio >= TARGET else "MISSED"
        lines.append(
            f"  {f.connections:>11}  {f.plain:>11.0f}  {f.refreshing:>11.0f}  "
            f"{f.ratio:>4.2f}{TIMES}  {f.touches_per_message:>11.2f}  {verdict:>7}"
            f"  {f.every_message:>20.0f}  {f.every_message / f.plain:>4.2f}{TIMES}"
        )
    lines += [
        "",
        "The target is for the default (a refresh once per renewal period, a minute",
        "for two-week sessions); the last column is session_refresh_interval = 0,",
        "a touch on every message.",
    ]
    return "\n".join(lines)

"""``python -m bench.breakdown``: where the time of a request and of a
websocket refresh goes, for the targets ``make bench`` reports as missed.

``make bench`` times whole requests; this splits them. For a read and a write
request of session_ng and of the cache engine (the same views and middleware
as the bench), it measures, per request:

* wall time, and the CPU time of this process (the rest is waiting: for Redis
  to run the commands, and for the operating system to wake the process when
  the reply has come);
* the CPU time of Redis (its main thread, from ``INFO cpu``): the commands
  and scripts, and the socket reads and writes around them.

Then, for a websocket message, the cost in the consumer's process of one
refresh through session_ng (``touch_queue``), of a ``PING`` through
``redis.asyncio``, and of a ``PING`` over a bare asyncio socket: the floor of
any per-message Redis call from Python.

It only reports (nothing is recorded in the docs): run it on a quiet machine,
and compare figures of one run with each other.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from bench.tables import grid
from harness.redis_server import RedisServer

if TYPE_CHECKING:  # imports Django models: only once settings are configured
    from bench.client import Browser

ROUNDS = 5  # alternating between the engines; the median round counts
REQUESTS = 1000  # per round
CALLS = 2000  # per round, for the websocket figures


@dataclass(frozen=True)
class Split:
    wall: float  # µs per request or call
    cpu: float  # µs of this process's CPU
    redis: float  # µs of Redis's CPU


def redis_cpu(client: redis.Redis) -> float:
    """Microseconds of CPU Redis's main thread has used: commands, scripts,
    and the socket reads and writes around them. (``INFO commandstats``
    would count a script's inner commands twice, and no socket work.)"""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]) * 1e6


def timed(client: redis.Redis, count: int, run: Callable[[], object]) -> Split:
    before = redis_cpu(client)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Split(wall / count * 1e6, cpu / count * 1e6, (redis_cpu(client) - before) / count)


async def atimed(client: redis.Redis, count: int, run: Callable[[], Awaitable[object]]) -> Split:
    before = redis_cpu(client)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Split(wall / count * 1e6, cpu / count * 1e6, (redis_cpu(client) - before) / count)


def median(splits: list[Split]) -> Split:
    return Split(
        statistics.median(s.wall for s in splits),
        statistics.median(s.cpu for s in splits),
        statistics.median(s.redis for s in splits),
    )


def _kinds(browser: Browser) -> dict[str, Callable[[], object]]:
    counter = iter(range(10**9))  # a new value each time: a write always writes
    return {
        "read": lambda: browser.get("/read"),
        "write": lambda: browser.get("/write", n=next(counter)),
    }


def requests(redis_url: str, client: redis.Redis) -> dict[tuple[str, str], Split]:
    from bench.client import Browser
    from bench.engines import CACHE, OURS, activate

    rounds: dict[tuple[str, str], list[Split]] = {}
    for n in range(ROUNDS):
        for engine in (OURS, CACHE) if n % 2 == 0 else (CACHE, OURS):
            browser = Browser(activate(engine, redis_url))
            browser.get("/setup")
            for kind, run in _kinds(browser).items():
                for _ in range(50):
                    run()  # warm: pooled connections, cached scripts
                rounds.setdefault((engine.label, kind), []).append(timed(client, REQUESTS, run))
    return {key: median(splits) for key, splits in rounds.items()}


class _Pong(asyncio.Protocol):
    """A bare asyncio client that expects ``+PONG`` for each ``PING``."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(data)


async def _websocket(port: int, client: redis.Redis) -> dict[str, Split]:
    import redis.asyncio

    from session_ng.backends.redis import SessionStore
    from session_ng.touch_queue import queue

    store = SessionStore()
    await store.aset("name", "someone")
    await store.asave()
    key = store.session_key
    assert key is not None
    touches = queue()
    pinger = redis.asyncio.Redis(host="127.0.0.1", port=port)
    loop = asyncio.get_running_loop()
    transport, bare = await loop.create_connection(_Pong, "127.0.0.1", port)

    async def bare_ping() -> bytes:
        bare.reply = loop.create_future()
        bare.transport.write(b"*1\r\n$4\r\nPING\r\n")
        return await bare.reply

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "refresh (session_ng touch)": lambda: touches.touch(key),
        "PING, redis.asyncio": pinger.ping,
        "PING, bare asyncio socket": bare_ping,
    }
    rounds: dict[str, list[Split]] = {}
    try:
        for _ in range(ROUNDS):
            for label, call in calls.items():
                for _ in range(100):
                    await call()
                rounds.setdefault(label, []).append(await atimed(client, CALLS, call))
    finally:
        transport.close()
        await pinger.aclose()  # session_ng's own client closes with the loop
    return {label: median(splits) for label, splits in rounds.items()}


def render(by_request: dict[tuple[str, str], Split], by_call: dict[str, Split]) -> str:
    rows = [["request", "wall µs", "CPU µs (this process)", "waiting µs", "Redis CPU µs"]]
    for (engine, kind), s in sorted(by_request.items(), key=lambda item: (item[0][1], item[0][0])):
        rows.append(
            [f"{kind}, {engine}", *(f"{v:.0f}" for v in (s.wall, s.cpu, s.wall - s.cpu, s.redis))]
        )
    calls = [["one call per websocket message", "wall µs", "CPU µs (this process)", "Redis CPU µs"]]
    for label, s in by_call.items():
        calls.append([label, *(f"{v:.0f}" for v in (s.wall, s.cpu, s.redis))])
    return "\n".join(
        [
            f"Per request, median of {ROUNDS} rounds of {REQUESTS} (the bench's views, "
            "Django's SessionMiddleware):",
            "",
            *grid(rows),
            "",
            f"Per call in an asyncio process, median of {ROUNDS} rounds of {CALLS}:",
            "",
            *grid(calls),
        ]
    )


def main() -> int:
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="session-ng-bd-") as tmp:
        from bench.settings import prepared

        with prepared(server.url, server.port, Path(tmp) / "bench.sqlite3"):
            client = redis.Redis.from_url(server.url)
            try:
                by_request = requests(server.url, client)
                by_call = asyncio.run(_websocket(server.port, client))
            finally:
                client.close()
    print(render(by_request, by_call))
    return 0


if __name__ == "__main__":
    sys.exit(main())

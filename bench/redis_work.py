"""``python -m bench.redis_work``: what a request costs Redis, in instructions.

``make bench`` times requests; on a shared two-core machine those times, and
even their ratios, move by a tenth or more from one run to the next. What
Redis executes for a request does not: this runs a private ``redis-server``
under Valgrind's callgrind and counts the instructions it executes (its
commands, scripts, socket reads and writes, event loop) while the bench's own
requests run against it, through Django's ``SessionMiddleware`` as in ``make
bench``. It also counts a websocket refresh, and two references: a ``GET``
of one small value, and a script that does nothing (``EVALSHA`` of ``return
1``), the floor of any script call.

Each figure is the count over REQUESTS requests (after a warm-up, with what
they need set up beforehand), divided by REQUESTS. The server's own timer
work while they run is counted too, so a figure repeats to within a few
hundred instructions rather than exactly. It only prints. Needs
``valgrind`` and its ``vgdb`` (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import redis

from bench.tables import grid, redis_server_version_at
from harness.redis_server import RedisServer

REQUESTS = 200
WARMUP = 20
INSTALL_HINT = (
    "bench.redis_work needs valgrind, with vgdb beside it, on PATH or in VALGRIND: "
    "apt-get install valgrind"
)


class Callgrind:
    """Count what the server under callgrind executes while calls run."""

    def __init__(self, server: RedisServer, out: Path, vgdb: str) -> None:
        assert server.process is not None
        self.pid = str(server.process.pid)
        self.out = out
        self.vgdb = vgdb

    def _monitor(self, command: str) -> None:
        # Callgrind's monitor commands, through vgdb (callgrind_control finds
        # the process by listing vgdb's pipes, which is less reliable).
        done = subprocess.run(
            [self.vgdb, f"--pid={self.pid}", command], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"vgdb {command} failed: {done.stdout}{done.stderr}")

    def _dumps(self) -> list[Path]:
        return sorted(
            self.out.parent.glob(self.out.name + ".*"), key=lambda p: int(p.suffix.lstrip("."))
        )

    def _dump(self) -> int:
        """Dump the counts since the last zero; the instructions they sum to."""
        before = len(self._dumps())
        self._monitor("dump")
        deadline = time.monotonic() + 10
        while len(self._dumps()) == before:
            if time.monotonic() > deadline:
                raise RuntimeError("callgrind wrote no dump")
            time.sleep(0.05)
        dump = self._dumps()[-1]
        for _ in range(100):  # written by then, but make sure it is whole
            for line in dump.read_text().splitlines():
                if line.startswith("summary:"):
                    return int(line.split()[1])
            time.sleep(0.05)
        raise RuntimeError(f"no summary line in {dump}")

    def per_call(self, calls: Sequence[Callable[[], object]]) -> float:
        """Instructions per call, over ``calls`` run one after the other."""
        self._monitor("zero")
        for call in calls:
            call()
        return self._dump() / len(calls)


def measure(counter: Callgrind, redis_url: str, user_pks: list[int]) -> dict[str, dict[str, float]]:
    from bench.engines import CACHE, CACHE_SLIDING, OURS, activate
    from bench.measure import KINDS, scenarios
    from session_ng.backends.redis import SessionStore
    from session_ng.conf import conf
    from session_ng.store import driver, sessions
    from session_ng.store.records import now_ms

    figures: dict[str, dict[str, float]] = {}
    for engine in (CACHE, CACHE_SLIDING, OURS):
        site = activate(engine, redis_url)
        row = figures[engine.label] = {}
        for kind, scenario in scenarios(site, user_pks).items():
            if kind not in KINDS:
                continue
            for i in range(WARMUP):
                scenario.run(scenario.prepare(i), i)
            # Set-up (a login's fresh anonymous session) stays outside the count.
            browsers = [(scenario.prepare(n), n) for n in range(WARMUP, WARMUP + REQUESTS)]
            row[kind] = counter.per_call([partial(scenario.run, b, n) for b, n in browsers])

    store = SessionStore()
    store["name"] = "someone"
    store.save()
    key = store.session_key
    assert key is not None

    def touch() -> None:
        driver.run(sessions.touch(conf.snapshot().namespace, key, now_ms()))

    for _ in range(WARMUP):
        touch()
    figures[OURS.label]["websocket refresh"] = counter.per_call([touch] * REQUESTS)

    client = redis.Redis.from_url(redis_url)
    try:
        client.set("bench:small", "x" * 32)
        empty = client.script_load("return 1")
        hash_key, shadow = f"bench:{{{key}}}", f"bench:{{{key}}}:expires"
        args = (hash_key, shadow, now_ms(), "1", 300_000)
        for _ in range(WARMUP):
            client.get("bench:small")
            client.evalsha(empty, 2, *args)
        figures["reference"] = {
            "GET of a small value": counter.per_call(
                [partial(client.get, "bench:small")] * REQUESTS
            ),
            "EVALSHA of `return 1`": counter.per_call(
                [partial(client.evalsha, empty, 2, *args)] * REQUESTS
            ),
        }
    finally:
        client.close()
    return figures


def render(figures: dict[str, dict[str, float]], version: str) -> str:
    from bench.engines import CACHE, CACHE_SLIDING, OURS
    from bench.measure import KINDS
    from bench.report import TIMES

    theirs, sliding, ours = (figures[e.label] for e in (CACHE, CACHE_SLIDING, OURS))
    rows = [["request", CACHE.label, CACHE_SLIDING.label, OURS.label, "ratio to cache"]]
    for kind in KINDS:
        ratio = f"{ours[kind] / theirs[kind]:.1f}{TIMES}"
        counts = (f"{engine[kind]:,.0f}" for engine in (theirs, sliding, ours))
        rows.append([kind, *counts, ratio])
    rows.append(["websocket refresh", "-", "-", f"{ours['websocket refresh']:,.0f}", ""])
    references = [["reference", "instructions"]]
    references += [[label, f"{n:,.0f}"] for label, n in figures["reference"].items()]
    return "\n".join(
        [
            f"Instructions redis-server {version} executes per request "
            f"(callgrind, {REQUESTS} requests each, Django's SessionMiddleware):",
            "",
            *grid(rows),
            "",
            *grid(references),
        ]
    )


def main() -> int:
    valgrind = os.environ.get("VALGRIND") or shutil.which("valgrind")
    if valgrind is None or shutil.which("vgdb", path=str(Path(valgrind).parent)) is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="session-ng-rw-") as tmp:
        out = Path(tmp) / "callgrind.out"
        wrapper = (valgrind, "--tool=callgrind", f"--callgrind-out-file={out}")
        # Valgrind needs longer than the usual start-up timeout.
        with RedisServer(wrapper=wrapper).start(timeout=60) as server:
            from bench.settings import prepared

            with prepared(server.url, server.port, Path(tmp) / "bench.sqlite3") as user_pks:
                counter = Callgrind(server, out, str(Path(valgrind).with_name("vgdb")))
                figures = measure(counter, server.url, user_pks)
                version = redis_server_version_at(server.url)
    print(render(figures, version))
    return 0


if __name__ == "__main__":
    sys.exit(main())

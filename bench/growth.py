"""``python -m bench.growth [--no-write] [--sizes 1000,1000000]``: costs against Redis's size.

Does a request, a sweep of the due expiration buckets or a user's session list
cost more when Redis holds a million sessions than when it holds a thousand?
They should not: each touches the keys of the sessions it is about (the
request's, the due ones, the user's), found by name, never by a scan.

One private ``redis-server`` per size (never the machine's Redis) is filled
through session_ng's real save path with that many logged-in sessions
(``bench.growth_fill``: five per user, last active at times spread over the
two-week idle timeout, so their expiration buckets cover ~20,000 minutes).
Then, in interleaved rounds that alternate between the servers (so a change in
the machine's load falls on every size alike), each size gets the same work:

* **request, read** and **request, write**: a ``GET`` through Django's
  ``SessionMiddleware`` (as ``bench.measure`` times them) with the cookie of
  a filled session drawn at random, a new one for every request; the view
  reads an attribute (a load), or sets one (a load and a save: the session's
  first since the fill);
* **sweep**: ``events.sweep_and_report()`` (what the worker and
  ``clearsessions`` run) over due buckets holding exactly ``DUE`` sessions
  that ended in the previous minute, made for each round;
* **find_sessions**: ``api.find_sessions(user)`` for a user, drawn at random,
  with five sessions.

Times are medians over the rounds of the mean per operation. The exact
evidence is what Redis did: round trips (socket writes, ``bench.counting``),
the commands Redis counted in ``INFO commandstats`` (those run inside Lua
scripts included) and Redis's own execution time of those commands (every
command logged by ``SLOWLOG``), per operation, counted after the timing.
Memory per session, taken right after the fill, is Redis's ``used_memory``
grown by the fill, divided by the number of sessions, next to the sum of
``MEMORY USAGE`` over every key (the measure ``bench`` uses). The table is
printed and, unless ``--no-write``, written into docs/operations.rst between
its ``growth-table`` markers.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from bench.record import MarkersMissing, check, record
from bench.tables import grid, package_version, recorded_at, redis_server_version
from harness.redis_server import RedisServer

if TYPE_CHECKING:
    from django.contrib.sessions.middleware import SessionMiddleware

    from bench.growth_fill import Memory

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.rst"
START = ".. growth-table-start"
END = ".. growth-table-end"

DEFAULT_SIZES = (1_000, 1_000_000)
MIN_SIZE = 1_000
ROUNDS = 21
WARMUP = 5  # untimed operations of each kind before each round's timed ones
PER_ROUND = 40  # requests or find_sessions() calls timed per round and size
DUE = 100  # sessions ended and due in each sweep
COUNTED = 11  # operations counted (round trips, commands, Redis's time) per kind and size
# Requests go to sessions drawn at random from the whole population, each one
# written at most once (by the timed writes or one counted request), so that
# every write is a session's first save since the fill, at every size.
TIMED = ROUNDS * (WARMUP + PER_ROUND)
REQUESTS = TIMED + 2 * COUNTED
assert REQUESTS <= MIN_SIZE
KINDS = ("read", "write", "sweep", "find")
LABELS = {
    "read": "request, read (load)",
    "write": "request, write (load + save)",
    "sweep": f"sweep, {DUE} due sessions",
    "find": "find_sessions(), 5 sessions",
}


def progress(message: str) -> None:
    # stderr, so that stdout is the table alone.
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Span:
    low: int
    high: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Span:
        return cls(min(values), max(values))

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass
class Size:
    """One filled server and what the measurements need to know about it."""

    sessions: int
    server: RedisServer
    client: redis.Redis
    # The object SESSION_NG is set to while this size is measured: kept, so
    # that session_ng's settings snapshot and client are built once per size.
    session_ng: dict[str, Any]
    # The sessions requests go to, and the users find_sessions() asks about,
    # drawn at random from the whole population (Redis has to reach them in
    # memory that a million sessions make large).
    request_keys: list[str] = field(default_factory=list)
    find_users: list[int] = field(default_factory=list)
    users: int = 0
    fill_seconds: float = 0.0
    before: Memory | None = None
    after: Memory | None = None
    key_bytes: dict[str, int] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    round_trips: dict[str, Span] = field(default_factory=dict)
    commands: dict[str, Span] = field(default_factory=dict)
    # Redis's own execution time of an operation (SLOWLOG), median of COUNTED.
    server_micros: dict[str, float] = field(default_factory=dict)
    served: int = 0  # sessions handed out to counted requests so far

    @property
    def label(self) -> str:
        return f"{self.sessions:,}"


def activate(size: Size) -> None:
    """Point session_ng at this size's server."""
    from django.conf import settings

    settings.SESSION_NG = size.session_ng


# --- commands, as Redis counts them ------------------------------------------

# The bench's own commands around an operation, not the operation's.
OWN_COMMANDS = ("cmdstat_info", "cmdstat_slowlog")
# SLOWLOG names the client of every entry; commands run by a script show this
# one (their time is part of the script's entry already).
SCRIPT_CLIENT = b"?:0"


@dataclass
class Counted:
    round_trips: int = 0
    commands: int = 0
    server_micros: int = 0


def _command_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(s["calls"]) for name, s in stats.items() if not name.startswith(OWN_COMMANDS)}


def log_every_command(client: redis.Redis) -> None:
    """Have SLOWLOG record every command with its execution time (µs)."""
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 100_000)


def _server_micros(client: redis.Redis) -> int:
    entries: list[dict[str, Any]] = client.slowlog_get(-1)
    return sum(
        int(entry["duration"])
        for entry in entries
        if entry["client_address"] != SCRIPT_CLIENT
        and not entry["command"].upper().startswith((b"INFO", b"SLOWLOG"))
    )


@contextmanager
def counted(client: redis.Redis) -> Iterator[Counted]:
    """Round trips, Redis commands and Redis's own execution time of the body.

    Needs ``log_every_command`` for the time.
    """
    from bench.counting import counting

    figures = Counted()
    before = _command_calls(client)
    client.slowlog_reset()
    with counting() as count:
        yield figures
    figures.server_micros = _server_micros(client)
    after = _command_calls(client)
    figures.round_trips = count.round_trips
    figures.commands = sum(calls - before.get(name, 0) for name, calls in after.items())


# --- the operations ----------------------------------------------------------


def _request(site: SessionMiddleware, session_key: str, kind: str, n: int) -> None:
    from django.http import HttpResponse

    from bench.client import Browser

    browser = Browser(site, session_key)
    if kind == "read":
        response = browser.get("/read")
        # A session not found would be a cheaper, different request.
        if not isinstance(response, HttpResponse) or response.content != b"dark":
            raise RuntimeError(f"session {session_key[:6]}… did not load")
    else:
        browser.get("/write", n=n)
        if browser.session_key != session_key:
            raise RuntimeError(f"session {session_key[:6]}… was not saved in place")


@dataclass(frozen=True)
class DueSweep:
    """A sweep's set-up: DUE ended sessions filed under ``minute``, the cursor
    just before it, and the clock the sweep is run with."""

    minute: int
    now: int


def prepare_sweep(size: Size, seed: int) -> DueSweep:
    """Make DUE sessions that ended in the previous minute, due now.

    They belong to users of the upper half (find_sessions() asks the lower
    half), one each. The cursor is set to the minute before theirs, as a
    worker sweeping every few seconds leaves it, so the sweep walks the same
    two buckets at every size: theirs and the current minute's.
    """
    from bench.growth_fill import Session, save_sessions
    from session_ng import keys
    from session_ng.conf import conf
    from session_ng.store import records
    from session_ng.store.records import now_ms

    minute = now_ms() // records.MINUTE_MS - 1
    half = size.users // 2
    due = [
        # Ending in (minute - 1, minute] (epoch minutes): filed under minute.
        Session(
            user=half + 1 + j % (size.users - half),
            ends=minute * records.MINUTE_MS - 1_000 - 10 * j,
        )
        for j in range(DUE)
    ]
    save_sessions(size.client, due, seed)
    size.client.set(keys.sweep_cursor(conf.snapshot().namespace), minute - 1)
    # The sweep's clock: in the minute after theirs (so it walks exactly their
    # bucket and the next), and never ahead of Redis's clock, which expires
    # their shadow keys.
    next_minute = (minute + 1) * records.MINUTE_MS
    now = max(min(now_ms(), next_minute + records.MINUTE_MS - 1), next_minute + 1)
    time.sleep(0.005)  # their shadow keys were given 1 ms
    return DueSweep(minute, now)


def sweep(prepared: DueSweep) -> None:
    from session_ng.events import sweep_and_report

    ended = sweep_and_report(now=prepared.now, touch_current=True)
    if ended != DUE:
        raise RuntimeError(f"the sweep reported {ended} ends, not {DUE}")


def find(user: int) -> None:
    from session_ng.api import find_sessions

    found = len(find_sessions(user))
    if found != 5:
        raise RuntimeError(f"user {user} has {found} sessions, not 5")


def time_round(size: Size, kind: str, site: SessionMiddleware, n: int) -> float:
    """Mean nanoseconds per operation of one round of ``kind`` at ``size``."""
    activate(size)
    if kind == "sweep":
        prepared = prepare_sweep(size, seed=n)
        gc.collect()
        began = time.perf_counter_ns()
        sweep(prepared)
        return time.perf_counter_ns() - began
    first = n * (WARMUP + PER_ROUND)

    def run(i: int) -> None:
        if kind == "find":
            find(size.find_users[i])
        else:
            _request(site, size.request_keys[i], kind, i)

    for i in range(first, first + WARMUP):
        run(i)
    gc.collect()
    total = 0
    for i in range(first + WARMUP, first + WARMUP + PER_ROUND):
        began = time.perf_counter_ns()
        run(i)
        total += time.perf_counter_ns() - began
    return total / PER_ROUND


def count_one(size: Size, kind: str, site: SessionMiddleware, n: int) -> Counted:
    """Round trips, commands and Redis's time of one operation of ``kind``.

    Requests go to sessions untouched so far, as the timed ones do.
    """
    activate(size)
    operation: Callable[[], None]
    if kind == "sweep":
        operation = partial(sweep, prepare_sweep(size, seed=10_000 + n))
    elif kind == "find":
        operation = partial(find, size.find_users[TIMED + n])
    else:
        fresh = size.request_keys[TIMED + size.served]
        size.served += 1
        operation = partial(_request, site, fresh, kind, n)
    with counted(size.client) as figures:
        operation()
    return figures


def count(sizes: list[Size], site: SessionMiddleware) -> None:
    """COUNTED operations of each kind at each size, the sizes alternating."""
    for size in sizes:
        log_every_command(size.client)
    for kind in KINDS:
        figures: dict[int, list[Counted]] = {size.sessions: [] for size in sizes}
        for n in range(COUNTED):
            for size in sizes if n % 2 == 0 else sizes[::-1]:
                figures[size.sessions].append(count_one(size, kind, site, n))
        for size in sizes:
            mine = figures[size.sessions]
            size.round_trips[kind] = Span.of([f.round_trips for f in mine])
            size.commands[kind] = Span.of([f.commands for f in mine])
            size.server_micros[kind] = statistics.median(f.server_micros for f in mine)


def spread(sizes: list[Size]) -> None:
    """Each figure's rounds, lowest / median / highest µs (stderr: for judging noise)."""
    for kind in KINDS:
        parts = []
        for size in sizes:
            low, mid, high = (
                min(size.times[kind]) / 1000,
                _micros(size, kind),
                max(size.times[kind]) / 1000,
            )
            parts.append(f"{size.label}: {low:,.0f} / {mid:,.0f} / {high:,.0f}")
        progress(f"  {LABELS[kind]}: {'; '.join(parts)}")


def measure(sizes: list[Size]) -> None:
    from bench.client import make_site

    site = make_site()
    for n in range(ROUNDS):
        progress(f"timing, round {n + 1}/{ROUNDS}")
        for kind in KINDS:
            # Alternating the order cancels a steady drift in the machine's load.
            for size in sizes if n % 2 == 0 else sizes[::-1]:
                size.times[kind].append(time_round(size, kind, site, n))
    progress("rounds, µs lowest / median / highest:")
    spread(sizes)
    progress("counting round trips, commands and Redis's time")
    count(sizes, site)


# --- filling -------------------------------------------------------------------


def fill(size: Size) -> None:
    from bench import growth_fill
    from bench.growth_fill import SESSIONS_PER_USER

    activate(size)
    growth_fill.load_scripts(size.client)
    size.before = growth_fill.memory(size.client)
    written, size.fill_seconds = growth_fill.fill(size.client, size.sessions, progress)
    size.after = growth_fill.memory(size.client)
    size.users = size.sessions // SESSIONS_PER_USER
    rng = random.Random(size.sessions)
    size.request_keys = [written[i] for i in rng.sample(range(size.sessions), REQUESTS)]
    # The lower half of the users: the due sessions of the sweeps are the upper half's.
    size.find_users = [rng.randrange(size.users // 2) + 1 for _ in range(TIMED + COUNTED)]
    progress(f"  MEMORY USAGE of every key ({size.after.keys:,} keys)")
    size.key_bytes = growth_fill.key_bytes(size.client)


# --- the report ----------------------------------------------------------------


def _micros(size: Size, kind: str) -> float:
    return statistics.median(size.times[kind]) / 1000


def _per_session(size: Size, value: float) -> str:
    return f"{value / size.sessions:,.0f}"


def _memory(size: Size) -> tuple[Memory, Memory]:
    if size.before is None or size.after is None:
        raise RuntimeError(f"size {size.label} was not filled")
    return size.before, size.after


def operations_table(sizes: list[Size]) -> list[str]:
    from bench.report import times

    small, large = sizes[0], sizes[-1]
    header = [
        "operation",
        *(f"µs at {s.label}" for s in sizes),
        f"{large.label} / {small.label}",
        "round trips",
        "Redis commands",
        "Redis µs",
    ]
    rows = [header]
    for kind in KINDS:
        rows.append(
            [
                LABELS[kind],
                *(f"{_micros(s, kind):,.0f}" for s in sizes),
                times(_micros(large, kind) / _micros(small, kind)),
                " / ".join(str(s.round_trips[kind]) for s in sizes),
                " / ".join(str(s.commands[kind]) for s in sizes),
                " / ".join(f"{s.server_micros[kind]:,.0f}" for s in sizes),
            ]
        )
    return grid(rows)


def memory_table(sizes: list[Size]) -> list[str]:
    rows = [["bytes per session", *(f"at {s.label}" for s in sizes)]]

    def row(label: str, value: Callable[[Size], float]) -> None:
        rows.append([label, *(_per_session(s, value(s)) for s in sizes)])

    row("used_memory growth / sessions", lambda s: _memory(s)[1].used - _memory(s)[0].used)
    row("  MEMORY USAGE, every key", lambda s: sum(s.key_bytes.values()))
    row("    session hash", lambda s: s.key_bytes["hash"])
    row("    shadow key", lambda s: s.key_bytes["shadow"])
    row("    expiration buckets", lambda s: s.key_bytes["bucket"])
    row("    user indexes", lambda s: s.key_bytes["index"])
    row(
        "  main + expires key tables",
        lambda s: _memory(s)[1].main_table + _memory(s)[1].expires_table,
    )
    rows.append(["keys after the fill", *(f"{_memory(s)[1].keys:,}" for s in sizes)])
    rows.append(
        [
            "fill: seconds (sessions/s)",
            *(f"{s.fill_seconds:.1f} ({s.sessions / s.fill_seconds:,.0f}/s)" for s in sizes),
        ]
    )
    return grid(rows)


def environment(client: redis.Redis) -> str:
    server = redis_server_version(client)
    return (
        f"{recorded_at()}; Python {platform.python_version()}, Django {package_version('Django')}, "
        f"redis-py {package_version('redis')} (hiredis {package_version('hiredis')}), "
        f"redis-server {server}; {os.cpu_count()} CPUs"
    )


def render(sizes: list[Size]) -> str:
    return "\n".join(
        [
            f"Redis holding {' and '.join(s.label for s in sizes)} logged-in sessions "
            "(5 per user, expiries spread over two weeks).",
            f"µs at N: wall time, median of {ROUNDS} interleaved rounds' means per operation.",
            f"Per operation at {' / '.join(s.label for s in sizes)} sessions: round trips; "
            "Redis commands (INFO commandstats,",
            "those run by scripts included); Redis µs: Redis's own execution time (SLOWLOG, "
            f"median of {COUNTED}).",
            "",
            *operations_table(sizes),
            "",
            *memory_table(sizes),
            "",
            environment(sizes[0].client),
        ]
    )


# --- recording -----------------------------------------------------------------


# --- main ----------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if len(sizes) < 2 or sizes[0] < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"give two sizes or more, each at least {MIN_SIZE:,}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument(
        "--no-write", action="store_true", help="print the table only; leave the docs alone"
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        help="numbers of sessions, comma-separated (default: 1000,1000000)",
    )
    args = parser.parse_args(argv)
    if not args.no_write:
        try:
            check(DOC, START, END)  # before minutes of work, not after
        except MarkersMissing as exc:
            parser.error(f"{exc} Use --no-write to print the table only.")

    began = time.perf_counter()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="session-ng-growth-")))
        # One private server per size: figures never depend on, or touch, the
        # machine's Redis, and the sizes can be measured in alternation.
        servers = [stack.enter_context(RedisServer()) for _ in args.sizes]
        from bench.settings import configure

        configure(servers[0].url, servers[0].port, tmp / "bench.sqlite3")

        from django.db import connections

        from session_ng.store import client as session_ng_connection

        # Close what is open on the servers and the database before they go.
        stack.callback(connections.close_all)
        stack.callback(session_ng_connection.reset)
        sizes = []
        for n, server in zip(args.sizes, servers, strict=True):
            client = redis.Redis.from_url(server.url)
            stack.callback(client.close)
            sizes.append(Size(n, server, client, {"REDIS_URL": server.url}))
        for size in sizes:
            progress(f"filling {size.label} sessions")
            fill(size)
        # The fill's garbage collected now, and what is left frozen, so that no
        # long collection lands in a timed operation of either size.
        gc.collect()
        gc.freeze()
        measure(sizes)
        text = render(sizes)

    print(text)
    progress(f"\nbench.growth took {time.perf_counter() - began:.0f} s")
    if not args.no_write:
        try:
            record(text, DOC, START, END)
        except MarkersMissing as exc:
            progress(f"not recorded: {exc}")
            return 1
        progress(f"recorded in {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

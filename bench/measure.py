"""The measurements: every figure of every engine.

Each figure is taken through ``Browser`` requests against the middleware that
``engines.activate`` returned. Nothing here asserts anything: the report
compares the figures with the targets and says what it sees.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from django.contrib.sessions.middleware import SessionMiddleware
from django.db import connection

from bench.client import Browser
from bench.counting import Count, counting
from bench.engines import Engine, activate, flush_redis

# Timing: ROUNDS rounds, each timing every kind on every engine in turn, the
# engines of one kind back to back (in alternating order); the figure is the
# median of an engine's round means. Interleaving this finely keeps a change in
# the machine's load (other processes, CPU clock) from landing on one engine:
# the ratios are what the bench is for. Each round of each engine starts from
# an emptied Redis and a warm-up (pooled connections, cached scripts, Python's
# caches); its size comes from the warm-up, so that a 10 ms SQLite commit and a
# 200 µs Redis read both get rounds long enough to average out timer noise.
ROUNDS = 9
WARMUP = 20
ROUND_NS = 100_000_000
MIN_PER_ROUND, MAX_PER_ROUND = 10, 500
# Requests counted per kind, after a few uncounted ones.
COUNT_WARMUP = 5
COUNT_SAMPLES = 5

KINDS = ("new", "read", "write", "login")

# Lost writes: this many threads share one session, each appending to its own
# list this many times.
THREADS = 16
PER_THREAD = 50
WRITES = THREADS * PER_THREAD

# Bytes per session: this many logged-in sessions, each for its own user.
SESSIONS = 100


@dataclass(frozen=True)
class Span:
    """The smallest and largest of a few counts (equal when it is steady)."""

    low: int
    high: int

    @classmethod
    def of(cls, values: list[int]) -> Span:
        return cls(min(values), max(values))

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


@dataclass(frozen=True)
class KindFigures:
    micros: float | None
    round_trips: Span
    queries: Span
    # µs per request of each round, in round order: the rounds of two engines
    # with the same index ran next to each other (see measure_all).
    rounds: tuple[float, ...] = ()


@dataclass(frozen=True)
class LostWrites:
    stored: int
    errors: int
    error_types: tuple[str, ...] = ()

    @property
    def lost(self) -> int:
        # A request that failed told its client so; only writes that were
        # acknowledged and then vanished count as lost.
        return WRITES - self.errors - self.stored


@dataclass(frozen=True)
class EngineFigures:
    kinds: dict[str, KindFigures]
    lost_writes: LostWrites
    # None for an engine that keeps nothing in Redis.
    bytes_per_session: float | None


@dataclass(frozen=True)
class Scenario:
    """One kind of request: what to set up (untimed) and what to time.

    ``prepare(i)`` returns the browser for the i-th request; ``run`` is the
    request itself, the only part inside the timer and the counter.
    """

    prepare: Callable[[int], Browser]
    run: Callable[[Browser, int], object]


def _with_session(site: SessionMiddleware) -> Browser:
    browser = Browser(site)
    browser.get("/setup")
    return browser


def scenarios(site: SessionMiddleware, user_pks: list[int]) -> dict[str, Scenario]:
    regular = _with_session(site)
    return {
        # No cookie: the view's write creates the session.
        "new": Scenario(lambda i: Browser(site), lambda b, i: b.get("/new")),
        "read": Scenario(lambda i: regular, lambda b, i: b.get("/read")),
        "write": Scenario(lambda i: regular, lambda b, i: b.get("/write", n=i)),
        # login() rotates the key, so every login starts from a fresh
        # anonymous session; making it is setup, not login.
        "login": Scenario(
            lambda i: _with_session(site),
            lambda b, i: b.get("/login", user=user_pks[i % len(user_pks)]),
        ),
        "untouched": Scenario(lambda i: regular, lambda b, i: b.get("/untouched")),
    }


def _round(scenario: Scenario, start: int, size: int) -> float:
    """Mean nanoseconds per request over ``size`` requests."""
    total = 0
    for i in range(start, start + size):
        browser = scenario.prepare(i)
        began = time.perf_counter_ns()
        scenario.run(browser, i)
        total += time.perf_counter_ns() - began
    return total / size


def time_round(scenario: Scenario) -> float:
    """Mean nanoseconds per request of one round, after a warm-up."""
    per_request = _round(scenario, 0, WARMUP)
    size = max(MIN_PER_ROUND, min(MAX_PER_ROUND, int(ROUND_NS // per_request)))
    # Collect garbage left by the set-up now rather than inside a timed request.
    gc.collect()
    return _round(scenario, WARMUP, size)


def count_requests(scenario: Scenario) -> tuple[Span, Span]:
    """Round trips and SQL queries of COUNT_SAMPLES requests, one at a time."""
    for i in range(COUNT_WARMUP):
        scenario.run(scenario.prepare(i), i)
    counts: list[Count] = []
    for i in range(COUNT_WARMUP, COUNT_WARMUP + COUNT_SAMPLES):
        browser = scenario.prepare(i)
        with counting() as count:
            scenario.run(browser, i)
        counts.append(count)
    return (
        Span.of([c.round_trips for c in counts]),
        Span.of([c.queries for c in counts]),
    )


def lost_writes(site: SessionMiddleware) -> LostWrites:
    """THREADS concurrent browsers on one session, each appending to its own list."""
    session_key = _with_session(site).session_key
    start = threading.Barrier(THREADS)
    errors: Counter[str] = Counter()
    lock = threading.Lock()

    def worker(thread: int) -> None:
        browser = Browser(site, session_key)
        try:
            start.wait()
            for n in range(PER_THREAD):
                try:
                    browser.get("/append", thread=thread, n=n)
                except Exception as exc:  # counted and reported, e.g. SQLite "locked"
                    with lock:
                        errors[type(exc).__name__] += 1
        finally:
            # Django opened a DB connection for this thread (db engines); it
            # would otherwise outlive the thread.
            connection.close()

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stored = site.SessionStore(session_key).load()
    entries = sum(len(stored.get(f"t{t}", [])) for t in range(THREADS))
    return LostWrites(entries, errors.total(), tuple(sorted(errors)))


def bytes_per_session(site: SessionMiddleware, redis_url: str, user_pks: list[int]) -> float:
    """``MEMORY USAGE`` of every key in Redis, over SESSIONS logged-in sessions.

    Starts from an empty Redis. Summing every key, not only the sessions' own,
    charges each engine for its shared keys too (expiration buckets, per-user
    indexes).
    """
    flush_redis(redis_url)
    owners = user_pks[:SESSIONS]
    for pk in owners:
        browser = Browser(site)
        browser.get("/shop")
        browser.get("/login", user=pk)
    client = redis.Redis.from_url(redis_url)
    try:
        total = sum(
            client.memory_usage(key, samples=0) or 0 for key in client.scan_iter(count=1000)
        )
    finally:
        client.close()
    return total / len(owners)


def measure_all(
    engines: Sequence[Engine],
    redis_url: str,
    user_pks: list[int],
    progress: Callable[[str], None],
) -> dict[Engine, EngineFigures]:
    rounds: dict[Engine, dict[str, list[float]]] = {e: {k: [] for k in KINDS} for e in engines}
    for n in range(ROUNDS):
        progress(f"timing, round {n + 1}/{ROUNDS}")
        for kind in KINDS:
            # Alternating the order cancels a steady drift instead of handing
            # it all to whichever engine comes last.
            for engine in engines if n % 2 == 0 else engines[::-1]:
                site = activate(engine, redis_url)
                rounds[engine][kind].append(time_round(scenarios(site, user_pks)[kind]))

    results = {}
    for engine in engines:
        progress(f"round trips, lost writes, bytes: {engine.label}")
        site = activate(engine, redis_url)
        figures = {}
        for kind, scenario in scenarios(site, user_pks).items():
            micros = statistics.median(rounds[engine][kind]) / 1000 if kind in KINDS else None
            per_round = tuple(r / 1000 for r in rounds[engine][kind]) if kind in KINDS else ()
            figures[kind] = KindFigures(micros, *count_requests(scenario), per_round)
        lost = lost_writes(site)
        size = bytes_per_session(site, redis_url, user_pks) if engine.redis else None
        results[engine] = EngineFigures(figures, lost, size)
    return results

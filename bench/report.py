"""Turning the figures into the table, the target check and the version line."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.engines import CACHE, OURS, Engine
from bench.measure import KINDS, WRITES, EngineFigures
from bench.tables import grid, package_version, recorded_at, redis_server_version_at

Results = dict[Engine, EngineFigures]

# Round-trip and query columns list the kinds in this order.
COUNTED = (*KINDS, "untouched")
COUNTED_LEGEND = "/".join(kind[0] for kind in COUNTED)  # n/r/w/l/u
# Written by name: ruff (RUF001) rightly flags a literal one as look-alike of "x".
TIMES = "\N{MULTIPLICATION SIGN}"


def times(ratio: float) -> str:
    return f"{ratio:.2f}{TIMES}"


def known(value: float | None) -> float:
    """A figure every engine in the comparison has (timings; bytes for Redis ones)."""
    if value is None:
        raise ValueError("figure missing")
    return value


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    # Our figure as printed, and whether it meets the target (None: report only).
    check: Callable[[Results], tuple[str, bool | None]]


def paired_ratio(figures: EngineFigures, reference: EngineFigures, kind: str) -> float:
    """The median, over rounds, of the ratio of the two engines' times in
    the same round. The rounds of two engines run next to each other, so a
    machine that is slower for a while (a busy neighbour, a throttled CPU)
    slows both sides of a ratio alike, where it would move one median of
    times and not the other."""
    ours, base = figures.kinds[kind].rounds, reference.kinds[kind].rounds
    if not ours or len(ours) != len(base):
        return known(figures.kinds[kind].micros) / known(reference.kinds[kind].micros)
    return statistics.median(a / b for a, b in zip(ours, base, strict=True))


def _ratio(results: Results, kind: str) -> float:
    return paired_ratio(results[OURS], results[CACHE], kind)


def _time_target(kind: str, limit: float) -> Target:
    def check(results: Results) -> tuple[str, bool | None]:
        ratio = _ratio(results, kind)
        return times(ratio), ratio <= limit

    return Target(f"{kind} time", f"<= {times(limit)} cache", check)


def _round_trip_target(kind: str, wanted: int) -> Target:
    def check(results: Results) -> tuple[str, bool | None]:
        span = results[OURS].kinds[kind].round_trips
        return str(span), span.low == span.high == wanted

    return Target(f"{kind} round trips", f"= {wanted}", check)


def _lost_target(results: Results) -> tuple[str, bool | None]:
    lost = results[OURS].lost_writes
    return f"{lost.lost}/{WRITES} ({lost.errors} errors)", lost.lost == 0 and lost.errors == 0


def _bytes_target(results: Results) -> tuple[str, bool | None]:
    ours = known(results[OURS].bytes_per_session)
    reference = known(results[CACHE].bytes_per_session)
    ratio = ours / reference
    return times(ratio), ratio <= BYTES_LIMIT


# The extra keys (shadow key, bucket entry, user index) buy expiry events and
# per-user listing; they may cost half again the cache engine's bytes.
BYTES_LIMIT = 1.5


TARGETS = (
    _time_target("read", 1.0),
    _time_target("write", 0.8),
    _time_target("new", 0.8),
    _round_trip_target("read", 1),
    _round_trip_target("write", 2),
    _round_trip_target("untouched", 0),
    Target("lost writes", "= 0", _lost_target),
    Target("bytes/session", f"<= {times(BYTES_LIMIT)} cache", _bytes_target),
)


def _cells(engine: Engine, figures: EngineFigures, reference: EngineFigures) -> list[str]:
    cells = [engine.label]
    for kind in KINDS:
        micros = known(figures.kinds[kind].micros)
        cells.append(f"{micros:.0f} ({times(paired_ratio(figures, reference, kind))})")
    cells.append("/".join(str(figures.kinds[k].round_trips) for k in COUNTED))
    if engine.sql:
        cells.append("/".join(str(figures.kinds[k].queries) for k in COUNTED))
    else:
        cells.append("-")
    lost = figures.lost_writes
    cells.append(f"{lost.lost}/{WRITES}" + (f" ({lost.errors} err)" if lost.errors else ""))
    size, base_size = figures.bytes_per_session, reference.bytes_per_session
    if size is None or base_size is None:
        cells.append("n/a")
    else:
        cells.append(f"{size:.0f} ({times(size / base_size)})")
    return cells


HEADERS = [
    "engine",
    "new µs",
    "read µs",
    "write µs",
    "login µs",
    f"round trips {COUNTED_LEGEND}",
    f"SQL {COUNTED_LEGEND}",
    "lost writes",
    "bytes/session",
]


def table(results: Results) -> list[str]:
    reference = results[CACHE]
    rows = [HEADERS, *(_cells(e, f, reference) for e, f in results.items())]
    lines = grid(rows)
    notes = [
        f"  {engine.label}: {f.lost_writes.errors} of {WRITES} concurrent requests failed "
        f"({', '.join(f.lost_writes.error_types)}); not counted as lost"
        for engine, f in results.items()
        if f.lost_writes.errors
    ]
    return lines + (["", "Errors in the lost-writes run:", *notes] if notes else [])


def targets(results: Results) -> list[str]:
    rows = [["target", "wanted", "session_ng", "verdict"]]
    for target in TARGETS:
        shown, met = target.check(results)
        verdict = "report only" if met is None else ("met" if met else "MISSED")
        rows.append([target.name, target.wanted, shown, verdict])
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def environment(redis_url: str) -> str:
    server = redis_server_version_at(redis_url)
    return (
        f"{recorded_at()}; Python {platform.python_version()}, Django {package_version('Django')}, "
        f"redis-py {package_version('redis')} (hiredis {package_version('hiredis')}), "
        f"django-redis {package_version('django-redis')}, "
        f"django-redis-sessions {package_version('django-redis-sessions')}, "
        f"redis-server {server}; {os.cpu_count()} CPUs"
    )


def render(results: Results, env: str) -> str:
    return "\n".join(
        [
            f"µs: median per request over the rounds. Ratios (x.xx{TIMES}) are against "
            f"{CACHE.label}: the median of the two engines' ratios in each round.",
            f"Round trips and SQL queries per request: {COUNTED_LEGEND} = "
            "new/read/write/login/untouched.",
            "",
            *table(results),
            "",
            *targets(results),
            "",
            env,
        ]
    )

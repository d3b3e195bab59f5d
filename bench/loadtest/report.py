"""The table of ``make loadtest`` (``bench.record`` writes it into docs/benchmarks.rst)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from bench.loadtest.config import RATIOS, Config
from bench.loadtest.run import Result
from bench.tables import grid, package_version, recorded_at, redis_server_version_at

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.rst"
START = ".. loadtest-table-start"
END = ".. loadtest-table-end"

HEADERS = ("engine", "server", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors", "lost writes")


def _package(name: str) -> str:
    return package_version(name, missing="-")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(redis_url: str, wrk_version: str) -> str:
    server = redis_server_version_at(redis_url)
    return (
        f"{recorded_at()}; {os.cpu_count()} CPUs ({_cpu_model()}); "
        f"Python {platform.python_version()}, "
        f"Django {_package('Django')}, gunicorn {_package('gunicorn')}, "
        f"uvicorn {_package('uvicorn')} (uvloop {_package('uvloop')}, "
        f"httptools {_package('httptools')}), asgiref {_package('asgiref')}, "
        f"redis-py {_package('redis')} (hiredis {_package('hiredis')}), "
        f"django-redis {_package('django-redis')}, redis-server {server}, wrk {wrk_version}"
    )


def _row(result: Result) -> tuple[str, ...]:
    check = result.check
    return (
        result.engine.label,
        result.engine.server,
        f"{result.rate:,.0f}",
        f"{result.percentile(50):.1f}",
        f"{result.percentile(90):.1f}",
        f"{result.percentile(99):.1f}",
        str(result.error_total),
        f"{check.lost}/{check.acknowledged}",
    )


def table(results: list[Result]) -> list[str]:
    return grid([HEADERS, *(_row(r) for r in results)])


def ratios(results: list[Result]) -> str:
    """session_ng's requests/s over the cache engine's, on each server."""
    rates = {result.engine: result.rate for result in results}
    parts = [
        f"{ours.server} {rates[ours] / rates[theirs]:.2f}x"
        for ours, theirs in RATIOS
        if rates.get(ours) and rates.get(theirs)
    ]
    return "session_ng's requests/s over the cache engine's: " + ", ".join(parts)


def details(result: Result) -> str:
    counts = result.counts
    errors = ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items()) if v) or "none"
    check = result.check
    notes = [
        f"{result.engine.title}: {result.requests:,} requests in {result.seconds:.1f}s "
        f"({counts['read']:,} reads, {counts['write']:,} writes, {counts['login']:,} logins; "
        f"{counts['alias']:,} under ?_s=1)",
        f"  requests/s per run: {', '.join(f'{rate:,.0f}' for rate in result.rates)}; "
        f"errors: {errors}",
        "  latency p50/p99 ms: "
        + ", ".join(
            f"{kind} {result.percentile(50, kind):.1f}/{result.percentile(99, kind):.1f}"
            for kind in ("read", "write", "login")
        )
        + f"; max {result.max_ms:.0f}",
        f"  {check.sessions} sessions read back: {check.acknowledged:,} acknowledged writes, "
        f"{check.lost} lost, {check.unexplained} unexplained; "
        f"{result.mismatches} answers that disagreed with the browser's count",
    ]
    usage = result.usage
    if usage.busy:
        capacity = usage.wall * (os.cpu_count() or 1)
        per_request = usage.ours / result.requests * 1000 if result.requests else 0.0
        notes.append(
            f"  CPU while loaded: {usage.busy / capacity:.0%} of {os.cpu_count()} cores busy, "
            f"{usage.others / capacity:.0%} by other processes; "
            f"the load test's own: {per_request:.2f} ms per request"
        )
    if check.unchecked:
        notes.append(f"  {check.unchecked} sessions not checked (a login was in flight at the end)")
    if result.unknown:
        notes.append(f"  {result.unknown} responses wrk's script could not attribute")
    return "\n".join(notes)


def render(results: list[Result], config: Config, env: str) -> str:
    gthread = config.worker_class == "gthread"
    setting = [
        f"{config.rounds} runs per engine (alternating), each {config.duration}s of load "
        f"after {config.warmup}s of warm-up; wrk: {config.threads} threads, "
        "one browser per connection.",
        f"WSGI: gunicorn, {config.workers} {config.worker_class} workers"
        + (f" x {config.worker_threads} threads" if gthread else "")
        + f", sync views; {config.connections} connections"
        + (", kept alive." if gthread else ", one per request."),
        f"ASGI: uvicorn, {config.asgi_workers} workers (uvloop, httptools), async views; "
        f"{config.asgi_connections} connections, kept alive.",
    ]
    return "\n".join(
        [
            "Latency: from sending a request to its whole answer, measured by wrk's script.",
            "Errors: socket errors, timeouts and HTTP statuses >= 400, as wrk counts them.",
            "Lost writes: acknowledged increments missing from the stored sessions, out of all",
            "acknowledged increments.",
            "",
            *table(results),
            "",
            ratios(results),
            "",
            *(details(r) for r in results),
            "",
            *setting,
            env,
        ]
    )

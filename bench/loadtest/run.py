"""Serve the site (bench.loadtest.servers), drive it with wrk, read the sessions back.

Everything runs on loopback against a private redis-server and a temporary
SQLite file; every process started here is stopped on the way out, also on
Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import redis

from bench.loadtest.config import ENGINES, Config, Engine
from bench.loadtest.cpu import Sampler, Usage
from bench.loadtest.servers import log_path, serve

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "mix.lua"
WRK_HINT = (
    "wrk was not found on PATH. Install it: `apt-get install wrk` (Debian/Ubuntu), "
    "`brew install wrk` (macOS), or set WRK to the binary's path."
)
# The test users' password; mix.lua sends the same.
PASSWORD = "loadtest-password"


class WrkMissing(RuntimeError):
    pass


@dataclass
class Check:
    """The lost-writes check, summed over an engine's runs."""

    sessions: int = 0  # sessions read back and compared
    acknowledged: int = 0  # writes wrk saw answered with 200
    lost: int = 0  # acknowledged, yet not in the stored counter
    unexplained: int = 0  # stored beyond what was acknowledged or in flight
    unchecked: int = 0  # sessions whose key a login in flight may have rotated


@dataclass
class Result:
    """One engine's runs, merged."""

    engine: Engine
    runs: int = 0
    requests: int = 0
    seconds: float = 0.0
    # Latency histograms by kind (read, write, login): bucket index -> count,
    # a bucket being bucket_ms milliseconds.
    histograms: dict[str, Counter[int]] = field(default_factory=dict)
    bucket_ms: float = 0.1
    errors: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    mismatches: int = 0
    unknown: int = 0
    check: Check = field(default_factory=Check)
    rates: list[float] = field(default_factory=list)  # per run
    usage: Usage = field(default_factory=Usage)  # CPU during the runs

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_total(self) -> int:
        return sum(self.errors.values()) + self.unknown

    def histogram(self, kind: str | None = None) -> Counter[int]:
        if kind is not None:
            return self.histograms.get(kind, Counter())
        total: Counter[int] = Counter()
        for histogram in self.histograms.values():
            total.update(histogram)
        return total

    def percentile(self, p: float, kind: str | None = None) -> float:
        """Milliseconds within which ``p`` percent of the answered requests (of
        ``kind``, or all) were answered: the upper edge of the bucket where the
        percentile falls."""
        histogram = self.histogram(kind)
        wanted = sum(histogram.values()) * p / 100
        seen = 0
        for bucket in sorted(histogram):
            seen += histogram[bucket]
            if seen >= wanted:
                return (bucket + 1) * self.bucket_ms
        return 0.0

    @property
    def max_ms(self) -> float:
        histogram = self.histogram()
        return (max(histogram) + 1) * self.bucket_ms if histogram else 0.0

    def add(self, data: dict[str, Any], check: Check, usage: Usage) -> None:
        self.usage.add(usage)
        requests = int(data["requests"])
        seconds = float(data["duration_us"]) / 1e6
        self.runs += 1
        self.requests += requests
        self.seconds += seconds
        self.rates.append(requests / seconds if seconds else 0.0)
        self.bucket_ms = float(data["bucket_ms"])
        for kind, histogram in data["latency"].items():
            counts = {int(bucket): int(count) for bucket, count in histogram.items()}
            self.histograms.setdefault(kind, Counter()).update(counts)
        self.errors.update({k: int(v) for k, v in data["errors"].items()})
        self.counts.update({k: int(v) for k, v in data["counts"].items()})
        self.mismatches += sum(int(b["mismatches"]) for b in data["browsers"].values())
        self.unknown += int(data["unknown"])
        for name in ("sessions", "acknowledged", "lost", "unexplained", "unchecked"):
            setattr(self.check, name, getattr(self.check, name) + getattr(check, name))


def find_wrk() -> str:
    path = os.environ.get("WRK") or shutil.which("wrk")
    if not path or not os.access(path, os.X_OK):
        raise WrkMissing(WRK_HINT)
    return path


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version, then the usage, and exits 1.
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout
    words = out.split()
    return words[1] if len(words) > 1 else "?"


# --- the database -------------------------------------------------------------


def setup_django(redis_url: str, db_path: Path) -> None:
    """Configure this process like the server (for migrate and the check)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.loadtest.settings"
    os.environ["REDIS_URL"] = redis_url
    os.environ["DJANGO_DB"] = str(db_path)
    os.environ.pop("LOADTEST_ENGINE", None)
    os.environ.pop("LOADTEST_MIDDLEWARE", None)
    import django

    django.setup()


def prepare_database(users: int) -> None:
    """Migrate, switch to WAL (workers write last_login concurrently), make users."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0, interactive=False)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
    password = make_password(PASSWORD)
    User.objects.bulk_create(
        User(username=f"lt{n}{suffix}", password=password)
        for n in range(users)
        for suffix in ("", "b")
    )
    connection.close()


def run_wrk(
    wrk: str, engine: Engine, config: Config, base: str, seconds: int, report: Path
) -> dict[str, Any]:
    args = [
        wrk,
        "--threads", str(config.threads),
        "--connections", str(config.connections_for(engine)),
        "--duration", f"{seconds}s",
        "--timeout", "10s",
        "--script", str(SCRIPT),
        base,
        "--",
        "1" if engine.aliases else "0",
        str(config.users),
        str(config.threads),
        str(seconds),
        engine.views,
    ]  # fmt: skip
    env = {**os.environ, "LOADTEST_REPORT": str(report)}
    # Not the previous run's report, should this wrk fail to write one.
    report.unlink(missing_ok=True)
    completed = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0 or not report.exists():
        raise RuntimeError(
            f"wrk failed (exit {completed.returncode}):\n{completed.stdout}{completed.stderr}"
        )
    data: dict[str, Any] = json.loads(report.read_text())
    # wrk ends early, with status 0, on SIGINT: a Ctrl-C that reached it.
    if float(data["duration_us"]) < seconds * 0.9e6:
        raise RuntimeError(f"wrk stopped after {float(data['duration_us']) / 1e6:.1f}s")
    return data


def flush(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()


# --- the check ----------------------------------------------------------------


def check_writes(engine: Engine, browsers: dict[str, Any]) -> Check:
    """Compare every session's stored counter with the writes wrk saw acknowledged.

    Each browser reports, per session it used (alias 0 and 1, or just 0 when
    the engine has no aliases), how many writes were answered with 200. The
    session's key comes from the browser's last cookie. A write still in
    flight when wrk stopped may or may not have been applied, so it may add
    one; a login in flight may have rotated the key, so that session is not
    checked. The server has been stopped (gracefully) before this runs.
    """
    from bench.loadtest.views import COUNTER
    from session_ng.aliases import parse_cookie
    from session_ng.store.client import reset

    store_class = import_module(engine.path).SessionStore
    check = Check()
    for browser in browsers.values():
        keys = parse_cookie(browser["cookie"])
        pending = browser["pending"]
        pending_session = str(browser["pending_session"])
        for session, acked_value in browser["acked"].items():
            acked = int(acked_value)
            if pending == "login" and pending_session == session:
                check.unchecked += 1
                continue
            key = keys.get(session)
            stored = int(store_class(key).load().get(COUNTER, 0)) if key else 0
            in_flight = 1 if pending == "write" and pending_session == session else 0
            # A write answered with an error may have been applied too.
            maybe = in_flight + int(browser["failed"])
            check.sessions += 1
            check.acknowledged += acked
            check.lost += max(0, acked - stored)
            check.unexplained += max(0, stored - acked - maybe)
    reset()
    return check


def run_once(
    wrk: str,
    engine: Engine,
    config: Config,
    redis_url: str,
    db_path: Path,
    tmp: Path,
    progress: Callable[[str], None],
) -> tuple[dict[str, Any], Check, Usage]:
    """One run: an emptied Redis, a fresh server, warm-up, load, stop, check."""
    flush(redis_url)
    log = log_path(engine, tmp)
    with serve(engine, config, redis_url, db_path, tmp) as base:
        if config.warmup:
            run_wrk(wrk, engine, config, base, config.warmup, tmp / "warmup.json")
            flush(redis_url)
        progress(f"{engine.title}: {config.duration}s of load")
        sampler = Sampler()
        data = run_wrk(wrk, engine, config, base, config.duration, tmp / "run.json")
        usage = sampler.stop()
    # The server has stopped gracefully: every request it accepted was answered.
    check = check_writes(engine, data["browsers"])
    server_log = log.read_text(errors="replace") if log.exists() else ""
    if server_log.strip():
        progress(f"{engine.title}: the server logged:\n{server_log[-4000:]}")
    log.unlink(missing_ok=True)
    return data, check, usage


def measure_all(
    wrk: str,
    config: Config,
    redis_url: str,
    db_path: Path,
    tmp: Path,
    progress: Callable[[str], None],
) -> list[Result]:
    results = {engine: Result(engine) for engine in ENGINES}
    for engine in config.schedule():
        data, check, usage = run_once(wrk, engine, config, redis_url, db_path, tmp, progress)
        results[engine].add(data, check, usage)
    return [results[engine] for engine in ENGINES]

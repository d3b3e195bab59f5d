"""``python -m bench.migration [--sessions 50000] [--batch-size 1000] [--rounds 3]
[--processes N]``: how fast ``manage.py session_ng_import`` moves sessions out of
Django's ``db`` engine.

A private ``redis-server`` and a temporary SQLite database, as ``bench`` uses.
Each round fills the session table with ``--sessions`` logged-in sessions
(written with the db engine's own encoding, spread over the users and over
two weeks of remaining life), empties Redis, and times ``manage.py
session_ng_import --from django.contrib.sessions.backends.db`` itself (run
with ``call_command``, its progress lines written to memory) from the start
of the command to its summary line, with the command's default number of
processes unless ``--processes`` says otherwise. Prints the rate of each
round and their median, with the CPU time per session of the import (this
process and its worker processes) and of redis-server (``INFO cpu``) and the
load average: on a machine that other work keeps busy, the CPU times say what
the rate would be without it. Every session is checked to be in Redis
afterwards.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from harness.redis_server import RedisServer

DB_ENGINE = "django.contrib.sessions.backends.db"
TWO_WEEKS = 14 * 24 * 3600


def fill(count: int, user_pks: list[int]) -> None:
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    from session_ng.backends.redis import new_session_key

    Session.objects.all().delete()
    store = SessionStore()
    now = timezone.now()
    rows = []
    for i in range(count):
        pk = user_pks[i % len(user_pks)]
        data = {
            "_auth_user_id": str(pk),
            "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
            "_auth_user_hash": f"{i:064x}",
            "cart": ["tea", "cups", {"saucers": i % 7}],
            "visits": i,
        }
        expire = now + timedelta(seconds=60 + (i * 7919) % TWO_WEEKS)
        rows.append(
            Session(
                session_key=new_session_key(), session_data=store.encode(data), expire_date=expire
            )
        )
    Session.objects.bulk_create(rows, batch_size=2000)


def redis_cpu_seconds(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process, and of its children that have ended (the
    import's worker processes, which it joins before it returns)."""
    times = []
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        times.append(usage.ru_utime + usage.ru_stime)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        from bench.settings import prepared

        with prepared(server.url, server.port, Path(tmp) / "bench.sqlite3") as user_pks:
            import redis
            from django.contrib.sessions.models import Session
            from django.core.management import call_command

            from session_ng.importer import default_processes

            processes = args.processes or default_processes()

            client = redis.Redis.from_url(server.url)
            rates = []
            for round_number in range(1, args.rounds + 1):
                fill(args.sessions, user_pks)
                client.flushall()
                redis_cpu = redis_cpu_seconds(client)
                own_cpu, workers_cpu = cpu_seconds()
                started = time.perf_counter()
                output = io.StringIO()
                call_command(
                    "session_ng_import",
                    "--from",
                    DB_ENGINE,
                    "--batch-size",
                    str(args.batch_size),
                    "--processes",
                    str(processes),
                    stdout=output,
                )
                elapsed = time.perf_counter() - started
                own_after, workers_after = cpu_seconds()
                own_cpu, workers_cpu = own_after - own_cpu, workers_after - workers_cpu
                redis_cpu = redis_cpu_seconds(client) - redis_cpu
                summary = output.getvalue().splitlines()[-1]
                imported = re.match(r"([\d,]+) imported, 0 already in Redis, 0 expired", summary)
                assert imported, summary
                assert int(imported[1].replace(",", "")) == args.sessions, summary
                assert Session.objects.count() == 0
                hashes = sum(
                    1 for _ in client.scan_iter(match="session_ng:sessions:{*}", count=5000)
                )
                assert hashes == args.sessions, hashes
                rates.append(args.sessions / elapsed)
                per_session = 1e6 / args.sessions
                print(
                    f"round {round_number}: {args.sessions:,} sessions in {elapsed:.2f} s, "
                    f"{rates[-1]:,.0f} sessions/s; CPU per session: the import "
                    f"{(own_cpu + workers_cpu) * per_session:.0f} us (this process "
                    f"{own_cpu * per_session:.0f}, workers {workers_cpu * per_session:.0f}), "
                    f"redis-server {redis_cpu * per_session:.0f} us; "
                    f"load average {os.getloadavg()[0]:.2f}"
                )
            client.close()
            print(
                f"median: {statistics.median(rates):,.0f} sessions/s "
                f"(--batch-size {args.batch_size} --processes {processes})"
            )


if __name__ == "__main__":
    main()

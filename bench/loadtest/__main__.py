"""``python -m bench.loadtest [--no-write]``: load session_ng and the cache engine, print, record.

Environment: LOADTEST_ROUNDS (runs per engine, 2), LOADTEST_DURATION (seconds
of load per run, 8), LOADTEST_WARMUP (seconds before each run, 2),
LOADTEST_CONNECTIONS (32), LOADTEST_THREADS (wrk threads, 2), LOADTEST_WORKERS
(gunicorn workers, twice the CPUs), LOADTEST_WORKER_CLASS (sync, or gthread),
LOADTEST_WORKER_THREADS (for gthread, 2), LOADTEST_ASGI_CONNECTIONS (wrk
connections of the ASGI runs, 64), LOADTEST_ASGI_WORKERS (uvicorn workers,
twice the CPUs), WRK (the binary, else wrk on PATH).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from harness.redis_server import RedisServer


def progress(message: str) -> None:
    # stderr, so that stdout is the table alone.
    print(message, file=sys.stderr, flush=True)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # A normal exit, so that the finally blocks stop the server and redis-server.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__)
    parser.add_argument(
        "--no-write", action="store_true", help="print the table only; leave the docs alone"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    from bench.loadtest.config import Config
    from bench.loadtest.run import WrkMissing, find_wrk, measure_all, wrk_version

    try:
        wrk = find_wrk()
    except WrkMissing as exc:
        print(exc, file=sys.stderr)
        return 1
    config = Config.from_env()

    # A private server: figures never depend on, or touch, the machine's Redis.
    with (
        RedisServer() as server,
        tempfile.TemporaryDirectory(prefix="session-ng-loadtest-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        db_path = tmp / "loadtest.sqlite3"
        # Django only now: its settings read the private server's URL.
        from bench.loadtest.run import prepare_database, setup_django

        setup_django(server.url, db_path)
        prepare_database(config.users)

        from bench.loadtest.report import environment, render

        results = measure_all(wrk, config, server.url, db_path, tmp, progress)
        text = render(results, config, environment(server.url, wrk_version(wrk)))

    print(text)
    if not args.no_write:
        from bench.loadtest.report import DOC, END, START
        from bench.record import record

        record(text, DOC, START, END)
        print(f"\nrecorded in {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)

"""``python -m bench [--no-write]``: measure every engine, print, record in the docs."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness.redis_server import RedisServer


def progress(message: str) -> None:
    # stderr, so that stdout is the table alone.
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--no-write", action="store_true", help="print the table only; leave the docs alone"
    )
    args = parser.parse_args(argv)

    # A private server: figures never depend on, or touch, the machine's Redis.
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="session-ng-bench-") as tmp:
        # Django can be configured only now that the server's port is known,
        # so everything that imports Django models is imported after this.
        from bench.settings import prepared

        with prepared(server.url, server.port, Path(tmp) / "bench.sqlite3") as user_pks:
            from bench.engines import ENGINES
            from bench.measure import measure_all
            from bench.report import environment, render
            from bench.websocket import measure_websocket
            from bench.websocket import render as render_websocket

            results = measure_all(ENGINES, server.url, user_pks, progress)
            text = render(results, environment(server.url))
            progress("websocket messages with and without SessionRefreshMixin")
            text += "\n\n" + render_websocket(measure_websocket(server.url, progress))

    print(text)
    if not args.no_write:
        from bench.record import DOC, record

        record(text)
        print(f"\nrecorded in {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

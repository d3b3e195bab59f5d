"""``make demo``: migrate and serve testproject on http://127.0.0.1:8000.

Uses ``REDIS_URL`` when it is set; otherwise starts a private redis-server on a
free loopback port for as long as the demo runs. The site is served by daphne
(ASGI: pages and the chat's websocket), next to ``session_ng_worker``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from harness.redis_server import RedisServer


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Turn SIGTERM into a normal exit so the private redis-server is stopped.
    raise SystemExit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    server = None
    worker: subprocess.Popen[bytes] | None = None
    if not os.environ.get("REDIS_URL"):
        server = RedisServer(own_session=True).start()
        os.environ["REDIS_URL"] = server.url
        print(f"Started a private redis-server at {server.url}", flush=True)
    try:
        from django.core.management import execute_from_command_line

        execute_from_command_line([sys.argv[0], "migrate", "--noinput", "-v", "0"])
        # The worker turns expiries into session_expired (see /events/).
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "session_ng_worker"], env=os.environ.copy()
        )
        addr = os.environ.get("DEMO_ADDR", "127.0.0.1:8000")
        host, _, port = addr.rpartition(":")
        print(f"Serving testproject on http://{addr}/ (Ctrl-C stops it)", flush=True)
        from daphne.cli import CommandLineInterface

        # Daphne stops on SIGINT/SIGTERM and returns here, so the finally runs.
        CommandLineInterface().run(["-b", host, "-p", port, "testproject.asgi:application"])
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=10)
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

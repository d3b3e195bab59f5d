"""The servers under load: gunicorn (WSGI, sync views) and uvicorn (ASGI, async views).

Each is started on a free loopback port in a session of its own, waited for
until every worker is up, and stopped gracefully on the way out (also on
Ctrl-C), so that every request it accepted is answered before the sessions are
read back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.loadtest.config import Config, Engine
from harness.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
# Set for the uvicorn workers: bench.loadtest.asgi leaves a file named after its
# process id there once Django is set up.
READY_DIR = "LOADTEST_READY_DIR"
STARTUP_SECONDS = 30


@contextmanager
def serve(
    engine: Engine, config: Config, redis_url: str, db_path: Path, tmp: Path
) -> Iterator[str]:
    """The engine's server, up; yields its base URL. Its log is checked after."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.loadtest.settings",
        "LOADTEST_ENGINE": engine.engine,
        "LOADTEST_MIDDLEWARE": engine.middleware,
        "REDIS_URL": redis_url,
        "DJANGO_DB": str(db_path),
    }
    port = free_port()
    log = log_path(engine, tmp)
    if engine.asgi:
        ready = tmp / f"ready-{engine.slug}"
        ready.mkdir(exist_ok=True)
        for stale in ready.iterdir():
            stale.unlink()
        env[READY_DIR] = str(ready)
        args = _uvicorn_args(config, port)
    else:
        ready = None
        args = _gunicorn_args(config, port, log)
    with log.open("ab") as output:
        # Its own session: a Ctrl-C in the terminal reaches this process, which
        # then stops the server gracefully, rather than every worker at once.
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=output, stderr=output, start_new_session=True
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        if ready is not None:
            _wait_for_workers(ready, config.asgi_workers, process, log, deadline)
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/lt/ping/", process, log, deadline)
        yield base
    finally:
        _stop(process, timeout=15)


def log_path(engine: Engine, tmp: Path) -> Path:
    return tmp / f"server-{engine.slug}.log"


def _gunicorn_args(config: Config, port: int, log: Path) -> list[str]:
    args = [
        sys.executable, "-m", "gunicorn", "testproject.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(config.workers),
        "--worker-class", config.worker_class,
        "--backlog", "2048",
        "--graceful-timeout", "10",
        "--log-level", "warning",
        "--error-logfile", str(log),
        "--preload",
    ]  # fmt: skip
    if config.worker_class == "gthread":
        # (With sync, any --threads above 1 would quietly make gthread workers.)
        args += ["--threads", str(config.worker_threads), "--keep-alive", "5"]
    return args


def _uvicorn_args(config: Config, port: int) -> list[str]:
    # uvloop and httptools named, not left to "auto": the table says they ran.
    # Django's ASGI handler does not speak the lifespan protocol. uvicorn's
    # supervisor restarts a worker that misses a health check; on two busy
    # cores a worker may take longer than the default 5 s to answer one.
    return [
        sys.executable, "-m", "uvicorn", "bench.loadtest.asgi:application",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", str(config.asgi_workers),
        "--loop", "uvloop",
        "--http", "httptools",
        "--lifespan", "off",
        "--backlog", "2048",
        "--timeout-graceful-shutdown", "10",
        "--timeout-worker-healthcheck", "30",
        "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip


def _exited(process: subprocess.Popen[bytes], log: Path) -> RuntimeError:
    text = log.read_text(errors="replace") if log.exists() else ""
    return RuntimeError(f"the server exited at start-up:\n{text}")


def _wait_for_workers(
    ready: Path, workers: int, process: subprocess.Popen[bytes], log: Path, deadline: float
) -> None:
    """Every uvicorn worker imports the site on its own after the fork (there
    is no --preload): wait for all of them, or the first seconds of a run
    would be served by fewer workers than the table says."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _exited(process, log)
        if sum(1 for _ in ready.iterdir()) >= workers:
            return
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {workers} workers were up within {STARTUP_SECONDS}s")


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _exited(process, log)
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer {url} within {STARTUP_SECONDS}s")


def _stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (finish the requests in flight), then SIGKILL to the whole
    process group: a killed supervisor would leave its workers running."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Its own session (start_new_session): the group is its id.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

"""``manage.py session_ng_worker`` as a real process, for the tests: started
with the settings of tests/worker_settings.py, its receivers writing every
event to a JSON-lines log (tests/event_log.py). The ``log`` and ``start``
fixtures in conftest.py make and stop them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    count = 0

    def __init__(
        self,
        url: str,
        log: Path,
        configure: bool = True,
        lock_ttl: float = 1.5,
        cluster: bool = False,
        sentinels: str = "",
        options: tuple[str, ...] = (),
        event_delay: float = 0.0,
    ) -> None:
        WorkerProcess.count += 1
        self.stderr = log.with_name(f"worker-{WorkerProcess.count}.stderr")
        env = {
            **os.environ,
            "REDIS_URL": url,
            "CLUSTER": "1" if cluster else "0",
            "SENTINELS": sentinels,
            "SESSION_NG_EVENT_LOG": str(log),
            "CONFIGURE_NOTIFICATIONS": "1" if configure else "0",
            "SESSION_NG_EVENT_DELAY": str(event_delay),
        }
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable, "manage.py", "session_ng_worker",
                    "--settings=tests.worker_settings",
                    "--sweep-interval", "0.2", "--lock-ttl", str(lock_ttl), *options,
                ],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        self.wait_for_log("listening on db")

    def log(self) -> str:
        return self.stderr.read_text()

    def wait_for_log(self, text: str, timeout: float = 20.0) -> None:
        wait_until(lambda: text in self.log() or self.process.poll() is not None, timeout)
        if text not in self.log():
            raise AssertionError(f"worker never logged {text!r}:\n{self.log()}")

    killed = False

    def kill(self) -> None:
        self.killed = True
        self.process.kill()
        self.process.wait()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def events(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    found = [json.loads(line) for line in log.read_text().splitlines() if line]
    for event in found:
        event.pop("pid")
    return found


def wait_for_events(log: Path, n: int, timeout: float = 8.0) -> list[dict[str, Any]]:
    wait_until(lambda: len(events(log)) >= n, timeout)
    return events(log)

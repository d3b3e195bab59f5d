"""``manage.py session_ng_worker``: report session ends as signals, and sweep.

Run one or more per deployment (under systemd, supervisord, a Kubernetes
Deployment ...). Several are safe: each end is reported once, and one at a
time sweeps. Stops cleanly on SIGTERM and SIGINT.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from session_ng.events import Worker


class Command(BaseCommand):
    help = "Turn session expiries and deletes into session_ng signals, and sweep expired sessions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--sweep-interval",
            type=float,
            default=2.0,
            help="Seconds between sweeps (default 2): how soon after its end an expiry is seen.",
        )
        parser.add_argument(
            "--lock-ttl",
            type=float,
            default=10.0,
            help="Seconds the sweep lock outlives a worker that died (default 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        Worker(sweep_interval=options["sweep_interval"], lock_ttl=options["lock_ttl"]).run(stop)

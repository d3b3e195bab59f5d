"""``manage.py session_ng_worker``: report session ends as signals, and sweep.

Run one or more per deployment (under systemd, supervisord, a Kubernetes
Deployment ...). Several are safe: each end is reported once (twice only if
a worker died while sending it), one at a time sweeps, and each takes over
the events a dead one left. Stops cleanly on SIGTERM and SIGINT.

Unless ``LOGGING`` already sends the ``session_ng.worker`` logger somewhere,
the command prints its log on stdout: the start, each event and the stop at
the default verbosity, the sweeps too with ``-v 2``, nothing with ``-v 0``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from session_ng.events import REDELIVER_AFTER
from session_ng.store import records
from session_ng.worker import Worker, logger


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
        parser.add_argument(
            "--redeliver-after",
            type=float,
            default=REDELIVER_AFTER,
            help=(
                "Seconds an event read by a worker may stay unacknowledged before another "
                f"worker takes it over and sends it (default {REDELIVER_AFTER:g}): longer than "
                "your slowest receiver takes."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        claim_s = records.CLAIM_MS / 1000
        if not 0 < options["redeliver_after"] < claim_s:
            # Past the claim's life, an end whose duplicate entry was left
            # pending by a dead worker would be sent again after its twin.
            raise CommandError(f"--redeliver-after must be above 0 and below {claim_s:g} seconds.")
        stop = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        worker = Worker(
            sweep_interval=options["sweep_interval"],
            lock_ttl=options["lock_ttl"],
            redeliver_after=options["redeliver_after"],
        )
        with self.console_log(int(options["verbosity"])):
            worker.run(stop)

    @contextmanager
    def console_log(self, verbosity: int) -> Iterator[None]:
        """The worker's log on stdout, when nothing else shows it.

        Django's default LOGGING leaves ``session_ng`` without a handler (only
        warnings would reach stderr, through Python's last resort): a worker
        started by hand would say nothing of what it does. A site whose
        LOGGING handles ``session_ng`` keeps its own configuration.
        """
        if verbosity == 0 or logger.hasHandlers():
            yield
            return
        handler = logging.StreamHandler(self.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)

"""``manage.py session_ng_import --from ENGINE``: move every session of the
engine a site used before session_ng into Redis (see docs/migration.rst)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from session_ng.importer import Progress, can_fork, default_processes, import_all
from session_ng.migration import UnsupportedEngine, source_for

BAR_WIDTH = 30


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Command(BaseCommand):
    help = (
        "Import every live session of another session engine into session_ng's Redis: "
        "same keys, data and expiry. Safe to re-run and to interrupt."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from",
            dest="engine",
            required=True,
            help="The engine module, e.g. django.contrib.sessions.backends.db.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            help="Sessions per round trip to Redis (default 1000).",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=None,
            help=(
                "Processes that decode the sessions and save them in Redis, forked "
                "from this one, which reads and cleans the old store (default: one "
                "per CPU, at most 4; 1 where processes cannot be forked)."
            ),
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read and count the sessions; write nothing, remove nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more.")
        processes = options["processes"]
        if processes is None:
            processes = default_processes()
        if processes < 1:
            raise CommandError("--processes must be 1 or more.")
        if processes > 1 and not can_fork():
            raise CommandError("--processes above 1 needs os.fork(), which this platform lacks.")
        try:
            source = source_for(options["engine"])
            total = source.estimate()
        except UnsupportedEngine as exc:
            raise CommandError(str(exc)) from exc
        tty = self.stdout.isatty()
        started = time.monotonic()

        def report(progress: Progress) -> None:
            elapsed = max(time.monotonic() - started, 1e-9)
            rate = progress.seen / elapsed
            if tty and total:
                done = min(progress.seen / total, 1.0)
                bar = "#" * int(done * BAR_WIDTH)
                eta = (total - progress.seen) / rate if rate else 0.0
                self.stdout.write(
                    f"\r[{bar:<{BAR_WIDTH}}] {done:4.0%} {progress.seen:,}/{total:,} "
                    f"{rate:,.0f}/s ETA {_duration(max(eta, 0))}",
                    ending="",
                )
                self.stdout.flush()
            else:
                self.stdout.write(
                    f"batch {progress.batches}: {progress.seen:,} read"
                    + (f" of {total:,}" if total else "")
                    + f", {progress.imported:,} imported, {rate:,.0f}/s"
                )

        try:
            progress = import_all(
                source,
                batch_size=batch_size,
                dry_run=options["dry_run"],
                on_batch=report,
                processes=processes,
            )
        except UnsupportedEngine as exc:
            raise CommandError(str(exc)) from exc
        if tty and total:
            self.stdout.write("")
        elapsed = time.monotonic() - started
        verb = "would be imported" if options["dry_run"] else "imported"
        self.stdout.write(
            f"{progress.imported:,} {verb}, {progress.already:,} already in Redis, "
            f"{progress.expired:,} expired, {progress.undecodable:,} undecodable, "
            f"{progress.bad_keys:,} with keys session_ng does not accept (skipped) "
            f"in {elapsed:.1f} s ({progress.seen / max(elapsed, 1e-9):,.0f} sessions/s, "
            f"{processes} process{'' if processes == 1 else 'es'})."
        )

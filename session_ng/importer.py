"""``manage.py session_ng_import``: every live session of the old engine into Redis.

Batch by batch: read from the old store (``session_ng.migration``), one
pipelined round trip to save the batch in Redis (each save sets the session's
import marker, so a session is imported once however often this runs, and
never again once it ended in Redis), then the batch is removed from the old
store. Interrupted anywhere, a new run picks up what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from session_ng import repository
from session_ng.conf import conf
from session_ng.migration import Source
from session_ng.repository import SavePlan


@dataclass
class Progress:
    """Counts so far, per session read from the old store."""

    imported: int = 0
    # In Redis already: imported before (lazily, or by an earlier run).
    already: int = 0
    expired: int = 0
    undecodable: int = 0
    # Keys session_ng does not accept: skipped, never sent to Redis.
    bad_keys: int = 0
    batches: int = 0

    @property
    def seen(self) -> int:
        return self.imported + self.already + self.expired + self.undecodable + self.bad_keys


def import_all(
    source: Source,
    batch_size: int = 1000,
    dry_run: bool = False,
    on_batch: Callable[[Progress], None] | None = None,
) -> Progress:
    """Import every live session of ``source``; ``on_batch`` is called after
    each batch with the counts so far. With ``dry_run`` nothing is written
    anywhere (every live, decodable session is counted as imported).

    A batch's round trip to Redis runs in a second thread while this one
    reads and decodes the next batch: Redis executes the saves on another
    core meanwhile. The old store is only ever touched from this thread.
    """
    from session_ng.backends.redis import SessionStore

    progress = Progress()
    ns = conf.namespace

    def record(plans: list[SavePlan], statuses: list[str]) -> None:
        imported = statuses.count("ok")
        progress.imported += imported
        progress.already += len(statuses) - imported
        # Only now that Redis has them all (imported now or before).
        source.remove([plan.session_key for plan in plans])
        progress.batches += 1
        if on_batch is not None:
            on_batch(progress)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="session_ng_import") as writer:
        pending: tuple[list[SavePlan], Future[list[str]]] | None = None
        for batch in source.batches(batch_size):
            plans = SessionStore.import_plans(
                (found.session_key, found.data, found.remaining_ms) for found in batch.found
            )
            progress.expired += batch.expired
            progress.undecodable += batch.undecodable
            progress.bad_keys += batch.bad_keys
            if dry_run:
                progress.imported += len(plans)
                progress.batches += 1
                if on_batch is not None:
                    on_batch(progress)
                continue
            written = None
            if pending is not None:
                written = pending[0], pending[1].result()
            pending = plans, writer.submit(repository.run, repository.import_sessions(ns, plans))
            if written is not None:
                # While Redis saves this batch, the last one leaves the old store.
                record(*written)
        if pending is not None:
            record(pending[0], pending[1].result())
    return progress

"""``manage.py session_ng_import``: every live session of the old engine into Redis.

Batch by batch: read from the old store (``session_ng.migration``), one
pipelined round trip to save the batch in Redis (each save sets the session's
import marker, so a session is imported once however often this runs, and
never again once it ended in Redis), then the batch is removed from the old
store. Interrupted anywhere, a new run picks up what is left.

With ``processes`` above 1, this process reads the old store (each batch
once: the batches are disjoint) and removes from it; forked worker processes
decode the batches, build the saves and write them to Redis.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from session_ng.conf import conf
from session_ng.migration import Batch, Source
from session_ng.store import driver, sessions
from session_ng.store.records import SavePlan

# The most worker processes the command starts unless told otherwise.
DEFAULT_PROCESSES_CAP = 4


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


def can_fork() -> bool:
    """Whether worker processes can be forked here (not on Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def default_processes() -> int:
    """The command's default number of processes: one per CPU this process
    may run on, at most DEFAULT_PROCESSES_CAP; 1 where it cannot fork."""
    if not can_fork():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, DEFAULT_PROCESSES_CAP))


def _plans(batch: Batch) -> list[SavePlan]:
    from session_ng.backends.redis import SessionStore

    return SessionStore.import_plans(
        (found.session_key, found.data, found.remaining_ms) for found in batch.found
    )


def import_all(
    source: Source,
    batch_size: int = 1000,
    dry_run: bool = False,
    on_batch: Callable[[Progress], None] | None = None,
    processes: int = 1,
) -> Progress:
    """Import every live session of ``source``; ``on_batch`` is called after
    each batch with the counts so far. With ``dry_run`` nothing is written
    anywhere (every live, decodable session is counted as imported).

    With one process, a batch's round trip to Redis runs in a second thread
    while this one reads and decodes the next batch: Redis executes the saves
    on another core meanwhile. With more, see ``_import_in_processes``. The
    old store is only ever touched from this thread.
    """
    if processes > 1:
        return _import_in_processes(source, batch_size, dry_run, on_batch, processes)
    progress = Progress()
    ns = conf.snapshot().namespace

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
            plans = _plans(batch)
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
            pending = plans, writer.submit(driver.run, sessions.import_sessions(ns, plans))
            if written is not None:
                # While Redis saves this batch, the last one leaves the old store.
                record(*written)
        if pending is not None:
            record(pending[0], pending[1].result())
    return progress


# --- several processes ----------------------------------------------------------


@dataclass
class _Done:
    """What a worker did with one batch."""

    # The sessions Redis has now (imported by it, or before): the ones the
    # old store may lose. Empty for a dry run.
    in_redis: list[str]
    imported: int
    already: int
    expired: int
    undecodable: int
    bad_keys: int


# The worker's Source: its process is forked from the importing one.
_worker_source: Source | None = None


def _start_worker(source: Source) -> None:
    global _worker_source
    _worker_source = source
    # Ctrl-C interrupts the importing process, which stops the workers once
    # their batch is saved; a worker stopped halfway would waste its batch.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _work(raw: Any, dry_run: bool) -> _Done:
    assert _worker_source is not None
    batch = _worker_source.decode_batch(raw)
    plans = _plans(batch)
    if dry_run:
        in_redis, imported, already = [], len(plans), 0
    else:
        statuses = driver.run(sessions.import_sessions(conf.snapshot().namespace, plans))
        in_redis = [plan.session_key for plan in plans]
        imported = statuses.count("ok")
        already = len(statuses) - imported
    return _Done(in_redis, imported, already, batch.expired, batch.undecodable, batch.bad_keys)


def _import_in_processes(
    source: Source,
    batch_size: int,
    dry_run: bool,
    on_batch: Callable[[Progress], None] | None,
    processes: int,
) -> Progress:
    """``import_all`` with ``processes`` forked workers.

    This process reads the batches (``Source.raw_batches``: each row once, so
    the batches are disjoint and each session goes to one worker), hands each
    to a worker, which decodes it (``Source.decode_batch``) and saves it in
    Redis, and removes it from the old store once its worker says Redis has
    it, in the order read. At most two batches per worker are out at once.
    The old store is only ever touched from this thread, the workers only
    write to Redis. Forked, the workers start with this process's settings
    and its Source; Redis connections are not shared across a fork (redis-py
    opens new ones in the child).
    """
    if not can_fork():
        raise ValueError("Several import processes need os.fork(), which this platform lacks.")
    progress = Progress()

    def record(done: _Done) -> None:
        progress.imported += done.imported
        progress.already += done.already
        progress.expired += done.expired
        progress.undecodable += done.undecodable
        progress.bad_keys += done.bad_keys
        if done.in_redis:
            source.remove(done.in_redis)
        progress.batches += 1
        if on_batch is not None:
            on_batch(progress)

    # The workers are forked at the first submit, all of them (a "fork" pool
    # does not add workers later), before the pool starts its own threads.
    pool = ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(source,),
    )
    try:
        pending: deque[Future[_Done]] = deque()
        for raw in source.raw_batches(batch_size):
            pending.append(pool.submit(_work, raw, dry_run))
            if len(pending) >= 2 * processes:
                record(pending.popleft().result())
        while pending:
            record(pending.popleft().result())
    finally:
        # Interrupted or failed: batches not started are dropped, those being
        # saved are finished (a re-run finds them in Redis already).
        pool.shutdown(wait=True, cancel_futures=True)
    return progress

"""A running session_ng_worker meets keys of the wrong type or content: it logs,
skips or repairs them, and goes on reporting ends (it must not exit, which
under a supervisor would be a crash loop)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from session_ng import keys
from session_ng.backends.redis import SessionStore
from tests.worker_process import WorkerProcess, wait_for_events, wait_until

NS = "session_ng"
pytestmark = pytest.mark.django_db


def expiring(user: str) -> str:
    s = SessionStore()
    s["_auth_user_id"] = user
    s.set_expiry(1)
    s.save()
    assert s.session_key is not None
    return s.session_key


def still_reports(worker: WorkerProcess, log: Path, user: str) -> None:
    """The worker is alive and reports a new session's expiry."""
    key = expiring(user)
    found = wait_for_events(log, 1, timeout=10)
    assert worker.process.poll() is None, worker.log()
    assert [(e["kind"], e["session_key"], e["user_id"]) for e in found] == [
        ("expired", key, user)
    ], worker.log()


def past_minute(ago: int) -> int:
    return int(time.time() // 60) - ago


def test_a_sweep_cursor_that_is_no_integer_is_repaired(
    start: Callable[..., WorkerProcess], redis_server: Any, log: Path, r: redis.Redis
) -> None:
    r.set(keys.sweep_cursor(NS), "junk")
    worker = start(redis_server.url)
    worker.wait_for_log("sweep cursor")
    still_reports(worker, log, "31")
    assert wait_until(lambda: (r.get(keys.sweep_cursor(NS)) or b"").isdigit(), 5)
    assert int(r.get(keys.sweep_cursor(NS)) or 0) >= past_minute(1)


def test_a_sweep_cursor_of_the_wrong_type_is_repaired(
    start: Callable[..., WorkerProcess], redis_server: Any, log: Path, r: redis.Redis
) -> None:
    r.rpush(keys.sweep_cursor(NS), "1")
    worker = start(redis_server.url)
    worker.wait_for_log("sweep cursor")
    still_reports(worker, log, "32")
    assert wait_until(lambda: r.type(keys.sweep_cursor(NS)) == b"string", 5)


def test_a_due_bucket_of_the_wrong_type_is_dropped(
    start: Callable[..., WorkerProcess], redis_server: Any, log: Path, r: redis.Redis
) -> None:
    minute = past_minute(3)
    r.set(keys.sweep_cursor(NS), minute - 1)
    r.set(keys.expiration_bucket(NS, minute), "junk")
    worker = start(redis_server.url)
    worker.wait_for_log("expiration bucket")
    still_reports(worker, log, "33")
    assert r.exists(keys.expiration_bucket(NS, minute)) == 0
    assert int(r.get(keys.sweep_cursor(NS)) or 0) >= minute


def test_the_current_minutes_bucket_of_the_wrong_type_is_skipped(
    start: Callable[..., WorkerProcess], redis_server: Any, log: Path, r: redis.Redis
) -> None:
    for ahead in range(0, 3):  # whichever minute the worker's sweep falls in
        r.set(keys.expiration_bucket(NS, past_minute(-ahead)), "junk")
    worker = start(redis_server.url)
    worker.wait_for_log("expiration bucket")
    for ahead in range(0, 3):
        r.delete(keys.expiration_bucket(NS, past_minute(-ahead)))
    still_reports(worker, log, "34")


def test_bucket_members_that_are_not_text_are_dropped(
    start: Callable[..., WorkerProcess], redis_server: Any, log: Path, r: redis.Redis
) -> None:
    minute = past_minute(3)
    r.set(keys.sweep_cursor(NS), minute - 1)
    # Next to the junk, a key whose session ended unseen: still reported.
    r.sadd(keys.expiration_bucket(NS, minute), b"\xff\xfe", "a" * 32)
    worker = start(redis_server.url)
    found = wait_for_events(log, 1, timeout=10)
    assert found == [{"kind": "expired", "session_key": "a" * 32, "user_id": None, "data": {}}]
    assert r.exists(keys.expiration_bucket(NS, minute)) == 0
    assert "1 member(s) of session_ng:expirations:" in worker.log()
    log.unlink()
    still_reports(worker, log, "35")


def test_an_ended_sessions_hash_of_the_wrong_type_is_reported_without_data(
    start: Callable[..., WorkerProcess], redis_server: Any, log: Path, r: redis.Redis
) -> None:
    worker = start(redis_server.url)
    key = "b" * 32
    r.set(keys.session_hash(NS, key), "junk")
    r.set(keys.session_shadow(NS, key), "", px=50)
    found = wait_for_events(log, 1, timeout=10)
    assert worker.process.poll() is None, worker.log()
    assert found == [{"kind": "expired", "session_key": key, "user_id": None, "data": {}}]
    log.unlink()
    still_reports(worker, log, "36")


def test_a_user_index_of_the_wrong_type_does_not_stop_the_report(
    start: Callable[..., WorkerProcess], redis_server: Any, log: Path, r: redis.Redis
) -> None:
    worker = start(redis_server.url)
    key = expiring("37")
    r.set(keys.user_index(NS, "37"), "junk")
    found = wait_for_events(log, 1, timeout=10)
    assert [(e["kind"], e["session_key"], e["user_id"]) for e in found] == [("expired", key, "37")]
    log.unlink()
    still_reports(worker, log, "38")


def test_an_event_stream_of_the_wrong_type_is_replaced(
    start: Callable[..., WorkerProcess], redis_server: Any, log: Path, r: redis.Redis
) -> None:
    r.set(keys.event_stream(NS), "junk")
    worker = start(redis_server.url)
    worker.wait_for_log("event stream session_ng:events is a key of the wrong type; replaced")
    still_reports(worker, log, "36")
    assert r.type(keys.event_stream(NS)) == b"stream"
    # Set again behind its back, between two ends: the next publish repairs it.
    r.delete(keys.event_stream(NS))
    r.set(keys.event_stream(NS), "junk")
    log.unlink()
    still_reports(worker, log, "37")

"""manage.py session_ng_worker, as real processes against real Redis servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from harness.redis_server import RedisServer
from session_ng import keys
from session_ng.backends.redis import SessionStore
from tests.worker_process import ROOT, events, wait_for_events, wait_until

NS = "session_ng"


def session(user: str | None = None, expiry: int | None = None, **data: Any) -> SessionStore:
    s = SessionStore()
    if user is not None:
        s["_auth_user_id"] = user
    s.update(data)
    if expiry is not None:
        s.set_expiry(expiry)
    s.save()
    assert s.session_key is not None
    return s


def test_an_expiry_is_reported_once_with_its_data(start, redis_server, log, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    start(redis_server.url)
    s = session(user="5", expiry=1, cart=[1, 2])
    assert wait_for_events(log, 1) == [
        {"kind": "expired", "session_key": s.session_key, "user_id": "5",
         "data": {"_auth_user_id": "5", "cart": [1, 2], "_session_expiry": 1}},
    ]  # fmt: skip
    time.sleep(0.6)  # a few more sweeps: still once
    assert len(events(log)) == 1
    assert r.exists(keys.user_index(NS, "5")) == 0


def test_deletes_made_outside_session_ng_are_reported(
    start, redis_server, log, r: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    start(redis_server.url)
    by_hash = session(user="6", note="a")
    by_shadow = session(user="7", note="b")
    r.delete(keys.session_hash(NS, by_hash.session_key))  # type: ignore[arg-type]
    r.delete(keys.session_shadow(NS, by_shadow.session_key))  # type: ignore[arg-type]
    found = sorted(wait_for_events(log, 2), key=lambda e: e["user_id"] or "")
    assert found == sorted(
        [
            # The hash is gone, and with it who owned it and what it held.
            {"kind": "deleted", "session_key": by_hash.session_key, "user_id": None, "data": {}},
            {"kind": "deleted", "session_key": by_shadow.session_key, "user_id": "7",
             "data": {"_auth_user_id": "7", "note": "b"}},
        ],
        key=lambda e: e["user_id"] or "",
    )  # fmt: skip
    # What was left of the second is removed too: it cannot come back.
    assert r.exists(keys.session_hash(NS, by_shadow.session_key)) == 0  # type: ignore[arg-type]


def test_session_ngs_own_deletes_and_rotations_are_not_reported_again(
    start, redis_server, log, r: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    start(redis_server.url)
    session(user="8").delete()
    session(user="8").flush()
    session(user="8").cycle_key()
    # The control: the worker is listening, and reports this one only.
    control = session(user="8")
    r.delete(keys.session_hash(NS, control.session_key))  # type: ignore[arg-type]
    wait_for_events(log, 1)
    time.sleep(0.6)
    assert [(e["kind"], e["session_key"]) for e in events(log)] == [
        ("deleted", control.session_key)
    ]


def test_two_workers_report_each_end_exactly_once(start, redis_server, log, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    first, second = start(redis_server.url), start(redis_server.url)
    expiring = [session(user=str(i), expiry=1) for i in range(3)]
    deleted = [session(user="9") for _ in range(2)]
    for s in deleted:
        r.delete(keys.session_hash(NS, s.session_key))  # type: ignore[arg-type]
    found = wait_for_events(log, 5)
    time.sleep(0.6)
    found = events(log)
    assert sorted((e["kind"], e["session_key"]) for e in found) == sorted(
        [("expired", s.session_key) for s in expiring]
        + [("deleted", s.session_key) for s in deleted]
    )
    # One of them sweeps.
    leaders = [w for w in (first, second) if "took the sweep lock" in w.log()]
    assert len(leaders) == 1


def test_the_sweep_lock_passes_on_when_its_holder_dies(start, redis_server, log) -> None:  # type: ignore[no-untyped-def]
    first, second = start(redis_server.url), start(redis_server.url)
    wait_until(lambda: "took the sweep lock" in first.log() + second.log(), 5)
    leader, other = (first, second) if "took the sweep lock" in first.log() else (second, first)
    leader.kill()
    other.wait_for_log("took the sweep lock", timeout=5)
    s = session(user="10", expiry=1)
    assert [e["session_key"] for e in wait_for_events(log, 1)] == [s.session_key]


def test_a_worker_catches_up_on_what_ended_while_none_ran(start, redis_server, log) -> None:  # type: ignore[no-untyped-def]
    s = session(user="11", expiry=1, note="missed")
    time.sleep(1.3)  # it ended with no worker listening
    start(redis_server.url)
    assert wait_for_events(log, 1) == [
        {"kind": "expired", "session_key": s.session_key, "user_id": "11",
         "data": {"_auth_user_id": "11", "note": "missed", "_session_expiry": 1}},
    ]  # fmt: skip


def config_calls(url: str) -> dict[str, int]:
    stats = redis.Redis.from_url(url).info("commandstats")
    return {name: v["calls"] for name, v in stats.items() if name.startswith("cmdstat_config")}


def test_with_configuration_off_no_config_command_is_sent(start, settings, log) -> None:  # type: ignore[no-untyped-def]
    with RedisServer("--notify-keyspace-events", "Egx") as server:
        settings.SESSION_NG = {"REDIS_URL": server.url}
        # (Valkey's server runs CONFIG GET itself at start-up: count from here.)
        before = config_calls(server.url)
        worker = start(server.url, configure=False)
        s = session(user="12", expiry=1)
        assert [e["session_key"] for e in wait_for_events(log, 1)] == [s.session_key]
        assert worker.stop() == 0
        assert config_calls(server.url) == before
        assert "does not publish" not in worker.log()


def test_with_configuration_off_missing_flags_are_reported_clearly(start, settings) -> None:  # type: ignore[no-untyped-def]
    with RedisServer() as server:  # notify-keyspace-events is "" by default
        before = config_calls(server.url)
        worker = start(server.url, configure=False)
        worker.wait_for_log("does not publish expired and del keyspace events")
        assert worker.stop() == 0
        assert config_calls(server.url) == before


def test_with_configuration_on_the_flags_are_set(start) -> None:  # type: ignore[no-untyped-def]
    with RedisServer("--notify-keyspace-events", "K$") as server:
        start(server.url)
        client = redis.Redis.from_url(server.url)
        flags = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
        assert set(flags) == set("gxK$E")  # what was there is kept


def test_sigterm_stops_it_cleanly(start, redis_server) -> None:  # type: ignore[no-untyped-def]
    worker = start(redis_server.url)
    assert worker.stop() == 0
    assert "stopped after reporting 0 events" in worker.log()


def test_it_reconnects_after_redis_restarts_and_sets_the_flags_again(start, settings, log) -> None:  # type: ignore[no-untyped-def]
    server = RedisServer().start()
    try:
        settings.SESSION_NG = {"REDIS_URL": server.url}
        worker = start(server.url)
        server.stop()
        worker.wait_for_log("Redis unavailable")
        server = RedisServer(port=server.port).start()  # empty, flags back to ""
        wait_until(lambda: worker.log().count("listening on db") == 2, 15)
        client = redis.Redis.from_url(server.url)
        assert set(client.config_get("notify-keyspace-events")["notify-keyspace-events"]) == set(
            "Egx"
        )
        client.close()
        s = session(user="13", expiry=1)
        assert [e["session_key"] for e in wait_for_events(log, 1)] == [s.session_key]
    finally:
        server.stop()


def test_a_logout_is_not_reported_again_when_its_minute_comes(
    start, redis_server, log, r: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    start(redis_server.url)
    s = session(user="14", expiry=1)
    key = s.session_key
    assert key is not None
    bucket = keys.expiration_bucket(NS, int(r.hget(keys.session_hash(NS, key), "b") or 0))
    s.flush()  # logged out: reported in-process, and out of its bucket
    assert not r.sismember(bucket, key)
    time.sleep(0.5)  # the worker hears the deletes (and finds them claimed)
    r.delete(keys.session_event(NS, key))  # even once the claim has run out
    time.sleep(1.5)  # its minute's bucket is looked at several times
    assert events(log) == []


def test_ends_nobody_saw_are_caught_up_even_past_the_grace_period(
    start, redis_server, log, r: redis.Redis
) -> None:  # type: ignore[no-untyped-def]
    s = session(user="15", expiry=1)
    time.sleep(1.2)
    r.delete(keys.session_hash(NS, s.session_key))  # type: ignore[arg-type]  # as if the grace ran out
    start(redis_server.url)
    assert wait_for_events(log, 1) == [
        {"kind": "expired", "session_key": s.session_key, "user_id": None, "data": {}}
    ]


def test_a_receiver_that_raises_does_not_stop_the_worker(start, redis_server, log) -> None:  # type: ignore[no-untyped-def]
    worker = start(redis_server.url)
    failing = session(user="boom", expiry=1)
    fine = session(user="16", expiry=1)
    found = wait_for_events(log, 2)
    assert sorted(e["session_key"] for e in found) == sorted(
        [failing.session_key, fine.session_key]
    )
    worker.wait_for_log("receiver")
    assert "RuntimeError: receiver failed" in worker.log()
    assert worker.process.poll() is None


def test_a_refused_config_falls_back_to_the_probe(start, settings, log) -> None:  # type: ignore[no-untyped-def]
    # Like managed Redis: CONFIG does not exist; the flags were set by the operator.
    with RedisServer("--rename-command", "CONFIG", "", "--notify-keyspace-events", "Egx") as server:
        settings.SESSION_NG = {"REDIS_URL": server.url}
        worker = start(server.url)  # CONFIGURE_KEYSPACE_NOTIFICATIONS on
        worker.wait_for_log("cannot configure notify-keyspace-events")
        s = session(user="17", expiry=1)
        assert [e["session_key"] for e in wait_for_events(log, 1)] == [s.session_key]
        assert "does not publish" not in worker.log()
    with RedisServer("--rename-command", "CONFIG", "") as bare:
        worker = start(bare.url)
        worker.wait_for_log("does not publish expired and del keyspace events")


def run_unconfigured_worker(url: str, log: Path, tmp_path: Path, *args: str) -> str:
    """A worker under Django's default LOGGING, for one expiry; its stdout."""
    out = tmp_path / "worker.out"
    env = {
        **os.environ,
        "REDIS_URL": url,
        "SESSION_NG_EVENT_LOG": str(log),
        "WORKER_LOGGING": "django-default",
    }
    with open(out, "wb") as stdout, open(tmp_path / "worker.err", "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "session_ng_worker",
             "--settings=tests.worker_settings", "--sweep-interval", "0.2", *args],
            cwd=ROOT, env=env, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        s = session(user="5", expiry=1)
        assert len(wait_for_events(log, 1)) == 1, (tmp_path / "worker.err").read_text()
        assert s.session_key is not None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    assert (tmp_path / "worker.err").read_text() == ""
    return out.read_text()


def test_the_worker_logs_on_stdout_when_logging_is_not_configured(
    redis_server, log: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    printed = run_unconfigured_worker(redis_server.url, log, tmp_path)
    messages = [line.split(" INFO ", 1)[1] for line in printed.splitlines()]
    [event] = events(log)
    worker_id = messages[0].split()[2]
    assert messages[0] == (
        f"session_ng worker {worker_id} starting (namespace session_ng, sweeps every 0.2 s)"
    )
    assert messages[-1] == f"session_ng worker {worker_id} stopped after reporting 1 event"
    # In between, in an order that depends on timing (the notification flags
    # are set only by the first worker on this server):
    assert set(messages[1:-1]) - {"set notify-keyspace-events to 'Egx'"} == {
        f"session_ng worker {worker_id} listening on db 0",
        f"session_ng worker {worker_id} took the sweep lock",
        f"session {event['session_key'][:6]}… expired (user 5)",
    }


def test_the_worker_is_quiet_at_verbosity_0(redis_server, log: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run_unconfigured_worker(redis_server.url, log, tmp_path, "-v", "0") == ""


def test_the_sweep_lock_holds_the_sweeping_workers_id(start, redis_server, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    worker = start(redis_server.url, lock_ttl=1.5)
    worker.wait_for_log("took the sweep lock")
    worker_id = worker.log().split("session_ng worker ", 1)[1].split(" ", 1)[0]
    assert r.get(keys.worker_lock(NS)) == worker_id.encode()
    # Renewed at every sweep (0.2 s here), never past --lock-ttl.
    assert 0 < r.pttl(keys.worker_lock(NS)) <= 1500
    time.sleep(1.6)
    assert r.get(keys.worker_lock(NS)) == worker_id.encode()
    assert worker.stop() == 0
    assert r.exists(keys.worker_lock(NS)) == 0  # released on the way out

"""Round trips per operation, counted on the real client: exact numbers."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, cast

import pytest
from django.contrib.sessions.backends.base import UpdateError

from session_ng.backends.redis import SessionStore
from session_ng.store import driver


@pytest.fixture
def saved(r: Any) -> str:
    s = SessionStore()
    s["a"] = 1
    s["b"] = [1, 2]
    s.save()
    # Warm the connection and the script cache so counts are steady-state.
    SessionStore(s.session_key).load()
    # A write's script too, whichever tests ran before (none, with -k).
    r.script_load(driver.UPDATE.source)
    assert s.session_key is not None
    return s.session_key


def test_new_session_costs_one(roundtrips) -> None:  # type: ignore[no-untyped-def]
    SessionStore().save()  # warm up
    roundtrips.reset()
    s = SessionStore()
    s["a"] = 1
    s.save()
    assert roundtrips.count == 1


def test_read_costs_one(saved: str, roundtrips) -> None:  # type: ignore[no-untyped-def]
    roundtrips.reset()
    s = SessionStore(saved)
    assert s["a"] == 1
    assert s.get("b") == [1, 2]
    s.save_changes()  # the middleware's save: nothing changed, no second round trip
    assert roundtrips.count == 1


def test_write_costs_two(saved: str, roundtrips) -> None:  # type: ignore[no-untyped-def]
    roundtrips.reset()
    s = SessionStore(saved)
    s["a"] = 2
    s.save()
    assert roundtrips.count == 2


def test_untouched_costs_nothing(saved: str, roundtrips) -> None:  # type: ignore[no-untyped-def]
    roundtrips.reset()
    s = SessionStore(saved)
    assert s.session_key == saved
    assert roundtrips.count == 0


def test_cycle_key_costs_one_after_load(saved: str, roundtrips) -> None:  # type: ignore[no-untyped-def]
    s = SessionStore(saved)
    s.load()
    s._session_cache = s.load()
    roundtrips.reset()
    s.cycle_key()
    assert roundtrips.count == 1
    s.save_changes()  # cycle_key marks the session modified; nothing left to write
    assert roundtrips.count == 1


async def test_async_read_and_write_cost_the_same(saved: str, roundtrips) -> None:  # type: ignore[no-untyped-def]
    s = SessionStore(saved)
    await s.aload()  # warm this event loop's connection
    roundtrips.reset()
    s = SessionStore(saved)
    assert await s.aget("a") == 1
    await s.aset("a", 3)
    await s.asave()
    assert roundtrips.count == 2
    assert SessionStore(saved)["a"] == 3


def test_an_explicit_unchanged_save_costs_one_and_finds_a_deleted_session(
    saved: str,
    roundtrips,  # type: ignore[no-untyped-def]
) -> None:
    # Django's contract: save() of a session deleted meanwhile raises
    # UpdateError, changed or not. Only the explicit save() pays for knowing.
    SessionStore(saved).save()  # the server learns the script (NOSCRIPT, then EVAL)
    s = SessionStore(saved)
    assert s["a"] == 1
    roundtrips.reset()
    s.save()
    assert roundtrips.count == 1
    SessionStore(saved).delete()
    roundtrips.reset()
    s.save_changes()  # the middleware's save cannot know, and costs nothing
    assert roundtrips.count == 0
    with pytest.raises(UpdateError):
        s.save()
    assert roundtrips.count == 1
    assert not SessionStore().exists(saved)


async def test_an_explicit_unchanged_asave_finds_a_deleted_session(saved: str) -> None:
    s = SessionStore(saved)
    assert await s.aget("a") == 1
    await s.asave()  # alive: no error
    await SessionStore(saved).adelete()
    await s.asave_changes()
    with pytest.raises(UpdateError):
        await s.asave()
    assert not await SessionStore().aexists(saved)


def test_an_explicit_unchanged_save_slides_the_idle_timer(saved: str, r) -> None:  # type: ignore[no-untyped-def]
    from session_ng import keys
    from session_ng.conf import conf

    s = SessionStore(saved)
    assert s["a"] == 1
    hash_key = keys.session_hash(conf.snapshot().namespace, saved)
    before = int(r.hget(hash_key, "a")) - 60_000
    r.hset(hash_key, "a", before)  # as if last used a minute ago
    s.save()
    assert int(r.hget(hash_key, "a")) >= before + 60_000


class _Counter:
    """A script of our own (the driver only needs its source and SHA1)."""

    # Unique, so no earlier test has loaded it (no SCRIPT FLUSH needed, which
    # would make the other tests' round-trip counts depend on their order).
    source = f"-- {uuid.uuid4()}\nreturn redis.call('INCR', KEYS[1])"
    sha = hashlib.sha1(source.encode()).hexdigest()


def _batch_loading_the_script_halfway() -> driver.Operation[list[Any]]:
    # Another client loading the script while this batch runs, made
    # deterministic: the server learns it between the two calls.
    script = cast(driver.Script, _Counter)
    replies: list[Any] = yield driver.Batch(
        [
            driver.Eval(script, ["{count}a"], []),
            driver.Command(("SCRIPT", "LOAD", _Counter.source)),
            driver.Eval(script, ["{count}b"], []),
        ]
    )
    return replies


@pytest.mark.standalone  # SCRIPT LOAD has no key for a Cluster pipeline to route by
def test_a_batch_repeats_only_the_calls_whose_script_was_missing(r: Any, roundtrips) -> None:  # type: ignore[no-untyped-def]
    SessionStore().save()  # the store's connection is open
    roundtrips.reset()
    replies = driver.run(_batch_loading_the_script_halfway())
    # The first call found no script and is sent again with its source, on
    # its own; the third ran the first time and is not repeated (it would
    # count 2).
    assert roundtrips.count == 2
    resent = roundtrips.commands[1]
    assert resent.startswith(b"*4\r\n$4\r\nEVAL\r\n")
    assert resent.count(b"EVAL") == 1
    assert resent.endswith(b"{count}a\r\n")
    assert replies == [1, _Counter.sha.encode(), 1]
    assert (r.get("{count}a"), r.get("{count}b")) == (b"1", b"1")


@pytest.mark.standalone
async def test_an_async_batch_repeats_only_the_calls_whose_script_was_missing(r: Any) -> None:
    replies = await driver.arun(_batch_loading_the_script_halfway())
    assert replies == [1, _Counter.sha.encode(), 1]
    assert (r.get("{count}a"), r.get("{count}b")) == (b"1", b"1")

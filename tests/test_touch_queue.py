"""session_ng.touch_queue: concurrent websocket refreshes share round trips."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from harness.redis_server import free_port
from session_ng import keys
from session_ng.backends.redis import SessionStore
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.touch_queue import TouchQueue, queue


@pytest.fixture(autouse=True)
async def _script_loaded() -> None:
    # The first touch on a fresh server sends touch.lua itself (NOSCRIPT, then
    # EVAL); the counts below are those of a server that has it.
    await queue().touch("z" * 32)


async def new_session() -> str:
    s = SessionStore()
    await s.aset("a", 1)
    await s.asave()
    assert s.session_key is not None
    return s.session_key


async def test_touches_arriving_meanwhile_go_out_together(roundtrips, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    session_keys = [await new_session() for _ in range(4)]
    await SessionStore(session_keys[3]).adelete()
    for key in session_keys:
        r.pexpire(keys.session_shadow("session_ng", key), 10_000)
    touches = TouchQueue()
    roundtrips.reset()
    alive = await asyncio.gather(*(touches.touch(key) for key in session_keys))
    assert alive == [True, True, True, False]
    # The first went out alone; the three that came while it was in flight,
    # together in one call of the script.
    assert roundtrips.count == 2
    assert [c.count(b"EVALSHA") for c in roundtrips.commands] == [1, 1]
    batch = roundtrips.commands[1]
    assert all(key.encode() in batch for key in session_keys[1:])
    for key in session_keys[:3]:
        assert r.pttl(keys.session_shadow("session_ng", key)) > 1_209_590_000


async def test_sockets_of_one_session_share_a_touch(roundtrips) -> None:  # type: ignore[no-untyped-def]
    key = await new_session()
    touches = TouchQueue()
    roundtrips.reset()
    assert await asyncio.gather(*(touches.touch(key) for _ in range(5))) == [True] * 5
    assert sum(c.count(b"EVALSHA") for c in roundtrips.commands) == 2  # 1 alone, 4 shared
    assert roundtrips.count == 2


async def test_one_touch_alone_is_one_plain_call(roundtrips) -> None:  # type: ignore[no-untyped-def]
    key = await new_session()
    roundtrips.reset()
    assert await queue().touch(key) is True
    assert roundtrips.count == 1
    assert queue() is queue()  # one per event loop


@pytest.mark.standalone  # points REDIS_URL at a dead port
async def test_every_waiter_hears_that_redis_is_down(settings) -> None:  # type: ignore[no-untyped-def]
    key = await new_session()
    settings.SESSION_NG = {**settings.SESSION_NG, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    touches = TouchQueue()
    results = await asyncio.gather(
        *(touches.touch(k) for k in (key, "b" * 32, "c" * 32)), return_exceptions=True
    )
    assert [type(x) for x in results] == [SessionStoreUnavailable] * 3
    assert touches.waiting == {}
    assert touches.sending is False


# Keeps Redis busy for ARGV[1] rounds. Not timed with TIME inside the script:
# Valkey does not advance that clock while a script runs. busy_rounds()
# measures how many rounds make the wanted time on this machine.
BUSY_SCRIPT = """
for _ = 1, tonumber(ARGV[1]) do redis.call('TIME') end
return 1
"""


def busy_rounds(client: redis.Redis, seconds: float) -> int:
    sample = 20_000
    started = time.perf_counter()
    client.eval(BUSY_SCRIPT, 0, sample)
    return max(sample, int(sample * seconds / (time.perf_counter() - started)))


async def test_a_cancelled_sender_does_not_strand_the_others(redis_server) -> None:  # type: ignore[no-untyped-def]
    session_keys = [await new_session() for _ in range(3)]
    # Keep Redis busy for 0.3 s so that the first touch is surely in flight.
    busy = redis.Redis.from_url(redis_server.url, socket_timeout=30)
    rounds = busy_rounds(busy, 0.3)
    blocker = asyncio.create_task(asyncio.to_thread(busy.eval, BUSY_SCRIPT, 0, rounds))
    await asyncio.sleep(0.05)
    touches = TouchQueue()
    first = asyncio.create_task(touches.touch(session_keys[0]))
    await asyncio.sleep(0.05)
    assert touches.sending is True
    others = [asyncio.create_task(touches.touch(k)) for k in session_keys[1:]]
    await asyncio.sleep(0.05)
    first.cancel()  # its socket went away while its batch was in flight
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.gather(*others) == [True, True]
    assert await blocker == 1
    busy.close()


async def test_a_corrupt_session_fails_only_itself_in_a_batch(r: redis.Redis) -> None:
    good = [await new_session() for _ in range(3)]
    bad = "c" * 32
    r.set(keys.session_hash("session_ng", bad), "not a hash")
    r.set(keys.session_shadow("session_ng", bad), "")
    touches = TouchQueue()
    results = await asyncio.gather(*(touches.touch(k) for k in [good[0], bad, *good[1:]]))
    assert results == [True, False, True, True]


async def test_metadata_a_load_refuses_is_neither_touched_nor_repaired(r: redis.Redis) -> None:
    key = await new_session()
    hash_key = keys.session_hash("session_ng", key)
    r.hset(hash_key, "a", "garbage")
    ttl = r.pttl(hash_key)
    assert await queue().touch(key) is False
    assert r.hget(hash_key, "a") == b"garbage"  # not "repaired" into a live session
    assert r.pttl(hash_key) <= ttl
    assert await SessionStore(key).aload() == {}
    # The same for each field a load checks.
    for field, bad in (("c", "x"), ("b", "1.5x"), ("i", "")):
        key = await new_session()
        r.hset(keys.session_hash("session_ng", key), field, bad)
        assert await queue().touch(key) is False, field
        assert await SessionStore(key).aload() == {}, field

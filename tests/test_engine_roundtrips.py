"""Round trips per operation, counted on the real client: exact numbers."""

from __future__ import annotations

import pytest

from session_ng.backends.redis import SessionStore


@pytest.fixture
def saved() -> str:
    s = SessionStore()
    s["a"] = 1
    s["b"] = [1, 2]
    s.save()
    # Warm the connection and the script cache so counts are steady-state.
    SessionStore(s.session_key).load()
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
    s.save()  # nothing changed: no second round trip
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
    s.save()  # cycle_key marks the session modified; nothing left to write
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

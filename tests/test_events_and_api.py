"""Signals sent in-process, the user index API, and what login records."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.test import Client

from session_ng import api, keys
from session_ng.backends.redis import SessionStore
from session_ng.signals import session_created, session_deleted, session_rotated

pytestmark = pytest.mark.django_db
ALICE = {"username": "alice", "password": "alice-password"}


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    received: list[tuple[str, dict[str, Any]]] = []

    def on_created(sender: Any, **kwargs: Any) -> None:
        received.append(("created", {k: kwargs[k] for k in ("session_key", "user_id", "data")}))

    def on_deleted(sender: Any, **kwargs: Any) -> None:
        received.append(("deleted", {k: kwargs[k] for k in ("session_key", "user_id", "data")}))

    session_created.connect(on_created)
    session_deleted.connect(on_deleted)
    yield received
    session_created.disconnect(on_created)
    session_deleted.disconnect(on_deleted)


@pytest.fixture
def rotations() -> Iterator[list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    def on_rotated(sender: Any, **kwargs: Any) -> None:
        received.append(
            {k: kwargs[k] for k in ("session_key", "new_session_key", "user_id", "data")}
        )

    session_rotated.connect(on_rotated)
    yield received
    session_rotated.disconnect(on_rotated)


def logged_in(user_id: str, **data: Any) -> SessionStore:
    s = SessionStore()
    s.update({"_auth_user_id": user_id, **data})
    s.save()
    return s


def test_created_once_on_first_save_not_on_updates_or_rotation(events) -> None:  # type: ignore[no-untyped-def]
    s = logged_in("7", cart=[1])
    s["cart"] = [1, 2]
    s.save()
    s.cycle_key()
    assert events == [
        ("created", {"session_key": events[0][1]["session_key"], "user_id": "7",
                     "data": {"_auth_user_id": "7", "cart": [1]}}),
    ]  # fmt: skip
    assert events[0][1]["session_key"] != s.session_key  # rotated since


def test_deleted_with_the_data_it_held(events) -> None:  # type: ignore[no-untyped-def]
    s = logged_in("8", theme="dark")
    key = s.session_key
    events.clear()
    SessionStore(key).flush()
    assert events == [
        ("deleted", {"session_key": key, "user_id": "8",
                     "data": {"_auth_user_id": "8", "theme": "dark"}}),
    ]  # fmt: skip
    SessionStore().delete(key)  # already gone: nothing more
    assert len(events) == 1


@pytest.mark.django_db(transaction=True)
async def test_async_paths_send_the_same(events) -> None:  # type: ignore[no-untyped-def]
    s = SessionStore()
    await s.aset("a", 1)
    await s.asave()
    await s.adelete()
    assert [(kind, e["data"]) for kind, e in events] == [
        ("created", {"a": 1}),
        ("deleted", {"a": 1}),
    ]


def test_logout_through_the_site_sends_deleted(events) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    client.post("/login/", ALICE)
    key = client.cookies["sessionid"].value
    events.clear()
    client.post("/logout/")
    ((kind, event),) = events
    assert (kind, event["session_key"]) == ("deleted", key)
    assert event["user_id"] is not None


def test_login_records_user_agent_and_ip(django_user_model) -> None:  # type: ignore[no-untyped-def]
    alice = django_user_model.objects.get(username="alice")
    client = Client(HTTP_USER_AGENT="Firefox/130 (test)", REMOTE_ADDR="203.0.113.9")
    client.post("/login/", ALICE)
    (info,) = api.find_sessions(alice)
    assert info.session_key == client.cookies["sessionid"].value
    assert (info.user_agent, info.ip) == ("Firefox/130 (test)", "203.0.113.9")
    now = datetime.now(tz=UTC)
    assert now - timedelta(seconds=5) < info.created <= info.last_access <= now
    assert info.expires is not None
    # Its end: the idle timeout and the renewal period after the last renewal.
    assert info.expires - info.last_access == timedelta(seconds=1209600 + 60)


def test_find_sessions_lists_live_ones_newest_first_and_prunes(r: redis.Redis) -> None:
    older = logged_in("9")
    time.sleep(0.003)  # "newest" is by creation time in ms: no tie
    newer = logged_in("9")
    other_user = logged_in("10")
    ended = logged_in("9")
    r.delete(keys.session_shadow("session_ng", ended.session_key))  # type: ignore[arg-type]
    r.hset(keys.user_index("session_ng", "9"), mapping={"junk": "", other_user.session_key: ""})  # type: ignore[dict-item]
    found = api.find_sessions("9")
    assert [i.session_key for i in found] == [newer.session_key, older.session_key]
    # Stale entries were removed as they were found.
    assert set(r.hkeys(keys.user_index("session_ng", "9"))) == {
        older.session_key.encode(),  # type: ignore[union-attr]
        newer.session_key.encode(),  # type: ignore[union-attr]
    }
    assert api.find_sessions("nobody") == []


def test_delete_sessions_ends_all_but_the_excluded(events, r: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    keep = logged_in("11")
    gone = [logged_in("11"), logged_in("11")]
    events.clear()
    assert api.delete_sessions("11", exclude=keep.session_key) == 2
    assert sorted(e["session_key"] for _, e in events) == sorted(s.session_key for s in gone)  # type: ignore[type-var]
    assert [i.session_key for i in api.find_sessions("11")] == [keep.session_key]
    assert api.delete_sessions("11") == 1
    assert r.exists(keys.user_index("session_ng", "11")) == 0


def test_get_session_reads_without_sliding_the_timer(r: redis.Redis) -> None:
    s = logged_in("12", note="hi")
    shadow = keys.session_shadow("session_ng", s.session_key)  # type: ignore[arg-type]
    r.pexpire(shadow, 50_000)
    store = api.get_session(s.session_key)  # type: ignore[arg-type]
    assert store is not None
    assert store["note"] == "hi"
    assert r.pttl(shadow) <= 50_000
    store["note"] = "changed by a task"
    store.save()
    assert SessionStore(s.session_key)["note"] == "changed by a task"
    assert api.get_session("a" * 32) is None
    assert api.get_session("not a key") is None


def test_an_unchanged_save_of_a_looked_up_session_checks_without_sliding(
    r: redis.Redis,
) -> None:
    from django.contrib.sessions.backends.base import UpdateError

    s = logged_in("14", note="hi")
    shadow = keys.session_shadow("session_ng", s.session_key)  # type: ignore[arg-type]
    store = api.get_session(s.session_key)  # type: ignore[arg-type]
    assert store is not None
    assert store["note"] == "hi"
    r.pexpire(shadow, 50_000)
    store.save()  # nothing to write: the session is alive, and not kept so
    assert 0 < r.pttl(shadow) <= 50_000
    SessionStore(s.session_key).delete()
    with pytest.raises(UpdateError):
        store.save()
    assert r.exists(shadow) == 0


async def alogged_in(user_id: str) -> SessionStore:
    s = SessionStore()
    await s.aset("_auth_user_id", user_id)
    await s.asave()
    return s


@pytest.mark.django_db(transaction=True)
async def test_async_api_twins() -> None:
    a = await alogged_in("13")
    b = await alogged_in("13")
    assert {i.session_key for i in await api.afind_sessions("13")} == {a.session_key, b.session_key}
    store = await api.aget_session(a.session_key)  # type: ignore[arg-type]
    assert store is not None
    assert await store.aget("_auth_user_id") == "13"
    assert await api.adelete_sessions("13", exclude=[a.session_key]) == 1  # type: ignore[list-item]
    assert [i.session_key for i in await api.afind_sessions("13")] == [a.session_key]


def test_delete_sessions_needs_no_fix_up_round_trips(roundtrips) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        logged_in("19")
    logged_in("warm-up").delete()  # load the delete script once
    api.find_sessions("19")
    roundtrips.reset()
    assert api.delete_sessions("19") == 3
    # Index members, their hashes (one pipeline), then one script per session.
    assert roundtrips.count == 2 + 3


def test_rotation_sends_rotated_once_with_both_keys(rotations, events) -> None:  # type: ignore[no-untyped-def]
    s = logged_in("9", lang="fr")
    old = s.session_key
    events.clear()
    s.cycle_key()
    assert rotations == [
        {"session_key": old, "new_session_key": s.session_key, "user_id": "9",
         "data": {"_auth_user_id": "9", "lang": "fr"}},
    ]  # fmt: skip
    assert events == []  # neither created nor deleted: the same session, a new key


async def test_async_rotation_sends_rotated(rotations) -> None:  # type: ignore[no-untyped-def]
    s = SessionStore()
    await s.aset("lang", "de")
    await s.asave()
    old = s.session_key
    await s.acycle_key()
    assert rotations == [
        {"session_key": old, "new_session_key": s.session_key, "user_id": None,
         "data": {"lang": "de"}},
    ]  # fmt: skip


def test_rotating_a_session_never_stored_sends_nothing(rotations) -> None:  # type: ignore[no-untyped-def]
    s = SessionStore()
    s["a"] = 1
    s.cycle_key()  # Django's way: a new session; there was no old key to end
    assert rotations == []

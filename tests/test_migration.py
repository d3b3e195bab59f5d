"""Switching to session_ng without logging anyone out (SESSION_NG["MIGRATE_FROM"]
and ``manage.py session_ng_import``), against the real old stores.

Sessions are made by Django's own SessionMiddleware over the old engine (with
a login through django.contrib.auth), then read through session_ng's
middleware with the very same cookie.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth import authenticate, login, logout
from django.contrib.sessions.backends.db import SessionStore as DbStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from django.utils import timezone

from harness.redis_server import RedisServer
from session_ng import importer, keys, migration
from session_ng.backends.redis import SessionStore, new_session_key
from session_ng.checks import check_migration
from session_ng.importer import Progress, import_all
from session_ng.signals import session_created
from session_ng.store import records, sessions

pytestmark = pytest.mark.django_db

NS = "session_ng"
DB = migration.DB
CACHED_DB = migration.CACHED_DB
CACHE = migration.CACHE
FILE = migration.FILE
SIGNED = migration.SIGNED_COOKIES
REDIS_SESSIONS = migration.REDIS_SESSIONS
DJANGO_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
OUR_MIDDLEWARE = [
    "session_ng.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
CART = ["tea", "cups", {"saucers": 2}]
# django-redis-sessions saves with redis-py's SETEX, which redis-py deprecates.
REDIS_SESSIONS_SETEX = pytest.mark.filterwarnings(
    "ignore:Call to deprecated setex:DeprecationWarning"
)
USERNAME = "switching-user"


# --- the site: the same views before and after the switch ---------------------


def login_view(request: HttpRequest) -> HttpResponse:
    user = authenticate(request, username=request.POST["username"], password="pw")
    assert user is not None
    login(request, user)
    request.session["cart"] = CART
    return HttpResponse("in")


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "user": request.user.get_username() if request.user.is_authenticated else None,
            "cart": request.session.get("cart"),
        }
    )


def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return HttpResponse("out")


urlpatterns = [
    path("login/", login_view),
    path("whoami/", whoami),
    path("logout/", logout_view),
]


@pytest.fixture(autouse=True)
def _site() -> Iterator[None]:
    with override_settings(ROOT_URLCONF=__name__):
        yield


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user(USERNAME, password="pw")


def old_site(engine: str) -> Any:
    return override_settings(SESSION_ENGINE=engine, MIDDLEWARE=DJANGO_MIDDLEWARE)


def new_site(engine: str) -> Any:
    return override_settings(
        SESSION_ENGINE="session_ng.backends.redis",
        MIDDLEWARE=OUR_MIDDLEWARE,
        SESSION_NG={**settings.SESSION_NG, "MIGRATE_FROM": engine},
    )


def log_in_on_old_site(engine: str, username: str = USERNAME) -> Client:
    client = Client()
    with old_site(engine):
        assert client.post("/login/", {"username": username}).status_code == 200
        assert json.loads(client.get("/whoami/").content) == {"user": username, "cart": CART}
    return client


def get_on_new_site(client: Client, engine: str, url: str) -> Any:
    """GET ``url`` with ``client``'s cookies through session_ng's middleware (a
    Client builds its middleware once: a new one, sharing the cookie jar)."""
    with new_site(engine):
        switched = Client()
        switched.cookies = client.cookies
        return switched.get(url)


def whoami_on_new_site(client: Client, engine: str) -> dict[str, Any]:
    response = get_on_new_site(client, engine, "/whoami/")
    assert response.status_code == 200
    result: dict[str, Any] = json.loads(response.content)
    return result


def cookie(client: Client) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def assert_in_redis(r: Any, key: str, user_id: int, remaining_s: float) -> None:
    """The session is in Redis under ``key``: user index, bucket, import
    marker, and about the life it had left in the old store."""
    fields = r.hgetall(keys.session_hash(NS, key))
    assert fields[b"u"] == str(user_id).encode()
    assert json.loads(fields[b".cart"]) == CART
    assert set(r.hkeys(keys.user_index(NS, str(user_id)))) == {key.encode()}
    pttl = r.pttl(keys.session_shadow(NS, key))
    assert abs(pttl / 1000 - remaining_s) < 5, (pttl, remaining_s)
    bucket = int(fields[b"b"])
    assert key.encode() in r.smembers(keys.expiration_bucket(NS, bucket))
    expected_minute = records.bucket_minute(int((time.time() + pttl / 1000) * 1000))
    assert abs(bucket - expected_minute) <= 1
    assert r.exists(keys.session_import_marker(NS, key)) == 1


# --- the old stores -----------------------------------------------------------


@pytest.fixture
def old_redis_url(redis_server: RedisServer) -> str:
    """The old stores that live in Redis use another database of the test server."""
    return redis_server.url.rsplit("/", 1)[0] + "/1"


@pytest.fixture
def old_redis(old_redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(old_redis_url)
    yield client
    client.close()


@pytest.fixture
def django_redis_cache(old_redis_url: str) -> Iterator[None]:
    caches = {
        **settings.CACHES,
        "old": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": old_redis_url,
            "KEY_PREFIX": "oldsite",
        },
    }
    with override_settings(CACHES=caches, SESSION_CACHE_ALIAS="old"):
        yield


@pytest.fixture
def session_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from django.contrib.sessions.backends.file import SessionStore as FileStore

    # Django's file engine keeps the first directory it used (as its own
    # tests know): forget it, before and after.
    monkeypatch.delattr(FileStore, "_storage_path", raising=False)
    with override_settings(SESSION_FILE_PATH=str(tmp_path)):
        yield tmp_path
    monkeypatch.delattr(FileStore, "_storage_path", raising=False)


@pytest.fixture
def redis_sessions_store(old_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from redis_sessions import settings as redis_sessions_settings

    # django-redis-sessions reads its settings once, as module attributes.
    monkeypatch.setattr(redis_sessions_settings, "SESSION_REDIS_URL", old_redis_url)
    monkeypatch.setattr(redis_sessions_settings, "SESSION_REDIS_PREFIX", "oldsession")
    monkeypatch.setattr(redis_sessions_settings, "SESSION_REDIS_SOCKET_TIMEOUT", 5)


def old_store_has(engine: str, key: str) -> bool:
    with old_site(engine):
        return bool(migration.source_for(engine).find(key))


# --- lazy migration -----------------------------------------------------------


def lazy_round(engine: str, alice: Any, r: Any) -> None:
    client = log_in_on_old_site(engine)
    key = cookie(client)
    assert old_store_has(engine, key)
    assert r.exists(keys.session_hash(NS, key)) == 0
    assert whoami_on_new_site(client, engine) == {"user": USERNAME, "cart": CART}
    # Same key, same cookie: the response did not need to send another one.
    assert cookie(client) == key
    assert_in_redis(r, key, alice.pk, settings.SESSION_COOKIE_AGE)
    assert not old_store_has(engine, key)
    # From now on Redis answers alone.
    assert whoami_on_new_site(client, engine) == {"user": USERNAME, "cart": CART}
    # Logging out ends it for good: the old store cannot bring it back.
    get_on_new_site(client, engine, "/logout/")
    assert r.exists(keys.session_hash(NS, key)) == 0


def test_lazy_db(alice: Any, r: Any) -> None:
    lazy_round(DB, alice, r)
    assert Session.objects.count() == 0


def test_lazy_cached_db(alice: Any, r: Any) -> None:
    lazy_round(CACHED_DB, alice, r)
    assert Session.objects.count() == 0


def test_lazy_cache_locmem(alice: Any, r: Any) -> None:
    lazy_round(CACHE, alice, r)


@pytest.mark.usefixtures("django_redis_cache")
def test_lazy_cache_django_redis(alice: Any, r: Any, old_redis: Any) -> None:
    lazy_round(CACHE, alice, r)
    assert old_redis.keys("*") == []


@pytest.mark.usefixtures("session_files")
def test_lazy_file(alice: Any, r: Any, session_files: Path) -> None:
    lazy_round(FILE, alice, r)
    assert list(session_files.iterdir()) == []


@REDIS_SESSIONS_SETEX
@pytest.mark.usefixtures("redis_sessions_store")
def test_lazy_redis_sessions(alice: Any, r: Any, old_redis: Any) -> None:
    lazy_round(REDIS_SESSIONS, alice, r)
    assert old_redis.keys("*") == []


def test_lazy_keeps_the_remaining_life(alice: Any, r: Any) -> None:
    client = log_in_on_old_site(DB)
    key = cookie(client)
    # Last saved long ago: 100 s are left.
    Session.objects.filter(session_key=key).update(
        expire_date=timezone.now() + timedelta(seconds=100)
    )
    with new_site(DB):
        store = SessionStore(key)
        store.inspect()
        assert store["cart"] == CART
    assert_in_redis(r, key, alice.pk, 100)


def test_lazy_signed_cookies(alice: Any, r: Any) -> None:
    client = log_in_on_old_site(SIGNED)
    old_cookie = cookie(client)
    assert ":" in old_cookie
    assert whoami_on_new_site(client, SIGNED) == {"user": USERNAME, "cart": CART}
    # The response replaced the cookie with session_ng's, a key it derived.
    key = cookie(client)
    with new_site(SIGNED):
        assert key == migration.signed_cookie_key(old_cookie)
    assert_in_redis(r, key, alice.pk, settings.SESSION_COOKIE_AGE)
    assert whoami_on_new_site(client, SIGNED) == {"user": USERNAME, "cart": CART}
    # A second request that still carried the old cookie finds the same session.
    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = old_cookie
    assert whoami_on_new_site(replay, SIGNED) == {"user": USERNAME, "cart": CART}
    assert len(r.keys(f"{NS}:sessions:{{*}}")) == 1
    # After logout the old cookie brings nothing back.
    get_on_new_site(client, SIGNED, "/logout/")
    replay = Client()
    replay.cookies[settings.SESSION_COOKIE_NAME] = old_cookie
    assert whoami_on_new_site(replay, SIGNED) == {"user": None, "cart": None}
    assert r.keys(f"{NS}:sessions:{{*}}") == []


def test_a_forged_signed_cookie_is_no_session(r: Any) -> None:
    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = "eyJhIjoxfQ:1tXyZa:forgedsignature"
    assert whoami_on_new_site(client, SIGNED) == {"user": None, "cart": None}
    assert r.keys("*") == []


@pytest.mark.django_db(transaction=True)
async def test_lazy_async(alice: Any, r: Any) -> None:
    from asgiref.sync import sync_to_async

    client = await sync_to_async(log_in_on_old_site)(DB)
    key = cookie(client)
    with new_site(DB):
        store = SessionStore(key)
        assert await store.aget("cart") == CART
        assert await store.aget("_auth_user_id") == str(alice.pk)
    assert await sync_to_async(Session.objects.filter(session_key=key).exists)() is False
    assert r.exists(keys.session_import_marker(NS, key)) == 1


def test_a_migrated_session_is_not_reported_as_created(alice: Any) -> None:
    client = log_in_on_old_site(DB)
    created: list[str] = []

    def receiver(sender: Any, session_key: str, **kwargs: Any) -> None:
        created.append(session_key)

    session_created.connect(receiver)
    try:
        assert whoami_on_new_site(client, DB)["user"] == USERNAME
    finally:
        session_created.disconnect(receiver)
    assert created == []


def test_an_unknown_key_is_still_no_session(r: Any) -> None:
    with new_site(DB):
        store = SessionStore("a" * 32)
        assert store.load() == {}
        assert store.session_key is None
    assert r.keys("*") == []


def test_imported_once_even_if_the_old_store_still_has_it(alice: Any, r: Any) -> None:
    """A crash between the import and the removal from the old store, then a
    logout: the old copy must not bring the session back."""
    client = log_in_on_old_site(DB)
    key = cookie(client)
    row = Session.objects.get(session_key=key)
    assert whoami_on_new_site(client, DB)["user"] == USERNAME
    get_on_new_site(client, DB, "/logout/")
    row.save()  # the old copy is back
    # The logout deleted the cookie; a copy of it (another tab, a replay) comes back.
    assert settings.SESSION_COOKIE_NAME not in client.cookies or not cookie(client)
    client.cookies[settings.SESSION_COOKIE_NAME] = key
    assert whoami_on_new_site(client, DB) == {"user": None, "cart": None}
    assert r.exists(keys.session_hash(NS, key)) == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("session_files")
def test_concurrent_first_requests_import_once_and_lose_nothing(alice: Any, r: Any) -> None:
    client = log_in_on_old_site(FILE)
    key = cookie(client)
    both_read = threading.Barrier(2, timeout=10)
    statuses: list[str] = []
    errors: list[BaseException] = []
    real_find = migration.FileSource.find
    real_save = sessions.save

    def find(self: Any, session_key: str, cookie: str | None = None) -> Any:
        found = real_find(self, session_key, cookie)
        both_read.wait()  # both requests read the old store before either writes
        return found

    def save(ns: str, plan: Any) -> Any:
        status = yield from real_save(ns, plan)
        if plan.import_life is not None:
            statuses.append(status)
        return status

    def request(name: str) -> None:
        try:
            store = SessionStore(key)
            assert store["cart"] == CART
            store[name] = name
            store.save()
        except BaseException as exc:  # reported below
            errors.append(exc)

    with new_site(FILE), pytest.MonkeyPatch.context() as patch:
        patch.setattr(migration.FileSource, "find", find)
        patch.setattr(sessions, "save", save)
        threads = [threading.Thread(target=request, args=(n,)) for n in ("first", "second")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert sorted(statuses) == ["exists", "ok"]
    assert len(r.keys(f"{NS}:sessions:{{*}}")) == 1
    fields = r.hgetall(keys.session_hash(NS, key))
    assert json.loads(fields[b".first"]) == "first"
    assert json.loads(fields[b".second"]) == "second"
    assert json.loads(fields[b".cart"]) == CART
    assert set(r.hkeys(keys.user_index(NS, str(alice.pk)))) == {key.encode()}


# --- session_ng_import ----------------------------------------------------------


def make_old_sessions(engine: str, count: int) -> list[str]:
    """``count`` sessions saved by the old engine's own store (a login each)."""
    made = []
    with old_site(engine):
        from importlib import import_module

        store_class = import_module(engine).SessionStore
        for i in range(count):
            store = store_class()
            store["cart"] = CART
            store["n"] = i
            store.save()
            made.append(store.session_key)
    return made


def run_import(engine: str, *args: str) -> str:
    out = io.StringIO()
    with new_site(engine):
        call_command("session_ng_import", "--from", engine, *args, stdout=out)
    return out.getvalue()


def summary(output: str) -> str:
    return output.strip().splitlines()[-1].rsplit(" in ", 1)[0]


BULK_ENGINES = [
    pytest.param(DB, [], id="db"),
    pytest.param(CACHED_DB, [], id="cached_db"),
    pytest.param(CACHE, ["django_redis_cache"], id="cache-django-redis"),
    pytest.param(FILE, ["session_files"], id="file"),
    pytest.param(
        REDIS_SESSIONS, ["redis_sessions_store"], id="redis_sessions", marks=REDIS_SESSIONS_SETEX
    ),
]


# One process (a writer thread), and forked workers.
PROCESSES = pytest.mark.parametrize("processes", ["1", "3"])


@PROCESSES
@pytest.mark.parametrize(("engine", "fixtures"), BULK_ENGINES)
def test_bulk_import(
    engine: str,
    fixtures: list[str],
    processes: str,
    alice: Any,
    r: Any,
    request: pytest.FixtureRequest,
) -> None:
    for name in fixtures:
        request.getfixturevalue(name)
    client = log_in_on_old_site(engine)
    key = cookie(client)
    others = make_old_sessions(engine, 7)
    output = run_import(engine, "--batch-size", "3", "--processes", processes)
    assert summary(output) == (
        "8 imported, 0 already in Redis, 0 expired, 0 undecodable, "
        "0 with keys session_ng does not accept (skipped)"
    )
    assert_in_redis(r, key, alice.pk, settings.SESSION_COOKIE_AGE)
    for i, other in enumerate(others):
        fields = r.hgetall(keys.session_hash(NS, other))
        assert json.loads(fields[b".n"]) == i
    for k in [key, *others]:
        assert not old_store_has(engine, k)
    # The user is still logged in, from Redis.
    assert whoami_on_new_site(client, engine) == {"user": USERNAME, "cart": CART}
    # A re-run imports nothing twice.
    assert summary(run_import(engine, "--processes", processes)) == (
        "0 imported, 0 already in Redis, 0 expired, 0 undecodable, "
        "0 with keys session_ng does not accept (skipped)"
    )
    assert len(r.keys(f"{NS}:sessions:{{*}}")) == 8


@PROCESSES
def test_bulk_import_counts_what_it_skips(processes: str, alice: Any, r: Any) -> None:
    [live] = make_old_sessions(DB, 1)
    [expired] = make_old_sessions(DB, 1)
    Session.objects.filter(session_key=expired).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    [tampered] = make_old_sessions(DB, 1)
    Session.objects.filter(session_key=tampered).update(session_data="eyJuIjoxfQ:bad:sig")
    row = Session.objects.get(session_key=live)
    for bad_key in ("short", "UPPERCASE" * 4, "x{y}" * 9, "a" * 129):
        Session.objects.create(
            session_key=bad_key, session_data=row.session_data, expire_date=row.expire_date
        )
    output = run_import(DB, "--batch-size", "2", "--processes", processes)
    assert summary(output) == (
        "1 imported, 0 already in Redis, 1 expired, 1 undecodable, "
        "4 with keys session_ng does not accept (skipped)"
    )
    assert [k.decode() for k in r.keys(f"{NS}:sessions:{{*}}")] == [keys.session_hash(NS, live)]
    # What was skipped is left where it was (clearsessions removes the expired).
    assert Session.objects.count() == 6


@PROCESSES
def test_dry_run_writes_and_removes_nothing(processes: str, r: Any) -> None:
    made = make_old_sessions(DB, 5)
    assert summary(run_import(DB, "--dry-run", "--batch-size", "2", "--processes", processes)) == (
        "5 would be imported, 0 already in Redis, 0 expired, 0 undecodable, "
        "0 with keys session_ng does not accept (skipped)"
    )
    assert r.keys("*") == []
    assert sorted(Session.objects.values_list("session_key", flat=True)) == sorted(made)


def test_an_interrupted_import_resumes(r: Any) -> None:
    made = make_old_sessions(DB, 35)

    def interrupt(progress: Progress) -> None:
        if progress.batches == 2:
            raise KeyboardInterrupt

    with new_site(DB), pytest.raises(KeyboardInterrupt):
        import_all(migration.source_for(DB), batch_size=10, on_batch=interrupt)
    # Two batches done; the third was in Redis already (it is written while
    # the one before leaves the old store), but still in the old store.
    assert Session.objects.count() == 15
    assert len(r.keys(f"{NS}:sessions:{{*}}")) == 30
    assert summary(run_import(DB, "--batch-size", "10")).startswith("5 imported, 10 already")
    assert Session.objects.count() == 0
    assert {k.decode() for k in r.keys(f"{NS}:sessions:{{*}}")} == {
        keys.session_hash(NS, k) for k in made
    }


def test_an_import_killed_before_the_old_store_was_cleaned_resumes(r: Any) -> None:
    make_old_sessions(DB, 10)

    class DiesOnRemove(migration.DbSource):
        def remove(self, session_keys: Any) -> None:
            raise KeyboardInterrupt

    with new_site(DB), pytest.raises(KeyboardInterrupt):
        import_all(DiesOnRemove(DB, DbStore), batch_size=4)
    # Killed removing the first batch, with the second one written too.
    assert Session.objects.count() == 10
    assert len(r.keys(f"{NS}:sessions:{{*}}")) == 8
    assert summary(run_import(DB, "--batch-size", "4")).startswith("2 imported, 8 already")
    assert Session.objects.count() == 0
    assert len(r.keys(f"{NS}:sessions:{{*}}")) == 10


def fill_table(count: int) -> list[str]:
    """``count`` signed-in sessions in the db engine's table, as the db
    engine encodes them, in one query."""
    rows = [
        Session(
            session_key=new_session_key(),
            session_data=DbStore().encode({"_auth_user_id": str(i % 5), "cart": CART, "n": i}),
            expire_date=timezone.now() + timedelta(hours=1),
        )
        for i in range(count)
    ]
    Session.objects.bulk_create(rows)
    return [row.session_key for row in rows]


def session_hashes(r: Any) -> set[str]:
    return {k.decode() for k in r.keys(f"{NS}:sessions:{{*}}")}


def test_a_parallel_import_imports_each_session_once(r: Any) -> None:
    made = fill_table(200)
    *lines, last = run_import(DB, "--batch-size", "7", "--processes", "3").strip().splitlines()
    assert summary(last) == (
        "200 imported, 0 already in Redis, 0 expired, 0 undecodable, "
        "0 with keys session_ng does not accept (skipped)"
    )
    assert last.endswith(" sessions/s, 3 processes).")
    # 29 batches, one progress line each, in order.
    assert len(lines) == 29
    assert lines[0].startswith("batch 1: 7 read of 200, ")
    assert lines[-1].startswith("batch 29: 200 read of 200, 200 imported, ")
    assert session_hashes(r) == {keys.session_hash(NS, k) for k in made}
    assert len(r.keys(f"{NS}:sessions:{{*}}:imported")) == 200
    assert Session.objects.count() == 0
    for i, key in enumerate(made):
        assert r.hget(keys.session_hash(NS, key), ".n") == str(i).encode()
    # Each user's index holds exactly its 40 sessions.
    for user in range(5):
        assert set(r.hkeys(keys.user_index(NS, str(user)))) == {
            k.encode() for i, k in enumerate(made) if i % 5 == user
        }
    assert summary(run_import(DB, "--processes", "3")) == (
        "0 imported, 0 already in Redis, 0 expired, 0 undecodable, "
        "0 with keys session_ng does not accept (skipped)"
    )


def test_an_interrupted_parallel_import_resumes(r: Any) -> None:
    made = fill_table(35)

    def interrupt(progress: Progress) -> None:
        if progress.batches == 2:
            raise KeyboardInterrupt

    with new_site(DB), pytest.raises(KeyboardInterrupt):
        import_all(migration.source_for(DB), batch_size=5, on_batch=interrupt, processes=2)
    # Two batches left the old store. Those handed to a worker after them
    # were saved in Redis, or dropped if no worker had started them yet:
    # either way each session is in Redis, in the old store, or both.
    left = set(Session.objects.values_list("session_key", flat=True))
    assert len(left) == 25
    in_redis = session_hashes(r)
    saved = {k for k in made if keys.session_hash(NS, k) in in_redis}
    assert len(in_redis) == len(saved)
    assert set(made) - left <= saved
    assert left | saved == set(made)
    assert summary(run_import(DB, "--batch-size", "5", "--processes", "2")) == (
        f"{35 - len(saved)} imported, {len(saved) - 10} already in Redis, 0 expired, "
        "0 undecodable, 0 with keys session_ng does not accept (skipped)"
    )
    assert Session.objects.count() == 0
    assert session_hashes(r) == {keys.session_hash(NS, k) for k in made}


def test_a_parallel_import_killed_before_the_old_store_was_cleaned_resumes(r: Any) -> None:
    made = fill_table(10)

    class DiesOnRemove(migration.DbSource):
        def remove(self, session_keys: Any) -> None:
            raise KeyboardInterrupt

    with new_site(DB), pytest.raises(KeyboardInterrupt):
        import_all(DiesOnRemove(DB, DbStore), batch_size=4, processes=2)
    # Killed removing the first batch, which Redis has.
    assert Session.objects.count() == 10
    saved = {k for k in made if keys.session_hash(NS, k) in session_hashes(r)}
    assert len(saved) >= 4
    assert summary(run_import(DB, "--batch-size", "4", "--processes", "2")) == (
        f"{10 - len(saved)} imported, {len(saved)} already in Redis, 0 expired, "
        "0 undecodable, 0 with keys session_ng does not accept (skipped)"
    )
    assert Session.objects.count() == 0
    assert session_hashes(r) == {keys.session_hash(NS, k) for k in made}


def test_a_failing_worker_stops_the_import_and_the_old_store_keeps_its_batch(r: Any) -> None:
    made = fill_table(12)

    class FailsOnTheSecondBatch(migration.DbSource):
        def decode_batch(self, raw: Any) -> migration.Batch:
            if raw[0][0] == sorted(made)[4]:
                raise RuntimeError("no decoding this batch")
            return super().decode_batch(raw)

    with new_site(DB), pytest.raises(RuntimeError, match="no decoding this batch"):
        import_all(FailsOnTheSecondBatch(DB, DbStore), batch_size=4, processes=2)
    # The first batch was imported and removed; the second never reached
    # Redis; the third may have (a re-run finds it there).
    first, second, third = sorted(made)[:4], sorted(made)[4:8], sorted(made)[8:]
    assert set(Session.objects.values_list("session_key", flat=True)) == {*second, *third}
    in_redis = session_hashes(r)
    assert {keys.session_hash(NS, k) for k in first} <= in_redis
    assert not {keys.session_hash(NS, k) for k in second} & in_redis
    assert summary(run_import(DB, "--processes", "2")).startswith(
        f"{12 - len(in_redis)} imported, {len(in_redis) - 4} already in Redis, 0 expired"
    )
    assert session_hashes(r) == {keys.session_hash(NS, k) for k in made}


def test_the_default_number_of_processes() -> None:
    assert importer.default_processes() == min(len(os.sched_getaffinity(0)), 4)
    make_old_sessions(DB, 1)
    expected = importer.default_processes()
    assert (
        run_import(DB, "--dry-run")
        .strip()
        .endswith(f" sessions/s, {expected} process{'' if expected == 1 else 'es'}).")
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@PROCESSES
def test_progress_is_a_bar_on_a_terminal_and_a_line_per_batch_otherwise(processes: str) -> None:
    make_old_sessions(DB, 5)
    out = Terminal()
    with new_site(DB):
        call_command(
            "session_ng_import",
            f"--from={DB}",
            "--batch-size=2",
            f"--processes={processes}",
            "--dry-run",
            stdout=out,
        )
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 3
    assert frames[0].startswith("[############                  ]  40% 2/5 ")
    assert "/s ETA 0:00:0" in frames[0]
    assert frames[2].startswith(f"[{'#' * 30}] 100% 5/5 ")
    lines = run_import(DB, "--batch-size", "2", "--dry-run", "--processes", processes).splitlines()
    assert [line.split(" imported")[0] for line in lines[:3]] == [
        "batch 1: 2 read of 5, 2",
        "batch 2: 4 read of 5, 4",
        "batch 3: 5 read of 5, 5",
    ]


def test_the_import_verifies_signatures_as_django_does() -> None:
    """The import's signer computes Django's signatures (with the secret and
    each fallback) and accepts exactly what Django's engine accepts."""
    salt = DbStore().key_salt
    ours = migration.SessionSigner(salt=salt)
    django_signer = signing.TimestampSigner(salt=salt)
    for value in ["", "a", "é:ü", "x" * 500, b"bytes:too"]:
        for key in [None, "other-secret", b"bytes-secret"]:
            assert ours.signature(value, key) == django_signer.signature(value, key)
    data = {"cart": CART}
    assert ours.unsign_object(DbStore().encode(data)) == data
    forged = signing.dumps(data, key="not-the-secret", salt=salt)
    with pytest.raises(signing.BadSignature):
        ours.unsign_object(forged)
    with pytest.raises(signing.BadSignature):
        django_signer.unsign_object(forged)


def test_bulk_import_reads_sessions_signed_with_a_fallback_key(r: Any) -> None:
    with override_settings(SECRET_KEY="the-secret-before-rotation"):
        made = make_old_sessions(DB, 3)
    with override_settings(SECRET_KEY="the-secret-now"):
        # Django's own engine reads them as empty sessions: so does the import.
        assert DbStore(made[0]).load() == {}
        assert summary(run_import(DB)) == (
            "0 imported, 0 already in Redis, 0 expired, 3 undecodable, "
            "0 with keys session_ng does not accept (skipped)"
        )
    with override_settings(
        SECRET_KEY="the-secret-now", SECRET_KEY_FALLBACKS=["the-secret-before-rotation"]
    ):
        assert DbStore(made[0]).load()["cart"] == CART
        assert summary(run_import(DB)) == (
            "3 imported, 0 already in Redis, 0 expired, 0 undecodable, "
            "0 with keys session_ng does not accept (skipped)"
        )
    assert Session.objects.count() == 0
    for i, key in enumerate(made):
        assert r.hget(keys.session_hash(NS, key), ".n") == str(i).encode()


@pytest.mark.parametrize(
    ("serializer", "cart"),
    [
        (None, b'["tea","cups",{"saucers":2}]'),
        ("tests.serializers.UpperJSONSerializer", b'["TEA", "CUPS", {"SAUCERS": 2}]'),
    ],
)
def test_bulk_import_stores_what_the_serializer_makes(
    serializer: str | None, cart: bytes, r: Any
) -> None:
    chosen = override_settings(SESSION_SERIALIZER=serializer) if serializer else override_settings()
    with chosen:
        [key] = make_old_sessions(DB, 1)
        Session.objects.filter(session_key=key).update(
            session_data=DbStore().encode({"cart": CART, "name": "zoë", "n": 0})
        )
        assert summary(run_import(DB)).startswith("1 imported, 0 already")
        fields = r.hgetall(keys.session_hash(NS, key))
        assert fields[b".cart"] == cart
        assert fields[b".name"] == (b'"ZO\\U00EB"' if serializer else b'"zo\\u00eb"')
        assert fields[b".n"] == b"0"
        # And session_ng reads it back as it was.
        with new_site(DB):
            store = SessionStore(key)
            assert (store["cart"], store["name"], store["n"]) == (CART, "zoë", 0)


def test_import_refuses_what_it_cannot_import() -> None:
    with pytest.raises(CommandError, match="signed_cookies keeps its sessions"):
        run_import(SIGNED)
    with pytest.raises(CommandError, match="cannot list its keys"):
        run_import(CACHE)  # the test settings' cache is locmem
    with pytest.raises(CommandError, match="session_ng's own engine"):
        run_import("session_ng.backends.redis")
    with pytest.raises(CommandError, match="--batch-size must be 1 or more"):
        run_import(DB, "--batch-size", "0")
    with pytest.raises(CommandError, match="--processes must be 1 or more"):
        run_import(DB, "--processes", "0")


# --- the system check -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("session_ng.backends.redis", "session_ng's own engine"),
        ("no.such.engine", "cannot be imported"),
        ("django.contrib.sessions.models", "has no SessionStore"),
        ("django.contrib.sessions.backends.base", "has no SessionStore"),
        ("tests.serializers", "has no SessionStore"),
        # This module: its SessionStore is session_ng's, under another name.
        ("tests.test_migration", "not an engine session_ng can migrate from"),
        (42, "must be an engine module's dotted path"),
        ("", "must be an engine module's dotted path"),
    ],
)
def test_check_refuses_a_bad_migrate_from(value: Any, message: str) -> None:
    with override_settings(SESSION_NG={**settings.SESSION_NG, "MIGRATE_FROM": value}):
        [error] = check_migration()
    assert error.id == "session_ng.E017"
    assert message in error.msg


@pytest.mark.parametrize("engine", [DB, CACHED_DB, CACHE, FILE, SIGNED, REDIS_SESSIONS, None])
@pytest.mark.usefixtures("redis_sessions_store")
def test_check_accepts_the_supported_engines(engine: str | None) -> None:
    with override_settings(SESSION_NG={**settings.SESSION_NG, "MIGRATE_FROM": engine}):
        assert check_migration() == []

"""The session engine a site switches away from: ``SESSION_NG["MIGRATE_FROM"]``.

Reads sessions out of Django's ``db``, ``cached_db``, ``cache``, ``file`` and
``signed_cookies`` engines and django-redis-sessions (one session, for the
lazy migration in the engine's load; or all of them, batch by batch, for
``manage.py session_ng_import``) and removes them once they are in Redis.
Nothing here writes to Redis: the engine does (see ``SessionStore.import_plan``).

Every key read from an old store is checked with ``keys.is_valid_session_key``
before it goes anywhere: one session_ng cannot accept is skipped, so it never
becomes part of a Redis key name.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.core import signing
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.encoding import force_bytes

from session_ng.conf import conf
from session_ng.keys import is_valid_session_key

EXPIRY_KEY = "_session_expiry"
OUR_ENGINE = "session_ng.backends.redis"
DB = "django.contrib.sessions.backends.db"
CACHED_DB = "django.contrib.sessions.backends.cached_db"
CACHE = "django.contrib.sessions.backends.cache"
FILE = "django.contrib.sessions.backends.file"
SIGNED_COOKIES = "django.contrib.sessions.backends.signed_cookies"
REDIS_SESSIONS = "redis_sessions.session"
SUPPORTED = (DB, CACHED_DB, CACHE, FILE, SIGNED_COOKIES, REDIS_SESSIONS)
# What the key of a session imported from a signed cookie is derived from.
SIGNED_COOKIE_SALT = "session_ng.migration.signed_cookies"


@dataclass(frozen=True)
class Found:
    """A live session of the old store: what it holds and how long it has left."""

    session_key: str
    data: dict[str, Any]
    remaining_ms: int


@dataclass
class Batch:
    """One batch of an old store's sessions, as a bulk import reads them."""

    found: list[Found] = field(default_factory=list)
    expired: int = 0
    undecodable: int = 0
    # Keys session_ng cannot accept (never sent to Redis).
    bad_keys: int = 0


class UnsupportedEngine(Exception):
    pass


class SessionSigner(signing.TimestampSigner):
    """Django's ``TimestampSigner``, which verifies a session's signature
    exactly as Django's engines do (the same salt, ``SECRET_KEY`` then each of
    ``SECRET_KEY_FALLBACKS``, the same comparison), with one cost taken out:
    Django derives the HMAC key from the salt and the secret, and keys an HMAC
    with it, for every value; here that is done once per secret, and each
    value's HMAC starts from a copy (the same digest)."""

    def __init__(self, *, salt: str) -> None:
        super().__init__(salt=salt)
        self._key_salt = force_bytes(salt + "signer")
        self._macs: dict[str | bytes, hmac.HMAC] = {}

    def signature(self, value: str | bytes, key: str | bytes | None = None) -> str:
        key = key or self.key
        keyed = self._macs.get(key)
        if keyed is None:
            # What django.utils.crypto.salted_hmac does with each value.
            hasher = getattr(hashlib, self.algorithm)
            derived = hasher(self._key_salt + force_bytes(key)).digest()
            keyed = self._macs[key] = hmac.new(derived, digestmod=hasher)
        mac = keyed.copy()
        mac.update(force_bytes(value))
        return signing.b64_encode(mac.digest()).decode()


def _now() -> datetime:
    return datetime.now(tz=timezone.get_fixed_timezone(0))


def _aware(moment: datetime) -> datetime:
    if timezone.is_naive(moment):
        return timezone.make_aware(moment, timezone.get_default_timezone())
    return moment


def _remaining_ms(end: datetime, now: datetime) -> int:
    return int((_aware(end) - now).total_seconds() * 1000)


class Source:
    """One old engine; subclasses know where it keeps its sessions."""

    def __init__(self, engine: str, store_class: type[SessionBase]) -> None:
        self.engine = engine
        self.store_class = store_class
        self.store = store_class()
        self.cookie_age = int(settings.SESSION_COOKIE_AGE)
        # What signing.loads() makes for every call, made once: a bulk
        # import verifies thousands of sessions a second.
        self.signer = SessionSigner(salt=self.store.key_salt)

    # --- one session (the lazy migration) -------------------------------------

    def find(self, session_key: str, cookie: str | None = None) -> Found | None:
        """The live session ``session_key``, or None (unknown, expired, unreadable)."""
        raise NotImplementedError

    def forget(self, session_key: str) -> None:
        """Remove it from the old store (it is in Redis now)."""
        self.store_class().delete(session_key)

    # --- all of them (session_ng_import) --------------------------------------

    bulk = True

    def estimate(self) -> int | None:
        """How many sessions a bulk import will read, if that is cheap to know."""
        return None

    def batches(self, size: int) -> Iterator[Batch]:
        raise NotImplementedError

    def raw_batches(self, size: int) -> Iterator[Any]:
        """``batches`` split in two for an import that runs several processes:
        this reads (in the importing process), ``decode_batch`` does the rest
        (in a worker, to which what this yields is pickled). By default the
        batches are read and decoded here, and workers get them whole."""
        return self.batches(size)

    def decode_batch(self, raw: Any) -> Batch:
        """The ``Batch`` of one of ``raw_batches``'s batches."""
        assert isinstance(raw, Batch)
        return raw

    def remove(self, session_keys: Sequence[str]) -> None:
        for key in session_keys:
            self.forget(key)

    # --- shared ---------------------------------------------------------------

    def decode(self, encoded: str | bytes) -> dict[str, Any] | None:
        """What Django's own ``decode`` reads, but None (instead of an empty
        session) when the signature or the data is bad."""
        try:
            if isinstance(encoded, bytes):
                encoded = encoded.decode()
            data = self.signer.unsign_object(encoded, serializer=self.store.serializer)
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    def end(self, data: dict[str, Any], modified: datetime) -> datetime:
        """When a session last saved at ``modified`` ends, by Django's rule."""
        try:
            end = self.store.get_expiry_date(modification=modified, expiry=data.get(EXPIRY_KEY))
            return _aware(end)
        except (TypeError, ValueError, OverflowError):
            return modified + timedelta(seconds=self.cookie_age)


class DbSource(Source):
    """``db`` and ``cached_db`` (whose table holds every session too)."""

    def __init__(self, engine: str, store_class: type[SessionBase]) -> None:
        super().__init__(engine, store_class)
        self.model = store_class.get_model_class()  # type: ignore[attr-defined]
        self.cache = None
        if engine == CACHED_DB:
            from django.core.cache import caches

            self.cache = caches[settings.SESSION_CACHE_ALIAS]

    def find(self, session_key: str, cookie: str | None = None) -> Found | None:
        now = _now()
        row = (
            self.model.objects.filter(session_key=session_key, expire_date__gt=now)
            .values_list("session_data", "expire_date")
            .first()
        )
        if row is None:
            return None
        data = self.decode(row[0])
        if data is None:
            return None
        return Found(session_key, data, _remaining_ms(row[1], now))

    def estimate(self) -> int | None:
        return int(self.model.objects.count())

    def batches(self, size: int) -> Iterator[Batch]:
        for rows in self.raw_batches(size):
            yield self.decode_batch(rows)

    def raw_batches(self, size: int) -> Iterator[Any]:
        """Lists of rows: (session key, session data, expire date)."""
        # Keyset pagination: rows imported (and deleted) meanwhile do not
        # shift the pages, and a resumed import starts where rows are left.
        after = ""
        while True:
            rows = list(
                self.model.objects.filter(session_key__gt=after)
                .order_by("session_key")
                .values_list("session_key", "session_data", "expire_date")[:size]
            )
            if not rows:
                return
            after = rows[-1][0]
            yield rows

    def decode_batch(self, raw: Any) -> Batch:
        now = _now()
        batch = Batch()
        for key, encoded, expire_date in raw:
            if not is_valid_session_key(key):
                batch.bad_keys += 1
                continue
            remaining = _remaining_ms(expire_date, now)
            if remaining <= 0:
                batch.expired += 1
                continue
            data = self.decode(encoded)
            if data is None:
                batch.undecodable += 1
                continue
            batch.found.append(Found(key, data, remaining))
        return batch

    def remove(self, session_keys: Sequence[str]) -> None:
        if not session_keys:
            return
        self.model.objects.filter(session_key__in=list(session_keys)).delete()
        if self.cache is not None:
            prefix = self.store_class.cache_key_prefix  # type: ignore[attr-defined]
            self.cache.delete_many([prefix + key for key in session_keys])


class CacheSource(Source):
    """``cache``: any cache for the lazy migration; django-redis for a bulk
    import, which SCANs the cache's keys."""

    def __init__(self, engine: str, store_class: type[SessionBase]) -> None:
        super().__init__(engine, store_class)
        from django.core.cache import caches

        self.cache = caches[settings.SESSION_CACHE_ALIAS]
        self.prefix: str = store_class.cache_key_prefix  # type: ignore[attr-defined]
        self.bulk = hasattr(self.cache, "iter_keys")

    def _found(self, key: str, data: Any, ttl: Any, now: datetime) -> Found | None:
        if not isinstance(data, dict):
            return None
        if isinstance(ttl, int) and ttl > 0:
            return Found(key, data, ttl * 1000)
        # A cache that cannot tell (locmem): the life a save would give it now.
        return Found(key, data, _remaining_ms(self.end(data, now), now))

    def find(self, session_key: str, cookie: str | None = None) -> Found | None:
        name = self.prefix + session_key
        data = self.cache.get(name)
        ttl = self.cache.ttl(name) if self.bulk and data is not None else None  # type: ignore[attr-defined]
        return self._found(session_key, data, ttl, _now())

    def batches(self, size: int) -> Iterator[Batch]:
        if not self.bulk:
            raise UnsupportedEngine(
                f"The cache {settings.SESSION_CACHE_ALIAS!r} cannot list its keys: a bulk "
                "import of the cache engine needs django-redis (the lazy migration works "
                "with any cache)."
            )
        names: list[str] = []
        for name in self.cache.iter_keys(self.prefix + "*", itersize=size):  # type: ignore[attr-defined]
            names.append(name)
            if len(names) >= size:
                yield self._batch(names)
                names = []
        if names:
            yield self._batch(names)

    def _batch(self, names: list[str]) -> Batch:
        batch = Batch()
        keyed = []
        for name in names:
            key = name[len(self.prefix) :]
            if is_valid_session_key(key):
                keyed.append((key, name))
            else:
                batch.bad_keys += 1
        if not keyed:
            return batch
        client = self.cache.client.get_client(write=False)  # type: ignore[attr-defined]
        pipe = client.pipeline(transaction=False)
        for _, name in keyed:
            pipe.pttl(self.cache.client.make_key(name))  # type: ignore[attr-defined]
        ttls = pipe.execute()
        values = self.cache.get_many([name for _, name in keyed])
        now = _now()
        for (key, name), pttl in zip(keyed, ttls, strict=True):
            if name not in values or pttl == -2:
                batch.expired += 1  # gone since the SCAN saw it
                continue
            found = self._found(key, values[name], -(-pttl // 1000) if pttl > 0 else None, now)
            if found is None:
                batch.undecodable += 1
            else:
                batch.found.append(found)
        return batch

    def remove(self, session_keys: Sequence[str]) -> None:
        if session_keys:
            self.cache.delete_many([self.prefix + key for key in session_keys])


class FileSource(Source):
    """``file``: one file per session, named the cookie name plus the key."""

    def __init__(self, engine: str, store_class: type[SessionBase]) -> None:
        super().__init__(engine, store_class)
        self.directory = getattr(settings, "SESSION_FILE_PATH", None) or tempfile.gettempdir()
        self.prefix = settings.SESSION_COOKIE_NAME

    def _names(self) -> list[str]:
        with os.scandir(self.directory) as entries:
            return sorted(e.name for e in entries if e.name.startswith(self.prefix) and e.is_file())

    def estimate(self) -> int | None:
        return len(self._names())

    def _read(self, session_key: str, now: datetime) -> Found | str:
        """The session, or why not: "expired", "undecodable" or "gone"."""
        path = os.path.join(self.directory, self.prefix + session_key)
        try:
            with open(path, encoding="ascii") as file:
                encoded = file.read()
                modified = datetime.fromtimestamp(
                    os.fstat(file.fileno()).st_mtime, tz=timezone.get_fixed_timezone(0)
                )
        except FileNotFoundError:
            return "gone"
        except (OSError, UnicodeDecodeError):
            return "undecodable"
        data = self.decode(encoded)
        if data is None:
            return "undecodable"
        remaining = _remaining_ms(self.end(data, modified), now)
        if remaining <= 0:
            return "expired"
        return Found(session_key, data, remaining)

    def find(self, session_key: str, cookie: str | None = None) -> Found | None:
        found = self._read(session_key, _now())
        return found if isinstance(found, Found) else None

    def batches(self, size: int) -> Iterator[Batch]:
        batch = Batch()
        for name in self._names():
            key = name[len(self.prefix) :]
            if not is_valid_session_key(key):
                # Django's own temporary files (cookie name + "_out_...") too.
                batch.bad_keys += 1
                continue
            found = self._read(key, _now())
            if isinstance(found, Found):
                batch.found.append(found)
            elif found == "expired":
                batch.expired += 1
            elif found == "undecodable":
                batch.undecodable += 1
            if len(batch.found) >= size:
                yield batch
                batch = Batch()
        yield batch


class RedisSessionsSource(Source):
    """django-redis-sessions: one string per session under its prefix."""

    def __init__(self, engine: str, store_class: type[SessionBase]) -> None:
        super().__init__(engine, store_class)
        self.server = self.store.server  # type: ignore[attr-defined]

    def _name(self, session_key: str) -> str:
        name: str = self.store.get_real_stored_key(session_key)  # type: ignore[attr-defined]
        return name

    def _founds(self, session_keys: list[str], batch: Batch) -> None:
        pipe = self.server.pipeline(transaction=False)
        for key in session_keys:
            pipe.get(self._name(key))
            pipe.pttl(self._name(key))
        replies = pipe.execute(raise_on_error=False)
        for i, key in enumerate(session_keys):
            value, pttl = replies[2 * i], replies[2 * i + 1]
            if value is None or not isinstance(pttl, int) or pttl == -2:
                batch.expired += 1
                continue
            data = None if isinstance(value, Exception) else self.decode(value)
            if data is None:
                batch.undecodable += 1
                continue
            if pttl < 0:  # stored without a TTL: the life a save would give it
                now = _now()
                pttl = _remaining_ms(self.end(data, now), now)
            batch.found.append(Found(key, data, pttl))

    def find(self, session_key: str, cookie: str | None = None) -> Found | None:
        batch = Batch()
        self._founds([session_key], batch)
        return batch.found[0] if batch.found else None

    def batches(self, size: int) -> Iterator[Batch]:
        from redis_sessions import settings as redis_sessions_settings

        prefix = redis_sessions_settings.SESSION_REDIS_PREFIX
        start = f"{prefix}:" if prefix else ""
        keys: list[str] = []
        batch = Batch()
        for raw in self.server.scan_iter(match=start + "*", count=size):
            key = raw.decode(errors="replace")[len(start) :]
            if is_valid_session_key(key):
                keys.append(key)
            else:
                batch.bad_keys += 1
            if len(keys) >= size:
                self._founds(keys, batch)
                yield batch
                keys, batch = [], Batch()
        if keys:
            self._founds(keys, batch)
        yield batch

    def remove(self, session_keys: Sequence[str]) -> None:
        if session_keys:
            self.server.delete(*[self._name(key) for key in session_keys])


class SignedCookieSource(Source):
    """``signed_cookies``: the cookie is the session. It is imported under a
    key derived from the cookie, so that concurrent first requests with it
    import it once, under one key."""

    bulk = False

    def find(self, session_key: str, cookie: str | None = None) -> Found | None:
        if cookie is None or signed_cookie_key(cookie) != session_key:
            return None
        # Django's own load verifies it (signature and age) as Django does.
        data = self.store_class(cookie).load()
        if not data:
            return None
        try:
            signed_at = signing.b62_decode(cookie.rsplit(":", 2)[1])
        except (IndexError, ValueError):
            return None
        now = _now()
        end = datetime.fromtimestamp(signed_at, tz=now.tzinfo) + timedelta(seconds=self.cookie_age)
        remaining = _remaining_ms(end, now)
        return Found(session_key, data, remaining) if remaining > 0 else None

    def forget(self, session_key: str) -> None:
        pass  # the browser holds it; the response replaces the cookie

    def batches(self, size: int) -> Iterator[Batch]:
        raise UnsupportedEngine(
            "signed_cookies keeps its sessions in the browsers' cookies: they are migrated "
            "lazily (MIGRATE_FROM), as each browser comes back; there is nothing to import."
        )


def source_for(engine: str) -> Source:
    """The Source of the engine module ``engine``; raises UnsupportedEngine."""
    if engine == OUR_ENGINE:
        raise UnsupportedEngine("MIGRATE_FROM names session_ng's own engine.")
    try:
        module = import_module(engine)
    except ImportError as exc:
        raise UnsupportedEngine(f"{engine!r} cannot be imported: {exc}") from exc
    store_class = getattr(module, "SessionStore", None)
    if not (isinstance(store_class, type) and issubclass(store_class, SessionBase)):
        raise UnsupportedEngine(f"{engine!r} has no SessionStore: it is no session engine.")
    kinds: list[tuple[str, type[Source]]] = [
        (SIGNED_COOKIES, SignedCookieSource),
        (CACHED_DB, DbSource),
        (DB, DbSource),
        (CACHE, CacheSource),
        (FILE, FileSource),
    ]
    for base_engine, source_class in kinds:
        base = import_module(base_engine).SessionStore
        if issubclass(store_class, base):
            return source_class(base_engine, store_class)
    if engine == REDIS_SESSIONS:
        return RedisSessionsSource(engine, store_class)
    raise UnsupportedEngine(
        f"{engine!r} is not an engine session_ng can migrate from "
        f"(supported: {', '.join(SUPPORTED)} and their subclasses)."
    )


def problem() -> str | None:
    """What is wrong with ``MIGRATE_FROM``, or None."""
    engine = conf.raw("MIGRATE_FROM")  # as given: the check validates it
    if engine is None:
        return None
    if not isinstance(engine, str) or not engine:
        return f"SESSION_NG['MIGRATE_FROM'] must be an engine module's dotted path, not {engine!r}."
    try:
        source_for(engine)
    except UnsupportedEngine as exc:
        return f"SESSION_NG['MIGRATE_FROM']: {exc}"
    except Exception as exc:  # the engine's own set-up failed (a missing cache ...)
        return f"SESSION_NG['MIGRATE_FROM']: {engine!r} cannot be used: {exc}"
    return None


# (SESSION_NG, CACHES, the Source made for them): settings are replaced, not
# mutated, so a new object (override_settings) means a new Source.
_current: tuple[object, object, Source] | None = None


def current() -> Source | None:
    """The Source ``MIGRATE_FROM`` names, or None when there is none."""
    global _current
    engine = conf.snapshot().migrate_from
    if not engine:
        return None
    raw, caches = getattr(settings, "SESSION_NG", None), getattr(settings, "CACHES", None)
    cached = _current
    if cached is not None and cached[0] is raw and cached[1] is caches:
        return cached[2]
    source = source_for(str(engine))
    _current = (raw, caches, source)
    return source


def signed_cookie_key(cookie: str) -> str | None:
    """The session key a ``signed_cookies`` cookie is imported under, when
    ``MIGRATE_FROM`` names that engine (None otherwise, or for no such cookie).

    Derived from the cookie with the SECRET_KEY: the same cookie always gives
    the same key, unguessable without both.
    """
    if conf.snapshot().migrate_from != SIGNED_COOKIES or cookie.count(":") < 2:
        return None
    return salted_hmac(SIGNED_COOKIE_SALT, cookie, algorithm="sha256").hexdigest()[:32]

"""``SESSION_ENGINE = "session_ng.backends.redis"``.

Django's ``SessionBase`` contract on top of ``session_ng.store``: one
round trip to load (and slide the idle timer), at most one to save (only the
attributes whose serialized value changed), none when nothing changed.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import (
    VALID_KEY_CHARS,
    CreateError,
    SessionBase,
    UpdateError,
)
from django.core import signing
from django.utils import timezone

from session_ng import migration
from session_ng.attributes import (
    UNDECODED,
    USER_KEY,
    LazyAttributes,
    decode_all,
    decode_value,
    raw_items,
)
from session_ng.conf import conf
from session_ng.events import asweep_and_report, sweep_and_report
from session_ng.exceptions import SessionStoreUnavailable, TooManySessions
from session_ng.keys import is_valid_session_key
from session_ng.signals import session_created, session_deleted, session_rotated
from session_ng.store import driver, records
from session_ng.store import sessions as store_sessions
from session_ng.store.records import Corrupt, Record, SavePlan, now_ms

R = TypeVar("R")
logger = logging.getLogger("session_ng")
security_logger = logging.getLogger("django.security.SuspiciousSession")

# Where Django keeps a custom expiry and the logged-in user inside the session.
EXPIRY_KEY = "_session_expiry"

# A negative ``set_expiry()`` value makes a session that never expires on the
# server. Browsers cap a cookie's life at 400 days, so that is what the cookie
# is given (and renewed with) instead of a negative age that would delete it.
NEVER_EXPIRES_COOKIE_AGE = 400 * 24 * 3600
# The longest idle timeout kept as given (about 31 years): longer ones are
# this. Redis scripts get it in milliseconds, which Lua must still print as
# an integer, and a cookie's expiry date must stay a real date.
MAX_INACTIVE_SECONDS = 10**9


def normal_expiry(expiry: Any, aware: bool | None = None) -> Any:
    """A ``_session_expiry`` value as Django's expiry code can use it.

    What ``set_expiry()`` stores is an int or float of seconds (negative:
    never expires) or an ISO datetime string; anything else, as found in a
    corrupted hash (a bool, a list, a string that is no date, an infinite
    number), is None: the session's default expiry. Ages are capped at
    MAX_INACTIVE_SECONDS. A datetime is made aware (a naive one is read in the
    default time zone) when ``aware`` is true, naive otherwise; by default it
    is as ``timezone.now()`` is, so that the two can be subtracted.
    """
    if isinstance(expiry, bool):
        return None
    if isinstance(expiry, int | float):
        if not math.isfinite(expiry):
            return None
        return min(expiry, MAX_INACTIVE_SECONDS)
    if isinstance(expiry, str):
        try:
            expiry = datetime.fromisoformat(expiry)
        except ValueError:
            return None
    if isinstance(expiry, datetime):
        if aware is None:
            aware = bool(settings.USE_TZ)
        if aware and timezone.is_naive(expiry):
            return timezone.make_aware(expiry, timezone.get_default_timezone())
        if not aware and timezone.is_aware(expiry):
            return timezone.make_naive(expiry, timezone.get_default_timezone())
        return expiry
    return None


# os.urandom bytes below 252 (= 7 * 36) map uniformly onto the 36 characters
# Django uses for keys; the rest are discarded (rejection sampling, no bias).
_KEY_TABLE = bytes(VALID_KEY_CHARS.encode()[i % 36] for i in range(256))
_KEY_REJECT = bytes(range(252, 256))
KEY_LENGTH = 32


def new_session_key() -> str:
    """32 characters of [a-z0-9] from the OS's CSPRNG (~165 bits)."""
    key = b""
    while len(key) < KEY_LENGTH:
        key += os.urandom(KEY_LENGTH + 8).translate(_KEY_TABLE, _KEY_REJECT)
    return key[:KEY_LENGTH].decode()


# Values whose serialized form cannot change while the object stays the same.
IMMUTABLE_TYPES = frozenset({str, int, float, bool, type(None), bytes})
_MISSING = object()


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


# json.dumps() given any option builds a new JSONEncoder for each call, and
# Django's JSONSerializer (the default SESSION_SERIALIZER) gives separators.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def _compact_json_dumps(value: Any) -> bytes:
    # What signing.JSONSerializer().dumps(value) returns, byte for byte.
    return _compact_json(value).encode("latin-1")


def _dumps_of(serializer_class: Any) -> Callable[[Any], bytes]:
    """``serializer_class().dumps``, as bytes: one serializer for many values."""
    if serializer_class is signing.JSONSerializer:
        return _compact_json_dumps
    dumps = serializer_class().dumps
    return lambda value: _as_bytes(dumps(value))


class NewSessionCheck(Protocol):
    """Who must allow a new session under a new alias (session_ng's
    ``SessionManager``): each method returns, or raises ``TooManySessions``."""

    def check_new_alias(self) -> None: ...

    async def acheck_new_alias(self) -> None: ...


class SessionStore(SessionBase):
    if TYPE_CHECKING:  # SessionBase's lazy-loading members, absent from django-stubs
        _session: dict[str, Any]
        _session_cache: dict[str, Any]

        def _get_session(self, no_load: bool = False) -> dict[str, Any]: ...
        async def _aget_session(self, no_load: bool = False) -> dict[str, Any]: ...

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        # What Redis held for this key at load or after our last save: the
        # baseline that the per-attribute delta is computed against.
        self._record: Record | None = None
        # The decoded values as loaded (or last saved): an attribute that is
        # still the very same immutable object need not be serialized again.
        self._loaded_values: dict[str, Any] = {}
        # Set when Redis could not be reached, or a new session was refused,
        # wherever the error then went (see failure).
        self._unavailable: SessionStoreUnavailable | None = None
        self._refused: TooManySessions | None = None
        # Keys of this browser's other sessions (other aliases), from
        # bind_request(): checked in the same round trip as the load, so the
        # cookie can drop dead ones. None until a load has checked them.
        self._companions: list[str] = []
        self._companions_alive: set[str] | None = None
        # None: slide the idle timer on load as REFRESH_ON_ACCESS says; False
        # for code that only looks (see inspect()).
        self._renew: bool | None = None
        # From bind_request() when this request's alias is new: it says
        # whether another session may be created, or raises TooManySessions
        # (and is asked before anything is written).
        self._new_session_check: NewSessionCheck | None = None
        # Names of mutable attribute values handed to the caller ([], get(),
        # setdefault()); True once items() or values() handed out them all.
        # Only those can have been changed in place, so only those are
        # serialized again at save to find out (see _plan).
        self._exposed: set[str] = set()
        self._exposed_all = False
        self._dumped_mutable: set[str] = set()
        # Set by renew_cookie() when the response sends the cookie: the next
        # save records it (hash field "r"), the baseline of its renewal rule.
        self._cookie_renewed_at: int | None = None
        # A cookie of Django's signed_cookies engine that this store's key
        # was derived from (see adopt_signed_cookie).
        self.migration_cookie: str | None = None

    # --- what a request tells the store, and learns from it -----------------------
    #
    # session_ng's middleware and its Channels stack use these; any other
    # code needs none of them.

    def bind_request(
        self, companions: Iterable[str] = (), new_session_check: NewSessionCheck | None = None
    ) -> None:
        """Tell the store about the browser of the request that uses it.

        ``companions``: the keys of the browser's other sessions (its other
        aliases), checked in the load's round trip (see ``companions_alive``).
        ``new_session_check``: for a request under a new alias, asked before a
        new session is written (a new alias must fit ``MAX_ALIASES``); it
        raises ``TooManySessions`` to refuse.
        """
        self._companions = list(companions)
        self._new_session_check = new_session_check

    @property
    def companions_alive(self) -> set[str] | None:
        """Which of the ``companions`` the load found alive; None until a load
        has looked (or when there were none)."""
        return self._companions_alive

    @property
    def failure(self) -> SessionStoreUnavailable | TooManySessions | None:
        """Why an operation of this store failed, wherever the exception then
        went (a template, another middleware): Redis unavailable, or a new
        session refused. The middleware answers 503 or 400 from it instead of
        the 500 the exception became."""
        return self._unavailable or self._refused

    def renew_cookie(self) -> None:
        """The response sends this session's cookie now: the next save records
        when (hash field ``r``), the baseline of the cookie renewal rule."""
        self._cookie_renewed_at = now_ms()

    def last_cookie_renewal(self) -> tuple[int, int] | None:
        """(when a response last sent this session's cookie, epoch ms; the
        session's idle timeout in seconds, -1 if it never expires), as stored
        at the load or the last save; None when not known (no record, or no
        response has recorded one)."""
        record = self._record
        if record is None or record.renewed is None:
            return None
        return record.renewed, record.max_inactive

    def inspect(self) -> None:
        """Load the session now without counting it as activity: its idle timer
        is not renewed, by this load or by a save of this store that changes
        nothing (``session_ng.api.get_session``)."""
        self._renew = False
        self._session_cache = self.load()

    async def ainspect(self) -> None:
        self._renew = False
        self._session_cache = await self.aload()

    def glance(self, session_keys: list[str]) -> dict[str, store_sessions.Glance]:
        """What a look at these sessions (this browser's) shows, in one round
        trip; an outage is flagged as the store's own (see ``failure``)."""
        return self._run(store_sessions.peek(conf.snapshot().namespace, session_keys))

    async def aglance(self, session_keys: list[str]) -> dict[str, store_sessions.Glance]:
        return await self._arun(store_sessions.peek(conf.snapshot().namespace, session_keys))

    @classmethod
    def for_record(cls, record: Record) -> SessionStore:
        """A store for a session read elsewhere (a user's index): it knows the
        session's user and bucket, so deleting it takes one round trip and no
        fix-up (``session_ng.api.delete_sessions``)."""
        store = cls(record.session_key)
        store._record = record
        return store

    async def aprefetch(self) -> None:
        """Load the session now, so that code that reads it later, sync or
        async, needs no I/O (session_ng's Channels stack, in an event loop)."""
        self._session_cache = await self.aload()

    # --- reads that hand out values ---------------------------------------------

    def _expose(self, key: str, value: Any) -> Any:
        if type(value) not in IMMUTABLE_TYPES:
            self._exposed.add(key)
        return value

    def __getitem__(self, key: str) -> Any:
        return self._expose(key, self._session[key])

    def get(self, key: str, default: Any = None) -> Any:
        session = self._session
        return self._expose(key, session[key]) if key in session else default

    async def aget(self, key: str, default: Any = None) -> Any:
        session = await self._aget_session()
        return self._expose(key, session[key]) if key in session else default

    def setdefault(self, key: str, value: Any) -> Any:  # type: ignore[override]
        return self._expose(key, super().setdefault(key, value))

    async def asetdefault(self, key: str, value: Any) -> Any:
        return self._expose(key, await super().asetdefault(key, value))

    def items(self) -> Any:
        handed = super().items()  # may load, which starts a fresh record
        self._exposed_all = True
        return handed

    async def aitems(self) -> Any:
        handed = await super().aitems()
        self._exposed_all = True
        return handed

    def values(self) -> Any:
        handed = super().values()  # may load, which starts a fresh record
        self._exposed_all = True
        return handed

    async def avalues(self) -> Any:
        handed = await super().avalues()
        self._exposed_all = True
        return handed

    def _run(self, operation: driver.Operation[R]) -> R:
        try:
            return driver.run(operation)
        except SessionStoreUnavailable as exc:
            self._unavailable = exc
            raise

    async def _arun(self, operation: driver.Operation[R]) -> R:
        try:
            return await driver.arun(operation)
        except SessionStoreUnavailable as exc:
            self._unavailable = exc
            raise

    # --- keys ----------------------------------------------------------------

    def _validate_session_key(self, key: Any) -> bool:
        # Django's "8 characters or more", restricted to [a-z0-9] and at most
        # 128 characters: nothing else may become part of a Redis key name.
        return is_valid_session_key(key)

    def _get_new_session_key(self) -> str:
        # No EXISTS round trip: save(must_create=True) refuses a taken key
        # atomically, and create() then draws another.
        return new_session_key()

    async def _aget_new_session_key(self) -> str:
        return self._get_new_session_key()

    # --- load ----------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        key = self.session_key
        if key is None:
            return {}
        loaded, alive = self._run(self._load_operation(key))
        if loaded is None and conf.snapshot().migrate_from:
            loaded = self._migrate(key)
        return self._accept(loaded, alive)

    async def aload(self) -> dict[str, Any]:
        key = self.session_key
        if key is None:
            return {}
        loaded, alive = await self._arun(self._load_operation(key))
        if loaded is None and conf.snapshot().migrate_from:
            loaded = await self._amigrate(key)
        return self._accept(loaded, alive)

    # --- migration from another engine (SESSION_NG["MIGRATE_FROM"]) -----------

    def adopt_signed_cookie(self, cookie: str) -> None:
        """For a store without a key: take the session that ``cookie``, one of
        Django's signed_cookies engine, holds, when MIGRATE_FROM names that
        engine. It is imported on first access under a key derived from the
        cookie (a bad cookie is then no session, as before)."""
        key = migration.signed_cookie_key(cookie)
        if key is not None and self.session_key is None:
            self._session_key = key
            self.migration_cookie = cookie

    def import_plan(self, data: dict[str, Any], remaining_ms: int) -> SavePlan:
        """The save that imports ``data``, a session of another engine with
        ``remaining_ms`` left to live there, under this store's key: a new
        session whose life is at most that (save.lua makes its fields say so).
        """
        assert self.session_key is not None
        period = conf.snapshot().renewal_period_ms
        return self._import_plan(
            self.session_key, data, remaining_ms, _dumps_of(self.serializer), period
        )

    @classmethod
    def import_plans(cls, sessions: Iterable[tuple[str, dict[str, Any], int]]) -> list[SavePlan]:
        """``import_plan`` for many (session key, data, remaining ms), with
        one store, one serializer and one look at the settings: what a bulk
        import saves in one round trip."""
        store = cls()
        dumps = _dumps_of(store.serializer)
        period = conf.snapshot().renewal_period_ms
        return [
            store._import_plan(session_key, data, remaining_ms, dumps, period)
            for session_key, data, remaining_ms in sessions
        ]

    def _import_plan(
        self,
        session_key: str,
        data: dict[str, Any],
        remaining_ms: int,
        dumps: Callable[[Any], bytes],
        period: int | None,
    ) -> SavePlan:
        # Built directly rather than through ``_plan``, whose change tracking
        # a new session does not need: a bulk import spends its time here.
        to_set = {name: dumps(value) for name, value in data.items()}
        now = now_ms()
        max_inactive, expires_at = self._expiry_fields(data)
        user = data.get(USER_KEY)
        life = records.life_ms(max_inactive, expires_at, now, period)
        bucket = None if life is None else records.bucket_minute(now + min(life, remaining_ms))
        return SavePlan(
            session_key=session_key,
            create=True,
            now=now,
            max_inactive=max_inactive,
            expires_at=expires_at,
            to_set=to_set,
            to_delete=[],
            bucket=bucket,
            user=None if user is None else str(user),
            user_changed=True,
            period_ms=period,
            import_life=remaining_ms,
        )

    def _imported(self, plan: SavePlan, status: str) -> Record | None:
        """What Redis holds once ``plan`` was tried: the record it wrote, or
        None when another request imported it first (the caller reloads)."""
        if status != "ok":
            return None
        return Record(
            session_key=plan.session_key,
            created=plan.now,
            accessed=plan.now,
            max_inactive=plan.max_inactive,
            expires_at=plan.expires_at,
            user=plan.user,
            bucket=plan.bucket,
            attributes=dict(plan.to_set),
        )

    def _migrate(self, key: str) -> Record | Corrupt | None:
        """A session of the MIGRATE_FROM engine that Redis does not know yet,
        moved into Redis under ``key``: once (the save's import marker), and
        not as a new session (no session_created)."""
        source = migration.current()
        found = source.find(key, self.migration_cookie) if source is not None else None
        if source is None or found is None:
            return None
        plan = self.import_plan(found.data, found.remaining_ms)
        record = self._imported(
            plan, self._run(store_sessions.save(conf.snapshot().namespace, plan))
        )
        source.forget(key)
        if record is not None:
            return record
        return self._run(self._load_operation(key))[0]

    async def _amigrate(self, key: str) -> Record | Corrupt | None:
        source = migration.current()
        if source is None:
            return None
        # The old stores are synchronous (the ORM, files, caches).
        found = await sync_to_async(source.find)(key, self.migration_cookie)
        if found is None:
            return None
        plan = self.import_plan(found.data, found.remaining_ms)
        record = self._imported(
            plan, await self._arun(store_sessions.save(conf.snapshot().namespace, plan))
        )
        await sync_to_async(source.forget)(key)
        if record is not None:
            return record
        return (await self._arun(self._load_operation(key)))[0]

    def _load_operation(
        self, key: str
    ) -> driver.Operation[tuple[Record | Corrupt | None, set[str]]]:
        snap = conf.snapshot()
        refresh = snap.refresh_on_access if self._renew is None else self._renew
        return store_sessions.load(
            snap.namespace, key, now_ms(), refresh, self._companions, snap.renewal_period_ms
        )

    def _accept(self, loaded: Record | Corrupt | None, alive: set[str]) -> dict[str, Any]:
        if self._companions:
            self._companions_alive = alive
        if not isinstance(loaded, Record):
            # Unknown, expired or unreadable: a new session, under a new key.
            self._session_key = None
            self._record = None
            return {}
        self._record = loaded
        # Filled as values are deserialized (see _decode_one).
        self._loaded_values = {}
        self._exposed = set()
        self._exposed_all = False
        return LazyAttributes(loaded.attributes, self._decode_one)

    def _decode_one(self, name: str) -> Any:
        """One attribute of the loaded record, deserialized; KeyError (and the
        raw value forgotten, so no save deletes it) when it cannot be."""
        record = self._record
        assert record is not None
        try:
            value = decode_value(self.serializer(), record, name)
        except KeyError:
            del record.attributes[name]
            raise
        self._loaded_values[name] = value
        return value

    def decode_attributes(self, record: Record) -> dict[str, Any]:
        """Every attribute of ``record``, deserialized; undecodable ones dropped."""
        return decode_all(self.serializer(), record)

    # --- events --------------------------------------------------------------

    def _created_event(self, plan: SavePlan) -> dict[str, Any] | None:
        if not plan.create or plan.replaces is not None:
            return None  # an update, or a rotation: the same session
        return {
            "session_key": plan.session_key,
            "user_id": plan.user,
            "data": dict(self._session_cache),
        }

    def _deleted_event(self, ended: store_sessions.Ended | None) -> dict[str, Any] | None:
        if ended is None:
            return None
        record = ended.record
        if not isinstance(record, Record):
            return {"session_key": ended.session_key, "user_id": None, "data": {}}
        return {
            "session_key": ended.session_key,
            "user_id": record.user,
            "data": self.decode_attributes(record),
        }

    # --- renewal -----------------------------------------------------------------

    def renewal_period(self) -> float:
        """Seconds between two renewals of this session's idle timer:
        RENEWAL_PERIOD, or by default a hundredth of its idle timeout (at
        most a minute; 0 for a session that never expires)."""
        record = self._record
        if record is not None:
            max_inactive = record.max_inactive
        else:  # not loaded: the default idle timeout
            max_inactive = min(int(self.get_session_cookie_age()), MAX_INACTIVE_SECONDS)
        setting = conf.snapshot().renewal_period_ms
        return records.renewal_period_ms(max_inactive, setting) / 1000

    # --- exists / create / save ----------------------------------------------

    def exists(self, session_key: str | None) -> bool:
        if not is_valid_session_key(session_key):
            return False
        return self._run(store_sessions.exists(conf.snapshot().namespace, session_key))

    async def aexists(self, session_key: str | None) -> bool:
        if not is_valid_session_key(session_key):
            return False
        return await self._arun(store_sessions.exists(conf.snapshot().namespace, session_key))

    def _check_creation(self) -> None:
        if self._new_session_check is not None:
            try:
                self._new_session_check.check_new_alias()
            except TooManySessions as exc:
                self._refused = exc
                raise

    def create(self) -> None:
        self._check_creation()
        while True:
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    async def _acheck_creation(self) -> None:
        if self._new_session_check is not None:
            try:
                await self._new_session_check.acheck_new_alias()
            except TooManySessions as exc:
                self._refused = exc
                raise

    async def acreate(self) -> None:
        await self._acheck_creation()
        while True:
            self._session_key = await self._aget_new_session_key()
            try:
                await self.asave(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        """Django's save: writes what changed since the load, and when nothing
        did, still makes sure the session exists (one round trip that slides
        its idle timer, as Django's engines renew an unchanged session, unless
        ``touch`` is False) and raises ``UpdateError`` if it was deleted
        meanwhile, as they do."""
        if not self._write(must_create):
            self._confirm(self._run(self._confirm_operation()))

    async def asave(self, must_create: bool = False) -> None:
        if not await self._awrite(must_create):
            self._confirm(await self._arun(self._confirm_operation()))

    def save_changes(self) -> None:
        """Write what changed since the load, and nothing, with no round trip,
        when nothing did. session_ng's middleware saves every session a request
        accessed this way (an untouched or unchanged one costs nothing); unlike
        ``save()`` it cannot notice that an unchanged session was deleted
        meanwhile."""
        self._write(must_create=False)

    async def asave_changes(self) -> None:
        await self._awrite(must_create=False)

    def _write(self, must_create: bool) -> bool:
        """Save what changed; False when there was nothing to write."""
        if self.session_key is None:
            self.create()
            return True
        data = self._get_session(no_load=must_create)
        if self._forgotten():
            self.create()
            return True
        plan = self._plan(data, must_create)
        if plan is None:
            return False
        try:
            status = self._run(store_sessions.save(conf.snapshot().namespace, plan))
        except SessionStoreUnavailable as exc:
            status = self._unsaved_bookkeeping(plan, exc)
        self._finish(plan, status)
        event = self._created_event(plan)
        if event is not None:
            session_created.send(sender=type(self), **event)
        return True

    async def _awrite(self, must_create: bool) -> bool:
        if self.session_key is None:
            await self.acreate()
            return True
        data = await self._aget_session(no_load=must_create)
        if self._forgotten():
            await self.acreate()
            return True
        plan = self._plan(data, must_create)
        if plan is None:
            return False
        try:
            status = await self._arun(store_sessions.save(conf.snapshot().namespace, plan))
        except SessionStoreUnavailable as exc:
            status = self._unsaved_bookkeeping(plan, exc)
        self._finish(plan, status)
        event = self._created_event(plan)
        if event is not None:
            await session_created.asend(sender=type(self), **event)
        return True

    def _confirm_operation(self) -> driver.Operation[bool]:
        assert self.session_key is not None
        if self._renew is False:
            # Code that only looks (api.get_session) does not keep it alive.
            return (yield from store_sessions.exists(conf.snapshot().namespace, self.session_key))
        return (yield from store_sessions.touch_now([self.session_key]))[0]

    def _confirm(self, alive: bool) -> None:
        if not alive:
            # Deleted (logged out elsewhere, say) since the load: Django's
            # engines refuse to save it, and so do we (no resurrection).
            self._record = None
            raise UpdateError

    def _forgotten(self) -> bool:
        """True when the load just found nothing and dropped the key."""
        return self.session_key is None

    def _plan(
        self, data: dict[str, Any], create: bool, replaces: Record | None = None
    ) -> SavePlan | None:
        """What a save must write, or None when it would change nothing."""
        assert self.session_key is not None
        serializer = self.serializer()
        baseline = None if create else self._record
        known = baseline.attributes if baseline is not None else {}
        loaded = self._loaded_values
        current: dict[str, bytes] = {}
        exposed, exposed_all = self._exposed, self._exposed_all
        dumped_mutable: set[str] = set()
        # Values never deserialized are unchanged: compared without decoding.
        for name, value in raw_items(data) if baseline is not None else data.items():
            if value is UNDECODED or (
                name in known
                and loaded.get(name, _MISSING) is value
                and (
                    type(value) in IMMUTABLE_TYPES
                    # A mutable value nobody was handed cannot have changed.
                    or not (exposed_all or name in exposed)
                )
            ):
                current[name] = known[name]
            else:
                current[name] = _as_bytes(serializer.dumps(value))
                if type(value) not in IMMUTABLE_TYPES:
                    dumped_mutable.add(name)
        # The caller may still hold these (it set them, or was handed them):
        # after this save they must keep being compared (see _finish).
        self._dumped_mutable = dumped_mutable
        stale_chunks: dict[str, int] = {}
        if baseline is None:
            to_set, to_delete = current, []
        else:
            to_set = {n: v for n, v in current.items() if baseline.attributes.get(n) != v}
            to_delete = [n for n in baseline.attributes if n not in current]
            # Long values are stored in chunks: those a value no longer needs go.
            for name in (*to_set, *to_delete):
                previous = baseline.attributes.get(name)
                if previous is not None and len(previous) > records.LISTPACK_VALUE:
                    stale_chunks[name] = records.chunks_of(previous)
        now = now_ms()
        snap = conf.snapshot()
        max_inactive, expires_at = self._expiry_fields(data)
        user = data.get(USER_KEY)
        user = None if user is None else str(user)
        old = baseline or replaces
        same_expiry = baseline is not None and (max_inactive, expires_at) == (
            baseline.max_inactive,
            baseline.expires_at,
        )
        due = baseline is not None and records.renewal_due(baseline, now, snap.renewal_period_ms)
        if (
            same_expiry
            and not to_set
            and not to_delete
            and self._cookie_renewed_at is None
            and (snap.refresh_on_access or not due)
        ):
            # Nothing to write, and the idle timer renewed if due (by the
            # load, or with REFRESH_ON_ACCESS off, by this save when due).
            return None
        life = records.life_ms(max_inactive, expires_at, now, snap.renewal_period_ms)
        bucket = None if life is None else records.bucket_minute(now + life)
        return SavePlan(
            session_key=self.session_key,
            create=create,
            now=now,
            max_inactive=max_inactive,
            expires_at=expires_at,
            to_set=to_set,
            to_delete=to_delete,
            created=replaces.created if replaces is not None else None,
            bucket=bucket,
            old_bucket=old.bucket if old is not None else None,
            user=user,
            old_user=old.user if old is not None else None,
            user_changed=user != (old.user if old is not None else None) or create,
            replaces=replaces.session_key if replaces is not None else None,
            replace_all=not create and baseline is None,
            sets_expiry=(
                baseline is None
                or EXPIRY_KEY in to_set
                or EXPIRY_KEY in to_delete
                or create
                # Signing in or out changes the default expiry when anonymous
                # sessions have their own.
                or (
                    conf.snapshot().anonymous_max_inactive is not None
                    and (user is None) != (baseline.user is None)
                )
            ),
            renewed=self._cookie_renewed_at,
            period_ms=snap.renewal_period_ms,
            stale_chunks=stale_chunks,
            # Attributes only, in a session whose idle timer needs no renewal
            # yet: the TTLs, bucket and user index stay as they are.
            lean=same_expiry and baseline is not None and user == baseline.user and not due,
        )

    def _unsaved_bookkeeping(self, plan: SavePlan, exc: SessionStoreUnavailable) -> str:
        """A save that Redis refused (full, a read-only replica, gone): an
        error, unless it changed nothing the session holds, and only renewed
        its idle timer or recorded that the cookie was sent (a read-only
        request whose renewals were due), which the request can do without.
        Then "skipped": a later request does it."""
        if plan.create or plan.replace_all or plan.to_set or plan.to_delete:
            raise exc
        if plan.user_changed or plan.sets_expiry:
            raise exc
        logger.warning(
            "session store: the renewal of session %s was skipped, Redis refused it",
            plan.session_key[:6] + "…",
        )
        self._unavailable = None
        self._cookie_renewed_at = None
        return "skipped"

    def _finish(self, plan: SavePlan, status: str) -> None:
        if status == "skipped":
            return
        if status == "exists":
            raise CreateError
        if status == "gone":
            self._record = None
            raise UpdateError
        record = None if plan.create else self._record
        if record is None:
            record = Record(
                session_key=plan.session_key,
                created=plan.created if plan.created is not None else plan.now,
                accessed=plan.now,
                max_inactive=plan.max_inactive,
            )
        if not plan.lean:  # the lean save left the expiry, user and bucket alone
            record.accessed = plan.now
            record.max_inactive = plan.max_inactive
            record.expires_at = plan.expires_at
            record.user = plan.user
            record.bucket = plan.bucket
        if plan.renewed is not None:
            record.renewed = plan.renewed
            self._cookie_renewed_at = None
        record.attributes = {**record.attributes, **plan.to_set}
        for name in plan.to_delete:
            record.attributes.pop(name, None)
        self._record = record
        self._loaded_values = {
            name: value for name, value in raw_items(self._session_cache) if value is not UNDECODED
        }
        self._exposed |= self._dumped_mutable

    def _expiry_fields(self, data: dict[str, Any]) -> tuple[int, int | None]:
        """(max_inactive seconds or -1, absolute expiry in epoch ms or None)."""
        expiry = normal_expiry(data.get(EXPIRY_KEY), aware=True)
        default = min(int(self.get_session_cookie_age()), MAX_INACTIVE_SECONDS)
        anonymous = conf.snapshot().anonymous_max_inactive
        if anonymous is not None and data.get(USER_KEY) is None:
            # No one signed in: the session ends sooner unless someone signs
            # in (login() saves it again with the full timeout) or the view
            # set its own expiry (below).
            default = min(default, int(anonymous))
        if isinstance(expiry, datetime):
            try:
                return default, math.floor(expiry.timestamp() * 1000)
            except (OverflowError, ValueError, OSError):
                return default, None
        if isinstance(expiry, int | float) and expiry:
            return (-1 if expiry < 0 else math.ceil(expiry)), None
        return default, None

    # --- rotation ------------------------------------------------------------

    def cycle_key(self) -> None:
        data = self._session
        old = self._record if self.session_key is not None else None
        if old is None:
            return super().cycle_key()
        while True:
            self._session_key = self._get_new_session_key()
            plan = self._plan(data, create=True, replaces=old)
            assert plan is not None
            try:
                self._finish(plan, self._run(store_sessions.save(conf.snapshot().namespace, plan)))
            except CreateError:
                continue
            except UpdateError:
                self._refused_rotation()
                raise
            break
        self.modified = True
        session_rotated.send(sender=type(self), **self._rotated_event(old, plan))

    async def acycle_key(self) -> None:
        data = await self._aget_session()
        old = self._record if self.session_key is not None else None
        if old is None:  # Django's way: a new session, then the old key deleted
            key = self.session_key
            await self.acreate()
            self._session_cache = data
            if key:
                await self.adelete(key)
            return
        while True:
            self._session_key = await self._aget_new_session_key()
            plan = self._plan(data, create=True, replaces=old)
            assert plan is not None
            try:
                status = await self._arun(store_sessions.save(conf.snapshot().namespace, plan))
                self._finish(plan, status)
            except CreateError:
                continue
            except UpdateError:
                self._refused_rotation()
                raise
            break
        self.modified = True
        await session_rotated.asend(sender=type(self), **self._rotated_event(old, plan))

    def _refused_rotation(self) -> None:
        """The session being rotated was deleted meanwhile (logout, revoked
        elsewhere) or rotated by a concurrent request: nothing was written,
        and this store now holds no session, as a load of the old key would
        find. The caller gets UpdateError (session_ng's middleware answers 400,
        as Django does for a save of a session deleted meanwhile)."""
        self._session_key = None
        self._session_cache = {}
        self._record = None
        self._loaded_values = {}

    def _rotated_event(self, old: Record, plan: SavePlan) -> dict[str, Any]:
        return {
            "session_key": old.session_key,
            "new_session_key": plan.session_key,
            "user_id": plan.user,
            "data": dict(self._session_cache),
        }

    # --- delete --------------------------------------------------------------

    def _delete_target(self, session_key: str | None) -> tuple[str, str | None, int | None] | None:
        """(key, user, bucket): what this store knows of the session to delete."""
        if session_key is None:
            session_key = self.session_key
        if not is_valid_session_key(session_key):
            return None
        record = self._record if session_key == self.session_key else None
        if record is None:
            return session_key, None, None
        return session_key, record.user, record.bucket

    def delete(self, session_key: str | None = None) -> None:
        target = self._delete_target(session_key)
        if target is None:
            return
        ended = self._run(store_sessions.delete(conf.snapshot().namespace, *target))
        if target[0] == self.session_key:
            self._record = None
        event = self._deleted_event(ended)
        if event is not None:
            session_deleted.send(sender=type(self), **event)

    async def adelete(self, session_key: str | None = None) -> None:
        target = self._delete_target(session_key)
        if target is None:
            return
        ended = await self._arun(store_sessions.delete(conf.snapshot().namespace, *target))
        if target[0] == self.session_key:
            self._record = None
        event = self._deleted_event(ended)
        if event is not None:
            await session_deleted.asend(sender=type(self), **event)

    # --- expiry of sessions that never expire --------------------------------

    @staticmethod
    def _never_expires(expiry: Any) -> bool:
        return isinstance(expiry, int | float) and not isinstance(expiry, bool) and expiry < 0

    # Django's own versions trust what is stored (a corrupted value fails the
    # request) and cannot subtract a naive datetime: they get normal_expiry()'s
    # value, and the age they give is kept within a real cookie lifetime.

    def get_expiry_age(self, **kwargs: Any) -> int:
        expiry = kwargs["expiry"] if "expiry" in kwargs else self.get(EXPIRY_KEY)
        return self._age(super().get_expiry_age, expiry, kwargs)

    async def aget_expiry_age(self, **kwargs: Any) -> int:
        expiry = kwargs["expiry"] if "expiry" in kwargs else await self.aget(EXPIRY_KEY)
        return self._age(super().get_expiry_age, expiry, kwargs)

    def get_expiry_date(self, **kwargs: Any) -> datetime:
        expiry = kwargs["expiry"] if "expiry" in kwargs else self.get(EXPIRY_KEY)
        return self._date(super().get_expiry_date, expiry, kwargs)

    async def aget_expiry_date(self, **kwargs: Any) -> datetime:
        expiry = kwargs["expiry"] if "expiry" in kwargs else await self.aget(EXPIRY_KEY)
        return self._date(super().get_expiry_date, expiry, kwargs)

    def _age(self, django: Callable[..., Any], expiry: Any, kwargs: dict[str, Any]) -> int:
        # ``django`` is SessionBase's sync version: given ``expiry``, it does no I/O.
        expiry = normal_expiry(expiry)
        if self._never_expires(expiry):
            return NEVER_EXPIRES_COOKIE_AGE
        age = int(django(**{**kwargs, "expiry": expiry}))
        # An expiry in the past (a stored date in year 1) is no negative age
        # (a cookie date before year 1 fails the response): the cookie ends now.
        return max(0, min(age, MAX_INACTIVE_SECONDS))

    def _date(self, django: Callable[..., Any], expiry: Any, kwargs: dict[str, Any]) -> datetime:
        expiry = normal_expiry(expiry)
        if self._never_expires(expiry):
            expiry = NEVER_EXPIRES_COOKIE_AGE
        elif isinstance(expiry, datetime):
            return expiry
        result: datetime = django(**{**kwargs, "expiry": expiry})
        return result

    # --- housekeeping --------------------------------------------------------

    @classmethod
    def clear_expired(cls) -> None:
        # The worker's own sweep: what it finds ended is reported
        # (session_expired), so a clearsessions cron never swallows an event.
        sweep_and_report(touch_current=True)

    @classmethod
    async def aclear_expired(cls) -> None:
        await asweep_and_report(touch_current=True)

"""A loaded session's attributes, each deserialized on first use.

A request usually looks at a few of a session's attributes (the user id, a
theme), so a load deserializes none of them: each is deserialized when it is
first read. It is a ``dict``, as ``SessionBase`` expects; everything that sees
all the values at once (iteration, ``len()``, ``items()``, ``values()``,
copies, comparison) deserializes the rest first. A value that cannot be
deserialized is dropped as it is met, as if it were not there.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from session_ng.users import user_pk

if TYPE_CHECKING:
    from session_ng.store.records import Record

security_logger = logging.getLogger("django.security.SuspiciousSession")
# Django's own key for the signed-in user's id (django.contrib.auth.SESSION_KEY).
USER_KEY = "_auth_user_id"

# Stands for a value not deserialized yet.
UNDECODED: Any = object()
_MISSING: Any = object()


def raw_items(data: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    """``data``'s (name, value) pairs without deserializing anything: for
    LazyAttributes, UNDECODED stands for the values not read yet."""
    return data.raw_items() if isinstance(data, LazyAttributes) else data.items()


class LazyAttributes(dict[str, Any]):
    """``decode(name)`` returns an attribute's value, or raises KeyError to drop it."""

    __slots__ = ("_decode",)

    def __init__(self, names: Iterable[str], decode: Callable[[str], Any]) -> None:
        super().__init__(dict.fromkeys(names, UNDECODED))
        self._decode = decode

    def _value(self, key: str) -> Any:
        value = dict.__getitem__(self, key)  # KeyError when absent
        if value is UNDECODED:
            try:
                value = self._decode(key)
            except KeyError:
                dict.__delitem__(self, key)
                raise
            dict.__setitem__(self, key, value)
        return value

    def _decode_all(self) -> None:
        if UNDECODED in dict.values(self):
            for key in [k for k, v in dict.items(self) if v is UNDECODED]:
                with contextlib.suppress(KeyError):  # dropped
                    self._value(key)

    def raw_items(self) -> Iterator[tuple[str, Any]]:
        """(name, value) with UNDECODED for the values not deserialized yet:
        a save compares only those that can have changed."""
        return iter(dict.items(self))

    # Reads of one value.

    def __getitem__(self, key: str) -> Any:
        return self._value(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self._value(key)
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if not dict.__contains__(self, key):
            return False
        try:
            self._value(key)  # type: ignore[arg-type]
        except KeyError:
            return False
        return True

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        try:
            value = self._value(key)
        except KeyError:
            if default is _MISSING:
                raise
            return default
        dict.__delitem__(self, key)
        return value

    def setdefault(self, key: str, default: Any = None) -> Any:
        try:
            return self._value(key)
        except KeyError:
            dict.__setitem__(self, key, default)
            return default

    # Reads of them all.

    def __iter__(self) -> Iterator[str]:
        self._decode_all()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._decode_all()
        return dict.__len__(self)

    def keys(self) -> Any:
        self._decode_all()
        return dict.keys(self)

    def values(self) -> Any:
        self._decode_all()
        return dict.values(self)

    def items(self) -> Any:
        self._decode_all()
        return dict.items(self)

    def popitem(self) -> tuple[str, Any]:
        self._decode_all()
        return dict.popitem(self)

    def copy(self) -> dict[str, Any]:
        self._decode_all()
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self._decode_all()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        self._decode_all()
        return dict.__repr__(self)

    def __or__(self, other: Any) -> Any:
        return self.copy() | other

    def __ror__(self, other: Any) -> Any:
        return other | self.copy()

    def __reduce__(self) -> Any:
        return (dict, (self.copy(),))


def decode_value(serializer: Any, record: Record, name: str) -> Any:
    """One stored attribute of ``record``, deserialized; KeyError (logged)
    when it cannot be, or when it is ``_auth_user_id`` and no user id."""
    try:
        value = serializer.loads(record.attributes[name])
    except Exception:
        # Dropped from this request only: the stored field is left as it is
        # (a later save writes it only if the view sets it).
        what = "could not be decoded"
    else:
        if name != USER_KEY or _valid_user_id(value):
            return value
        # Django's auth would fail the request on it (its own engines sign
        # their data; Redis does not): dropped like an undecodable value.
        what = "is no user id"
    security_logger.warning(
        "Session data corrupted: attribute %r of session %s %s",
        name,
        record.session_key[:6] + "…",
        what,
    )
    raise KeyError(name)


def decode_all(serializer: Any, record: Record) -> dict[str, Any]:
    """Every attribute of ``record``, deserialized; undecodable ones dropped
    (and logged): what session events carry as ``data``."""
    data: dict[str, Any] = {}
    for name in record.attributes:
        with contextlib.suppress(KeyError):  # dropped (and logged)
            data[name] = decode_value(serializer, record, name)
    return data


def _valid_user_id(value: Any) -> bool:
    """Whether ``value`` can be the user model's primary key (True when
    django.contrib.auth is not installed: then nothing reads it)."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        from django.contrib.auth import get_user_model

        model = get_user_model()
    except (ImproperlyConfigured, LookupError):
        return True
    return user_pk(model, value) is not None

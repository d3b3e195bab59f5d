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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

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

"""A codec that is pickle under another name, for the serializer check's tests."""

from pickle import dumps, loads

__all__ = ["UnsafeSerializer", "dumps", "loads"]


class UnsafeSerializer:
    def dumps(self, obj: object) -> bytes:
        return dumps(obj)

    def loads(self, data: bytes) -> object:
        return loads(data)  # the very thing the check warns about

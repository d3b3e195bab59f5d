"""A SESSION_SERIALIZER-compatible serializer that leaves a visible mark."""

from __future__ import annotations

import json
from typing import Any


class UpperJSONSerializer:
    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj).upper().encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data.decode().lower())

"""Counting what one request sends: Redis round trips and SQL queries.

Round trips are counted the way tests/conftest.py counts them: one per call of
``AbstractConnection.send_packed_command``, the single socket write of a
command or of a whole pipeline. The counter is installed only while counting,
so the timed requests run the client unmodified.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis.connection
from django.db import connection
from django.test.utils import CaptureQueriesContext


@dataclass
class Count:
    round_trips: int = 0
    queries: int = 0


@contextmanager
def counting() -> Iterator[Count]:
    """Count the round trips and SQL queries of the ``with`` body (one thread)."""
    count = Count()
    cls = redis.connection.AbstractConnection
    original: Callable[..., None] = cls.send_packed_command

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        count.round_trips += 1
        original(self, command, check_health)

    cls.send_packed_command = send  # type: ignore[method-assign]
    try:
        with CaptureQueriesContext(connection) as queries:
            yield count
        count.queries = len(queries.captured_queries)
    finally:
        cls.send_packed_command = original  # type: ignore[method-assign]

"""Plain-text tables, version strings and time stamps shared by ``bench``,
``bench.growth`` and ``bench.loadtest`` (light: imports neither Django nor the
benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

import redis


def grid(rows: Sequence[Sequence[str]]) -> list[str]:
    """The rows as aligned columns, a rule under the first (the headers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        # Text left, figures right, like any table of numbers.
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def package_version(name: str, missing: str = "not installed") -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return missing


def recorded_at() -> str:
    """The time a table is recorded, as its last line gives it."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def redis_server_version(client: redis.Redis) -> str:
    return str(client.info("server")["redis_version"])


def redis_server_version_at(redis_url: str) -> str:
    client = redis.Redis.from_url(redis_url)
    try:
        return redis_server_version(client)
    finally:
        client.close()

"""How busy the machine was during a run, and how much of that was not ours.

On a shared machine another process's work slows every engine down; the run
that met it is slower for reasons that have nothing to do with sessions. The
figures here (Linux /proc only; elsewhere nothing is reported) let the table
say so.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_total() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot."""
    try:
        fields = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    # guest time is already counted in user time.
    total = sum(values[:8])
    return total - idle, total


def _ppid_and_ticks(pid: int) -> tuple[int, int] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])  # ppid, utime + stime


def _tree_ticks(roots: set[int]) -> int:
    """CPU ticks of the live processes ``roots`` and all their descendants."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            found = _ppid_and_ticks(int(entry.name))
            if found is not None:
                stats[int(entry.name)] = found
    members = {pid for pid in roots if pid in stats}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in stats.items() if ppid in members} - members
        members |= children
        grew = bool(children)
    return sum(stats[pid][1] for pid in members)


@dataclass
class Usage:
    """CPU seconds during a run: the whole machine's, and the run's own."""

    busy: float = 0.0  # all CPUs, seconds of busy time
    ours: float = 0.0  # this process, the server, wrk and redis-server
    wall: float = 0.0

    def add(self, other: Usage) -> None:
        self.busy += other.busy
        self.ours += other.ours
        self.wall += other.wall

    @property
    def others(self) -> float:
        return max(0.0, self.busy - self.ours)


def _children_seconds() -> float:
    """CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    """Started just before wrk, stopped just after it.

    "Ours" is this process and everything it started (redis-server, gunicorn
    and its workers, read from /proc at both ends), plus wrk, which starts and
    ends in between and is counted from its rusage once waited for.
    """

    def __init__(self) -> None:
        self.roots = {os.getpid()}
        self.start_machine = _busy_total()
        self.start_tree = _tree_ticks(self.roots)
        self.start_children = _children_seconds()
        self.start_wall = time.monotonic()

    def stop(self) -> Usage:
        wall = time.monotonic() - self.start_wall
        end_machine = _busy_total()
        if self.start_machine is None or end_machine is None:
            return Usage(wall=wall)
        tree = (_tree_ticks(self.roots) - self.start_tree) / TICKS
        ours = tree + _children_seconds() - self.start_children
        busy = (end_machine[0] - self.start_machine[0]) / TICKS
        return Usage(busy=busy, ours=max(0.0, ours), wall=wall)

"""Runs the store's operations against Redis.

Each operation is written once, as a generator that yields *steps* (a script
call, a command, or a pipelined batch of them) and receives their replies. A
sync driver and an async driver run the same generator against ``redis.Redis``
or ``redis.asyncio.Redis``, so the ``a``-prefixed twins cannot drift from the
sync ones and neither goes through ``sync_to_async``.

Scripts are sent with EVALSHA; on NOSCRIPT (first use, or after Redis
restarted) the source is loaded once and the call retried. One error policy:
what means "Redis is not there" (``is_outage``) becomes
``SessionStoreUnavailable``; a key of the wrong type is skipped and logged
where an operation allows it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import redis.exceptions

from session_ng.conf import conf
from session_ng.exceptions import SessionStoreUnavailable
from session_ng.store.client import get_async_client, get_client
from session_ng.store.records import loggable

logger = logging.getLogger("session_ng")

# Errors that mean "Redis is not there right now", as opposed to a bug.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MasterDownError,
    # Full (maxmemory reached, noeviction): it refuses every write, the
    # sliding of an idle timer on a read included.
    redis.exceptions.OutOfMemoryError,
    # redis-py's Cluster client gave up (its retries and redirections ran out).
    redis.exceptions.ClusterError,
)
# Replies that redis-py gives no class of their own and that also mean "not
# now": writes stopped after a failed snapshot, a script or module busy, too
# few replicas for min-replicas-to-write.
UNAVAILABLE_CODES = frozenset({"MISCONF", "BUSY", "NOREPLICAS"})
try:  # Sentinel's own "no primary" error lives in the sentinel module.
    from redis.sentinel import MasterNotFoundError

    UNAVAILABLE_ERRORS += (MasterNotFoundError,)
except ImportError:  # pragma: no cover - every supported redis-py has it
    pass


class Script:
    """One file of ``session_ng/scripts``, addressed by its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("session_ng.scripts").joinpath(f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


SAVE = Script("save")
UPDATE = Script("update")
DELETE = Script("delete")
SWEEP_MEMBER = Script("sweep_member")
TOUCH = Script("touch")
INDEX_ADD = Script("index_add")
RETIRE = Script("retire")
CLAIM = Script("claim")
STREAM_TURN = Script("stream_turn")
FORGET_CONSUMER = Script("forget_consumer")


# --- steps -------------------------------------------------------------------


@dataclass(frozen=True)
class Eval:
    script: Script
    keys: Sequence[str]
    args: Sequence[str | int | bytes]


@dataclass(frozen=True)
class Command:
    args: tuple[str | int | bytes, ...]
    # A server command (no key) to send to every primary of a Redis Cluster,
    # whose replies come as one dict by node; elsewhere it changes nothing.
    every_primary: bool = False


def _command_options(step: Command) -> dict[str, Any]:
    return {"target_nodes": "primaries"} if step.every_primary and split_slots() else {}


@dataclass(frozen=True)
class Batch:
    """Several calls in one round trip (a pipeline, not a transaction).

    A call whose script was missing (and so did nothing) is sent again with
    the script's source, in a second round trip; the others are not repeated.
    A script can appear on the server halfway through a batch (another client
    loaded it), so resending the whole batch would run its later calls twice.
    """

    calls: Sequence[Eval | Command]
    # The operation gets error replies in the list instead of an exception.
    errors_as_values: bool = False
    # Follow-up writes whose loss the data model tolerates (bucket and index
    # entries on other Cluster nodes): when Redis is unavailable for them,
    # the operation gets None and goes on, and a warning is logged.
    best_effort: bool = False


Step = Eval | Command | Batch
R = TypeVar("R")
Operation = Generator[Step, Any, R]


def cluster_unreachable(exc: redis.exceptions.RedisClusterException) -> bool:
    """A Cluster error that means "Redis is not there" rather than a bug.

    redis-py raises the bare RedisClusterException both when no startup node
    answers and for misuse (keys of several slots in one command); only the
    first, and slots no node serves (mid-failover), are an outage. The first
    is raised from the last startup node's own error, which says which it is.
    Only a layout read that left slots uncovered says so in its text alone.
    """
    if isinstance(exc, redis.exceptions.SlotNotCoveredError):
        return True
    if exc.__cause__ is not None:
        return is_outage(exc.__cause__)
    return str(exc).startswith("All slots are not covered")


def error_code(exc: redis.exceptions.ResponseError) -> str:
    """The error code Redis put first in its reply ("MISCONF", "BUSY" ...):
    part of the protocol, unlike the message after it."""
    return str(exc).split(" ", 1)[0]


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis is unavailable (as opposed to a bug)."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    if isinstance(exc, redis.exceptions.ResponseError) and error_code(exc) in UNAVAILABLE_CODES:
        return True
    return isinstance(exc, redis.exceptions.RedisClusterException) and cluster_unreachable(exc)


def split_slots() -> bool:
    """True on Redis Cluster: a script may touch the keys of one slot only, so
    writes to another session's, a bucket's or an index's keys go separately."""
    return conf.snapshot().cluster


def _unavailable(exc: BaseException) -> SessionStoreUnavailable:
    # Some redis-py messages (Sentinel's MasterNotFoundError) carry the repr
    # of every client they tried: the first 300 characters say what happened.
    text = str(exc)
    if len(text) > 300:
        text = text[:300] + "…"
    logger.error("session store unavailable: %s: %s", type(exc).__name__, text)
    return SessionStoreUnavailable(
        f"The session store (Redis) is unavailable: {type(exc).__name__}: {text}"
    )


def _queue(pipe: Any, call: Eval | Command, with_source: bool = False) -> None:
    if isinstance(call, Eval):
        # Not pipe.evalsha(): redis-py's cluster pipeline refuses that method,
        # but routes the command itself by its keys (all in one slot).
        if with_source:
            pipe.execute_command("EVAL", call.script.source, len(call.keys), *call.keys, *call.args)
        else:
            pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
    else:
        pipe.execute_command(*call.args)


# A script missing on its node (first use, a restarted or promoted node) is
# sent once with its source: EVAL runs it and caches it there, on that node
# only, so no node that is down can fail the reload (SCRIPT LOAD goes to all).


def _run_sync(client: Any, step: Step) -> Any:
    if isinstance(step, Eval):
        try:
            return client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except redis.exceptions.NoScriptError:
            return client.eval(step.script.source, len(step.keys), *step.keys, *step.args)
    if isinstance(step, Command):
        return client.execute_command(*step.args, **_command_options(step))
    pipe = client.pipeline(transaction=False)
    for call in step.calls:
        _queue(pipe, call)
    replies = pipe.execute(raise_on_error=False)
    missing = _missing_scripts(replies)
    if missing:
        pipe = client.pipeline(transaction=False)
        for i in missing:
            _queue(pipe, step.calls[i], with_source=True)
        _fill_in(replies, missing, pipe.execute(raise_on_error=False))
    return _replies(step, replies)


async def _run_async(client: Any, step: Step) -> Any:
    if isinstance(step, Eval):
        try:
            return await client.evalsha(step.script.sha, len(step.keys), *step.keys, *step.args)
        except redis.exceptions.NoScriptError:
            return await client.eval(step.script.source, len(step.keys), *step.keys, *step.args)
    if isinstance(step, Command):
        return await client.execute_command(*step.args, **_command_options(step))
    pipe = client.pipeline(transaction=False)
    for call in step.calls:
        _queue(pipe, call)
    replies = await pipe.execute(raise_on_error=False)
    missing = _missing_scripts(replies)
    if missing:
        pipe = client.pipeline(transaction=False)
        for i in missing:
            _queue(pipe, step.calls[i], with_source=True)
        _fill_in(replies, missing, await pipe.execute(raise_on_error=False))
    return _replies(step, replies)


def _missing_scripts(replies: list[Any]) -> list[int]:
    """Which calls of a batch found their script missing (and did nothing)."""
    missing = redis.exceptions.NoScriptError
    return [i for i, reply in enumerate(replies) if isinstance(reply, missing)]


def _fill_in(replies: list[Any], missing: list[int], resent: list[Any]) -> None:
    for i, reply in zip(missing, resent, strict=True):
        replies[i] = reply


def _replies(step: Batch, replies: list[Any]) -> list[Any]:
    if not step.errors_as_values:
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
    return replies


def _skipped(step: Step, exc: BaseException) -> bool:
    """A best-effort batch that met an outage: log it; the operation goes on."""
    if not (isinstance(step, Batch) and step.best_effort and is_outage(exc)):
        return False
    logger.warning(
        "session store: %d follow-up write(s) skipped, Redis unavailable for them: %s: %s",
        len(step.calls),
        type(exc).__name__,
        str(exc)[:300],
    )
    return True


def run(operation: Operation[R]) -> R:
    """Drive an operation against the sync client."""
    try:
        client = get_client()  # a Cluster client connects as it is made
        step = next(operation)
        while True:
            try:
                reply = _run_sync(client, step)
            except redis.exceptions.ResponseError as exc:
                if is_outage(exc):
                    if _skipped(step, exc):
                        step = operation.send(None)
                        continue
                    raise
                # The operation may know what this error means (WRONGTYPE on
                # a corrupted key); if it does not, it re-raises.
                step = operation.throw(exc)
            except Exception as exc:
                if not _skipped(step, exc):
                    raise
                step = operation.send(None)
            else:
                step = operation.send(reply)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception as exc:
        if is_outage(exc):
            raise _unavailable(exc) from exc
        raise


async def arun(operation: Operation[R]) -> R:
    """Drive an operation against the async client of the running loop."""
    try:
        client = await get_async_client()
        step = next(operation)
        while True:
            try:
                reply = await _run_async(client, step)
            except redis.exceptions.ResponseError as exc:
                if is_outage(exc):
                    if _skipped(step, exc):
                        step = operation.send(None)
                        continue
                    raise
                step = operation.throw(exc)
            except Exception as exc:
                if not _skipped(step, exc):
                    raise
                step = operation.send(None)
            else:
                step = operation.send(reply)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception as exc:
        if is_outage(exc):
            raise _unavailable(exc) from exc
        raise


def wrong_type(reply: Exception) -> bool:
    return isinstance(reply, redis.exceptions.ResponseError) and "WRONGTYPE" in str(reply)


def skip_wrong_types(
    calls: Sequence[Eval | Command], replies: Sequence[Any] | None, best_effort: bool = False
) -> list[Any]:
    """The replies of a batch sent with ``errors_as_values``: a call that met a
    key of the wrong type is logged and its reply is None; any other error is
    raised, but for an outage in a ``best_effort`` batch (logged and None too;
    ``replies`` is None when the whole batch was skipped). For writes that
    must not fail on one corrupt key: the worker's, and a save's follow-ups."""
    if replies is None:
        return [None] * len(calls)
    kept: list[Any] = []
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            what, name = (
                (call.script.name, call.keys[0])
                if isinstance(call, Eval)
                else (str(call.args[0]), str(call.args[1]))
            )
            if wrong_type(reply):
                logger.warning(
                    "session store: %s is a key of the wrong type; skipped (%s)",
                    loggable(name),
                    what,
                )
            elif best_effort and is_outage(reply):
                logger.warning(
                    "session store: follow-up write skipped, Redis unavailable for %s: %s",
                    loggable(name),
                    str(reply)[:300],
                )
            else:
                raise reply
            reply = None
        kept.append(reply)
    return kept


def log_notes(notes: Sequence[bytes]) -> None:
    """What a script says it did about keys of the wrong type (save.lua)."""
    for note in notes:
        action, _, name = note.decode().partition(" ")
        if action == "replaced":
            logger.warning(
                "session store: %s was a key of the wrong type; replaced by a hash", name
            )
        else:
            logger.warning("session store: %s is a key of the wrong type; skipped", name)

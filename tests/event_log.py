"""Receivers that append every session_ng event to $SESSION_NG_EVENT_LOG.

Loaded by tests/worker_settings.py, so that tests can see what a worker
*process* sent. One JSON line per event; appends of one short line are atomic,
so several workers can share the file.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from session_ng.signals import session_created, session_deleted, session_expired


def _writer(kind: str) -> Any:
    def write(
        sender: Any, session_key: str, user_id: str | None, data: dict[str, Any], **kw: Any
    ) -> None:
        line = json.dumps(
            {"kind": kind, "session_key": session_key, "user_id": user_id, "data": data,
             "pid": os.getpid()}
        )  # fmt: skip
        with open(os.environ["SESSION_NG_EVENT_LOG"], "a") as log:
            log.write(line + "\n")
        # A slow receiver, for tests that kill a worker while it is sending.
        time.sleep(float(os.environ.get("SESSION_NG_EVENT_DELAY", "0")))

    return write


def _raise_for_boom(sender: Any, user_id: str | None, **kw: Any) -> None:
    # A receiver with a bug, for the test that the worker survives it.
    if user_id == "boom":
        raise RuntimeError("receiver failed")


for _signal, _kind in (
    (session_created, "created"),
    (session_deleted, "deleted"),
    (session_expired, "expired"),
):
    _signal.connect(_writer(_kind), weak=False, dispatch_uid=f"tests.event_log.{_kind}")

session_expired.connect(_raise_for_boom, weak=False, dispatch_uid="tests.event_log.boom")

"""The demo records every session event it receives, to show them."""

from __future__ import annotations

from typing import Any

from session_ng.signals import session_created, session_deleted, session_expired


def _recorder(kind: str) -> Any:
    def record(sender: Any, session_key: str, user_id: str | None, **kwargs: Any) -> None:
        from testproject.demo.models import SessionEvent

        SessionEvent.objects.create(
            kind=kind, session_key_prefix=session_key[:6], user_id=user_id or ""
        )

    return record


RECEIVERS = {
    session_created: _recorder("created"),
    session_deleted: _recorder("deleted"),
    session_expired: _recorder("expired"),
}


def connect() -> None:
    for signal, receiver in RECEIVERS.items():
        signal.connect(receiver, dispatch_uid=f"testproject.demo.{id(signal)}")


def disconnect() -> None:
    for signal in RECEIVERS:
        signal.disconnect(dispatch_uid=f"testproject.demo.{id(signal)}")

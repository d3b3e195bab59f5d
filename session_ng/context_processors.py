"""``session_ng.context_processors.accounts``: data for an account switcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from session_ng.aliases import alias_order
from session_ng.users import user_pk


@dataclass(frozen=True)
class Account:
    alias: str
    user: Any  # the user model instance, or None for an anonymous session
    current: bool
    url: str  # "/" under this alias


def accounts(request: HttpRequest) -> dict[str, Any]:
    """``session_accounts``: this browser's live sessions, in alias order.

    Lazy: a template that never uses it costs nothing. Used, it costs one Redis
    round trip for all aliases (not one each) and one query for the users, and
    the response varies on ``Cookie`` (it shows the browser's accounts).
    """
    manager = getattr(request, "session_manager", None)
    if manager is None:
        return {"session_accounts": []}

    def build() -> list[Account]:
        users = manager.users()
        model = get_user_model()
        ids = {pk for uid in users.values() if (pk := user_pk(model, uid)) is not None}
        by_pk = {str(pk): u for pk, u in model._default_manager.in_bulk(list(ids)).items()}
        return [
            Account(
                alias=alias,
                user=by_pk.get(uid) if uid is not None else None,
                current=alias == manager.current_alias,
                url=manager.encode_url("/", alias),
            )
            for alias, uid in sorted(users.items(), key=lambda item: alias_order(item[0]))
        ]

    return {"session_accounts": SimpleLazyObject(build)}

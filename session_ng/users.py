"""A user id read from Redis, as the user model's primary key.

Django's own engines sign what they store, so Django trusts the user id it
finds in a session. What session_ng reads from Redis is not signed: an id the
primary key field refuses, or one outside the range its database column can
hold, is treated as no user at all (and the caller logs it) rather than
reaching the ORM.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


def user_pk(model: Any, value: Any) -> Any:
    """``value`` as ``model``'s primary key, or None when it cannot be one."""
    if value is None:
        return None
    pk = model._meta.pk
    try:
        converted = pk.to_python(value)
        # The field's validators include the range of its database column
        # (an integer key past 2**63 - 1 would fail the query, not match).
        pk.run_validators(converted)
    except (ValidationError, TypeError, ValueError):
        return None
    return converted

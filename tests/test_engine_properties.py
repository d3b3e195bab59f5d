"""Property: two stores writing one session merge per attribute.

Two stores load the same session, each changes some attributes, and they
save one after the other. A store writes only what it changed relative to
what it loaded (compared by serialized value), so the result is the initial
session with the first store's effective changes and then the second's on
top; nothing a store did not change is lost or resurrected by it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_ng.backends.redis import SessionStore

names = st.text(alphabet="abcdef_:{}é ", min_size=0, max_size=6)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=8,
)
# A change: set a name to a value, or delete it (None as the marker).
changes = st.dictionaries(names, st.one_of(st.just(("del",)), st.tuples(json_values)), max_size=6)


def apply(target: dict[str, Any] | SessionStore, change: dict[str, tuple[Any, ...]]) -> None:
    for name, op in change.items():
        if op == ("del",):
            target.pop(name, None)
        else:
            target[name] = op[0]


def effective(change: dict[str, tuple[Any, ...]], view: dict[str, Any]) -> dict[str, Any]:
    """The part of a change that differs from what the store loaded."""

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, separators=(",", ":")) == json.dumps(b, separators=(",", ":"))

    return {
        name: op
        for name, op in change.items()
        if (op == ("del",) and name in view)
        or (op != ("del",) and (name not in view or not same(view[name], op[0])))
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(initial=st.dictionaries(names, json_values, max_size=6), first=changes, second=changes)
def test_two_writers_merge_per_attribute(
    initial: dict[str, Any], first: dict[str, tuple[Any, ...]], second: dict[str, tuple[Any, ...]]
) -> None:
    s = SessionStore()
    s.update(initial)
    s.save()
    a, b = SessionStore(s.session_key), SessionStore(s.session_key)
    a.load()
    a._session_cache = a.load()
    b._session_cache = b.load()
    apply(a, first)
    apply(b, second)
    a.save()
    b.save()

    expected = dict(initial)
    apply(expected, effective(first, initial))
    apply(expected, effective(second, initial))
    assert dict(SessionStore(s.session_key).items()) == expected
    s.delete()

"""A load deserializes no attribute: each is deserialized when first read, and
whatever sees them all deserializes the rest first."""

from __future__ import annotations

import copy
import json
import logging
import pickle
from typing import Any

import pytest
import redis

from session_ng import keys
from session_ng.attributes import UNDECODED, LazyAttributes
from session_ng.backends.redis import SessionStore

NS = "session_ng"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every value the session serializer deserializes, in order."""
    from django.core.signing import JSONSerializer

    seen: list[bytes] = []
    loads = JSONSerializer.loads

    def counting(self: Any, data: bytes) -> Any:
        seen.append(data)
        return loads(self, data)

    monkeypatch.setattr(JSONSerializer, "loads", counting)
    return seen


def saved(**data: Any) -> str:
    s = SessionStore()
    s.update(data)
    s.save()
    assert s.session_key is not None
    return s.session_key


def test_a_read_deserializes_only_what_it_reads(counted: list[bytes]) -> None:
    key = saved(theme="dark", cart=[1, 2], flags={"beta": True})
    counted.clear()
    s = SessionStore(key)
    assert s["theme"] == "dark"
    assert s.get("theme") == "dark"  # once
    assert counted == [b'"dark"']
    assert "cart" in s
    assert counted == [b'"dark"', b"[1,2]"]
    assert dict(s.items()) == {"theme": "dark", "cart": [1, 2], "flags": {"beta": True}}
    assert len(counted) == 3


def test_a_save_leaves_values_never_read_as_they_are(r: redis.Redis, counted: list[bytes]) -> None:
    key = saved(theme="dark", cart=[1, 2])
    counted.clear()
    s = SessionStore(key)
    s["theme"] = "light"
    s.save()
    assert counted == []  # neither the old theme nor the cart was deserialized
    stored = r.hgetall(keys.session_hash(NS, key))
    assert (stored[b".theme"], stored[b".cart"]) == (b'"light"', b"[1,2]")
    # A second save in the same request writes nothing new.
    s.save()
    assert counted == []
    assert SessionStore(key).load() == {"theme": "light", "cart": [1, 2]}


def test_a_value_that_does_not_deserialize_is_dropped_when_met(
    r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    key = saved(good=1, bad=2)
    r.hset(keys.session_hash(NS, key), ".bad", b"{not json")
    s = SessionStore(key)
    assert s["good"] == 1
    with caplog.at_level(logging.WARNING, logger="django.security.SuspiciousSession"):
        assert "bad" not in s
    assert "attribute 'bad'" in caplog.text
    assert s.get("bad", "default") == "default"
    with pytest.raises(KeyError):
        s["bad"]
    assert dict(s.items()) == {"good": 1}
    s["good"] = 3
    s.save()
    # The stored field is left alone: only the view could replace it.
    assert r.hget(keys.session_hash(NS, key), ".bad") == b"{not json"


def test_an_attribute_that_is_no_user_id_is_dropped_when_met(
    r: redis.Redis, django_user_model: Any
) -> None:
    key = saved(_auth_user_id="1")
    r.hset(keys.session_hash(NS, key), "I", b'{"not": "an id"}')
    s = SessionStore(key)
    assert s.get("_auth_user_id") is None
    assert "_auth_user_id" not in s


def make(decode: dict[str, Any]) -> LazyAttributes:
    def one(name: str) -> Any:
        value = decode[name]
        if value is KeyError:
            raise KeyError(name)
        return value

    return LazyAttributes(decode, one)


def test_it_behaves_as_the_dict_of_its_values() -> None:
    values = {"a": 1, "b": [2], "gone": KeyError}
    expected = {"a": 1, "b": [2]}
    for whole in (
        dict,
        lambda d: {**d},
        lambda d: dict(d.items()),
        lambda d: d.copy(),
        copy.copy,
        lambda d: json.loads(json.dumps(d)),
        lambda d: pickle.loads(pickle.dumps(d)),
        lambda d: d | {},
        lambda d: {} | d,
    ):
        assert whole(make(values)) == expected
    lazy = make(values)
    assert len(lazy) == 2
    assert sorted(lazy) == ["a", "b"]
    assert lazy == expected
    assert repr(lazy) == repr(expected)
    assert make(values).pop("gone", None) is None
    assert make(values).setdefault("gone", 5) == 5
    assert make(values).pop("a") == 1
    with pytest.raises(KeyError):
        make(values).pop("gone")


def test_raw_items_tell_what_was_read() -> None:
    lazy = make({"a": 1, "b": 2})
    assert lazy["a"] == 1
    assert dict(lazy.raw_items()) == {"a": 1, "b": UNDECODED}

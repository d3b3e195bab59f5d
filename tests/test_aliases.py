"""The alias map's cookie format, alias rules and encode_url."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_ng.aliases import (
    DEFAULT_ALIAS,
    encode_url,
    format_cookie,
    is_valid_alias,
    next_alias,
    parse_cookie,
)
from session_ng.keys import is_valid_session_key

K1, K2, K3 = "a" * 32, "b" * 32, "c1" * 16

aliases = st.from_regex(r"[A-Za-z0-9_-]{1,50}", fullmatch=True)
session_keys = st.from_regex(r"[a-z0-9]{8,128}", fullmatch=True)
alias_maps = st.dictionaries(aliases, session_keys, max_size=12)
# What a cookie may carry (RFC 6265 cookie-octets), junk included.
cookie_text = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%&'()*+-./:<=>?@[]^_`{|}~", max_size=300
)


@given(alias_maps)
def test_format_then_parse_round_trips(sessions: dict[str, str]) -> None:
    assert parse_cookie(format_cookie(sessions)) == sessions


@given(alias_maps)
def test_the_value_is_cookie_safe(sessions: dict[str, str]) -> None:
    value = format_cookie(sessions)
    assert all(c in string.ascii_letters + string.digits + "_-.~" for c in value)


@given(cookie_text)
def test_junk_never_yields_a_malformed_alias_or_key(value: str) -> None:
    for alias, key in parse_cookie(value).items():
        assert is_valid_alias(alias)
        assert is_valid_session_key(key)


@given(alias_maps, cookie_text)
def test_junk_pairs_do_not_disturb_good_ones(sessions: dict[str, str], junk: str) -> None:
    good = format_cookie({"7": K1, **sessions}) if sessions else f"7.{K1}"
    parsed = parse_cookie(good + "~" + junk.replace("~", ""))
    for alias, key in parse_cookie(good).items():
        assert parsed[alias] == key


def test_one_default_session_is_the_bare_key_like_django() -> None:
    assert format_cookie({"0": K1}) == K1
    assert parse_cookie(K1) == {"0": K1}


def test_several_sessions_are_alias_dot_key_pairs_in_alias_order() -> None:
    value = format_cookie({"work": K3, "1": K2, "0": K1, "10": K1, "2": K2})
    assert value == f"0.{K1}~1.{K2}~2.{K2}~10.{K1}~work.{K3}"


def test_a_lone_non_default_alias_still_uses_pairs() -> None:
    assert format_cookie({"1": K2}) == f"1.{K2}"
    assert parse_cookie(f"1.{K2}") == {"1": K2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", {}),
        ("short", {}),
        (K1.upper(), {}),
        (f"0.{K1}~0.{K2}", {"0": K1}),  # first wins
        (f"0.{K1}~bad alias.{K2}", {"0": K1}),
        (f"0.{K1}~1.{K2[:-1]}X", {"0": K1}),
        (f"0.{K1}~~1.{K2}", {"0": K1, "1": K2}),
        (f"<script>.{K1}", {}),
        (f"{'a' * 51}.{K1}", {}),
        (f"0.{K1}.{K2}", {}),
        (f'"0.{K1}"', {}),
    ],
)
def test_hostile_and_broken_values(value: str, expected: dict[str, str]) -> None:
    assert parse_cookie(value) == expected


def test_a_huge_cookie_is_bounded() -> None:
    value = "~".join(f"{i}.{K1}" for i in range(1000))
    assert len(parse_cookie(value)) == 64


@pytest.mark.parametrize(
    ("alias", "valid"),
    [("0", True), ("work_2-b", True), ("a" * 50, True), ("a" * 51, False), ("", False),
     ("é", False), ("a b", False), ("a.b", False), ("a~b", False), ("<x>", False), (None, False)],
)  # fmt: skip
def test_alias_rule(alias: str | None, valid: bool) -> None:
    assert is_valid_alias(alias) is valid


def test_next_alias_is_the_first_unused_number() -> None:
    assert next_alias(set()) == "0"
    assert next_alias({"0"}) == "1"
    assert next_alias({"0", "1", "3", "work"}) == "2"


# Spring Session 1.x's CookieHttpSessionStrategy encodeURL cases (alias "2"
# unless the test is about the default), then ours.
SPRING_CASES = [
    ("/url", "2", "/url?_s=2"),  # no existing query
    ("/url?", "2", "/url?_s=2"),  # empty query
    ("/url?a=b", "2", "/url?a=b&_s=2"),  # query, no alias
    ("/url?_s=1&y=z", "2", "/url?y=z&_s=2"),  # existing alias at the start
    ("/url?a=b&_s=1&y=z", "2", "/url?a=b&y=z&_s=2"),  # in the middle
    ("/url?a=b&_s=1", "2", "/url?a=b&_s=2"),  # at the end
    ("/url?x_s=1&y=z", "2", "/url?x_s=1&y=z&_s=2"),  # x_s= is not _s=
    ("/url?a=b&x_s=1&y=z", "2", "/url?a=b&x_s=1&y=z&_s=2"),
    ("/url?a=b&x_s=1", "2", "/url?a=b&x_s=1&_s=2"),
    ("/url", "0", "/url"),  # the default alias adds nothing
    ("/url?a=b", "0", "/url?a=b"),
    ("/url?_s=1&y=z", "0", "/url?y=z"),  # ... and removes an existing one
    ("/url?a=b&_s=1&y=z", "0", "/url?a=b&y=z"),
    ("/url?a=b&_s=1", "0", "/url?a=b"),
    ("/url?_s=1", "0", "/url"),
    ("/url?a=b&_s=", "2", "/url?a=b&_s=2"),  # an empty value is replaced
    ("/url?a=b&x_s=1", "0", "/url?a=b&x_s=1"),
]
OUR_CASES = [
    ("/inbox#top", "3", "/inbox?_s=3#top"),  # fragments are kept
    ("/inbox?_s=1#a?b&_s=2", "0", "/inbox#a?b&_s=2"),  # ... untouched
    ("/p?q=a%20b&r=c+d&flag", "1", "/p?q=a%20b&r=c+d&flag&_s=1"),  # byte for byte
    ("/p?%5Fs=9&a=1", "1", "/p?a=1&_s=1"),  # an encoded _s is still _s
    ("https://example.com/x?y=1", "w-2", "https://example.com/x?y=1&_s=w-2"),
    ("", "1", "?_s=1"),
    ("/p?a=1&&b=2", "1", "/p?a=1&&b=2&_s=1"),  # empty segments are kept too
    ("/p?a=1&&_s=3&b", "0", "/p?a=1&&b"),
    ("/p?&_s=1", "2", "/p?&_s=2"),
]
MALICIOUS = ['"><script>alert(1)</script>', "1&admin=true", "a b", "é", "1#frag", "x" * 51]


@pytest.mark.parametrize(("url", "alias", "expected"), SPRING_CASES + OUR_CASES)
def test_encode_url(url: str, alias: str, expected: str) -> None:
    assert encode_url(url, "_s", alias) == expected


@pytest.mark.parametrize("alias", MALICIOUS)
def test_a_malicious_alias_is_never_reflected(alias: str) -> None:
    # Not a valid alias: treated as the default, so it is removed, not added.
    assert encode_url("/url?a=b&_s=1", "_s", alias) == "/url?a=b"
    assert alias not in encode_url("/url", "_s", alias)


@pytest.mark.parametrize(("alias", "expected"), [(2, "/x?_s=2"), (0, "/x"), (-1, "/x")])
def test_an_int_alias_is_its_decimal_form(alias: int, expected: str) -> None:
    assert encode_url("/x", "_s", alias) == expected


def test_the_default_alias_can_be_written_out() -> None:
    assert encode_url("/x?_s=1", "_s", "0", explicit_default=True) == "/x?_s=0"
    assert encode_url("/x", "_s", 0, explicit_default=True) == "/x?_s=0"


def test_a_custom_parameter_name() -> None:
    assert encode_url("/u?_s=1", "account", "2") == "/u?_s=1&account=2"
    assert DEFAULT_ALIAS == "0"

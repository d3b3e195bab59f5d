"""The machinery of ``make peer`` (tests/peer/): its list, its verdict and its
substitution of session_ng's middleware for Django's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.signals import setting_changed
from django.test import modify_settings, override_settings

from tests.peer.run import SUITES, Run, expected_failures, judge, labels
from tests.peer.runner import DJANGO_MIDDLEWARE, SESSION_NG_MIDDLEWARE, substitute_on_change

# Nothing here talks to Redis: once is enough.
pytestmark = pytest.mark.standalone

LIST = """\
# a comment

a_tests.tests.T.test_everywhere -- reason one
a_tests.tests.T.test_on_6 6.0 -- reason two
a_tests.tests.T.test_on_both 5.2 6.0 -- reason -- with a dash
a_tests.tests.T.test_on_any_6 6 -- reason three
"""


def test_the_list_applies_entries_to_their_django_lines() -> None:
    assert expected_failures(LIST, "5.2") == {
        "a_tests.tests.T.test_everywhere": "reason one",
        "a_tests.tests.T.test_on_both": "reason -- with a dash",
    }
    assert set(expected_failures(LIST, "6.0")) == {
        "a_tests.tests.T.test_everywhere",
        "a_tests.tests.T.test_on_6",
        "a_tests.tests.T.test_on_both",
        "a_tests.tests.T.test_on_any_6",
    }
    assert set(expected_failures(LIST, "6.1")) == {
        "a_tests.tests.T.test_everywhere",
        "a_tests.tests.T.test_on_any_6",
    }


@pytest.mark.parametrize("line", ["a_tests.tests.T.test_x", "a_tests.tests.T.test_x --  "])
def test_an_entry_without_a_reason_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="2: no ' -- <reason>'"):
        expected_failures(f"# header\n{line}\n")


@pytest.mark.parametrize("django_line", ["5.2", "6.0", "6.1"])
def test_the_checked_in_list_names_tests_of_the_suites_run(django_line: str) -> None:
    for test in expected_failures(None, django_line):
        assert test.split(".")[0] in SUITES


def run(**outcomes: str) -> Run:
    return Run("x", {name.replace("_", "."): o for name, o in outcomes.items()}, 0.0, Path("x"))


def test_the_verdict_is_exact() -> None:
    ours = run(a_1="failure", a_2="error", a_3="success", a_4="skip", a_5="unexpected success")
    listed = {"a.1": "why", "a.3": "why", "a.6": "why"}
    assert judge(ours, None, listed) == [
        "fails with session_ng, not listed: a.2 (error)",
        "fails with session_ng, not listed: a.5 (unexpected success)",
        "listed, but success with session_ng: a.3",
        "listed, but not run with session_ng: a.6",
    ]
    assert judge(run(a_1="failure"), None, {"a.1": "why"}) == []


def test_with_the_cache_engine_beside_it_a_failure_of_ours_alone_is_named() -> None:
    ours = run(a_1="failure", a_2="failure")
    cache = run(a_1="failure", a_2="success")
    assert judge(ours, cache, {"a.1": "why"}) == [
        "fails with session_ng, not listed: a.2 (failure)",
        "passes with the cache engine only: a.2",
    ]


@pytest.fixture
def substitution() -> Iterator[None]:
    setting_changed.connect(substitute_on_change, dispatch_uid="test.substitute")
    yield
    setting_changed.disconnect(dispatch_uid="test.substitute")


def current() -> list[str]:
    return list(settings.MIDDLEWARE)


def test_django_s_middleware_is_replaced_wherever_middleware_is_set(substitution: None) -> None:
    before = current()
    chain = ["django.middleware.common.CommonMiddleware", DJANGO_MIDDLEWARE, "x.Y"]
    replaced = [chain[0], SESSION_NG_MIDDLEWARE, "x.Y"]
    with override_settings(MIDDLEWARE=chain):
        assert current() == replaced
        with modify_settings(MIDDLEWARE={"append": DJANGO_MIDDLEWARE}):
            assert current() == [*replaced, SESSION_NG_MIDDLEWARE]
        assert current() == replaced
        with override_settings(MIDDLEWARE=("a.B",)):
            assert current() == ["a.B"]
    assert current() == before
    assert chain[1] == DJANGO_MIDDLEWARE  # the test's own list is left alone


def test_a_suite_with_a_module_left_out_is_named_by_its_other_modules(tmp_path: Path) -> None:
    for name in ("test_views.py", "test_hashers.py", "test_basic.py", "models.py", "urls.py"):
        (tmp_path / "auth_tests").mkdir(exist_ok=True)
        (tmp_path / "auth_tests" / name).touch()
    found = labels(tmp_path, {"auth_tests.test_hashers"})
    assert found[:3] == ["sessions_tests", "auth_tests.test_basic", "auth_tests.test_views"]
    assert found[3:] == [s for s in SUITES if s not in ("sessions_tests", "auth_tests")]
    assert labels(tmp_path, set()) == list(SUITES)

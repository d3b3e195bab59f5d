"""Each system check id, triggered by the setting it is about."""

from __future__ import annotations

import pytest
from django.core.checks import Error, Warning

from session_ng.checks import check_serializer, check_settings

REDIS = {"REDIS_URL": "redis://127.0.0.1:6379/0"}


def test_valid_settings_pass(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = REDIS
    assert check_settings() == []


@pytest.mark.parametrize(
    "extra",
    [
        {"WEBSOCKET_CLOSE_CODE": 1000},
        {"WEBSOCKET_CLOSE_CODE": 1008},
        {"WEBSOCKET_CLOSE_CODE": 4999},
        {"WEBSOCKET_REFRESH_INTERVAL": 0},
        {"WEBSOCKET_REFRESH_INTERVAL": 2.5},
        {"WEBSOCKET_REFRESH_INTERVAL": None},
        {"RENEWAL_PERIOD": None},
        {"RENEWAL_PERIOD": 0},
        {"RENEWAL_PERIOD": 0.5},
        {"RENEWAL_PERIOD": 86400},
    ],
)
def test_edge_values_pass(settings, extra: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**REDIS, **extra}
    assert check_settings() == []


@pytest.mark.parametrize(
    ("session_ng", "expected"),
    [
        ("redis://x", ["session_ng.E001"]),
        ({**REDIS, "REDIS_ULR": "x"}, ["session_ng.E002"]),
        ({}, ["session_ng.E003"]),
        ({**REDIS, "CACHE_ALIAS": "default"}, ["session_ng.E003", "session_ng.E006"]),
        ({"REDIS_URL": "http://127.0.0.1"}, ["session_ng.E004"]),
        ({"CACHE_ALIAS": "nope"}, ["session_ng.E005"]),
        ({"CACHE_ALIAS": "default"}, ["session_ng.E006"]),
        ({**REDIS, "NAMESPACE": "a{b}"}, ["session_ng.E007"]),
        ({**REDIS, "NAMESPACE": ""}, ["session_ng.E007"]),
        ({**REDIS, "ID_RESOLVERS": ["cookie", "query"]}, ["session_ng.E008"]),
        ({**REDIS, "ID_RESOLVERS": []}, ["session_ng.E008"]),
        ({**REDIS, "ID_RESOLVERS": ["cookie", "cookie"]}, ["session_ng.E008"]),
        ({**REDIS, "MAX_ALIASES": 0}, ["session_ng.E009"]),
        ({**REDIS, "MAX_ALIASES": True}, ["session_ng.E009"]),
        ({**REDIS, "SOCKET_TIMEOUT": 0}, ["session_ng.E010"]),
        ({**REDIS, "HEADER_NAME": "X Auth"}, ["session_ng.E013"]),
        ({**REDIS, "HEADER_NAME": ""}, ["session_ng.E013"]),
        ({**REDIS, "ALIAS_PARAM": "a&b"}, ["session_ng.E014"]),
        ({**REDIS, "ALIAS_PARAM": ""}, ["session_ng.E014"]),
        ({**REDIS, "WEBSOCKET_CLOSE_CODE": "1008"}, ["session_ng.E015"]),
        ({**REDIS, "WEBSOCKET_CLOSE_CODE": 1006}, ["session_ng.E015"]),
        ({**REDIS, "WEBSOCKET_CLOSE_CODE": 999}, ["session_ng.E015"]),
        ({**REDIS, "WEBSOCKET_CLOSE_CODE": 5000}, ["session_ng.E015"]),
        ({**REDIS, "WEBSOCKET_CLOSE_CODE": True}, ["session_ng.E015"]),
        ({**REDIS, "WEBSOCKET_REFRESH_INTERVAL": -1}, ["session_ng.E016"]),
        ({**REDIS, "WEBSOCKET_REFRESH_INTERVAL": "5"}, ["session_ng.E016"]),
        ({**REDIS, "WEBSOCKET_REFRESH_INTERVAL": float("nan")}, ["session_ng.E016"]),
        ({**REDIS, "RENEWAL_PERIOD": -1}, ["session_ng.E018"]),
        ({**REDIS, "RENEWAL_PERIOD": "60"}, ["session_ng.E018"]),
        ({**REDIS, "RENEWAL_PERIOD": True}, ["session_ng.E018"]),
        ({**REDIS, "RENEWAL_PERIOD": float("inf")}, ["session_ng.E018"]),
        ({**REDIS, "RENEWAL_PERIOD": 86401}, ["session_ng.E018"]),
    ],
)
def test_each_error_id(settings, session_ng: object, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = session_ng
    messages = check_settings()
    assert [m.id for m in messages] == expected
    assert all(isinstance(m, Error) for m in messages)


def test_cluster_with_cache_alias_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "s": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1/0"},
    }
    settings.SESSION_NG = {"CACHE_ALIAS": "s", "CLUSTER": True}
    assert [m.id for m in check_settings()] == ["session_ng.E011"]


def test_cluster_with_a_url_is_accepted(settings) -> None:  # type: ignore[no-untyped-def]
    # E012 refused it while saves still touched several slots in one script;
    # the id is retired, not reused.
    settings.SESSION_NG = {**REDIS, "CLUSTER": True}
    assert check_settings() == []


def test_e004_a_list_of_urls_only_for_a_cluster(settings) -> None:  # type: ignore[no-untyped-def]
    nodes = ["redis://10.0.0.1:7000/0", "redis://10.0.0.2:7000/0"]
    settings.SESSION_NG = {"REDIS_URL": nodes, "CLUSTER": True}
    assert check_settings() == []
    settings.SESSION_NG = {"REDIS_URL": nodes}
    assert [m.id for m in check_settings()] == ["session_ng.E004"]
    settings.SESSION_NG = {"REDIS_URL": [nodes[0], "http://nope"], "CLUSTER": True}
    assert [m.id for m in check_settings()] == ["session_ng.E004"]


def test_w001_when_the_engine_is_not_session_ng(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = REDIS
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.db"
    (message,) = check_settings()
    assert isinstance(message, Warning)
    assert message.id == "session_ng.W001"


def test_bad_settings_refuse_to_connect(settings) -> None:  # type: ignore[no-untyped-def]
    from session_ng.backends.redis import SessionStore
    from session_ng.exceptions import SessionNgImproperlyConfigured

    settings.SESSION_NG = {"REDIS_URL": "http://nope"}
    with pytest.raises(SessionNgImproperlyConfigured, match="redis://"):
        SessionStore("e" * 32).load()


def test_w002_when_both_middlewares_are_installed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = REDIS
    settings.MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "session_ng.middleware.SessionMiddleware",
    ]
    (message,) = check_settings()
    assert message.id == "session_ng.W002"


def test_alias_param_none_turns_aliases_off(settings) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = {**REDIS, "ALIAS_PARAM": None}
    assert check_settings() == []


def test_w003_when_redis_does_not_publish_the_events(settings) -> None:  # type: ignore[no-untyped-def]
    from harness.redis_server import RedisServer
    from session_ng.checks import check_keyspace_notifications

    with RedisServer() as bare:  # notify-keyspace-events is "" by default
        settings.SESSION_NG = {"REDIS_URL": bare.url}
        (message,) = check_keyspace_notifications()
        assert message.id == "session_ng.W003"
        assert "does not publish expired and del keyspace events" in message.msg
    with RedisServer("--notify-keyspace-events", "KEA") as ready:
        settings.SESSION_NG = {"REDIS_URL": ready.url}
        assert check_keyspace_notifications() == []


def test_w004_when_redis_cannot_be_reached(settings) -> None:  # type: ignore[no-untyped-def]
    from harness.redis_server import free_port
    from session_ng.checks import check_keyspace_notifications

    settings.SESSION_NG = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "SOCKET_TIMEOUT": 0.5}
    (message,) = check_keyspace_notifications()
    assert message.id == "session_ng.W004"


def test_deploy_checks_do_not_run_by_default() -> None:
    from django.core.checks import registry

    assert "check_keyspace_notifications" not in {
        check.__name__ for check in registry.registry.get_checks(include_deployment_checks=False)
    }


def cookie_check_ids() -> list[str]:
    """The ids of every session-cookie deployment check, Django's and ours."""
    from django.core.checks import Tags, run_checks

    messages = run_checks(tags=[Tags.security], include_deployment_checks=True)
    return sorted(str(m.id) for m in messages if m.id in COOKIE_CHECK_IDS)


COOKIE_CHECK_IDS = {
    *(f"security.W0{n}" for n in range(10, 16)),
    "session_ng.W012",
    "session_ng.W015",
}


@pytest.fixture
def without_django_sessions(settings):  # type: ignore[no-untyped-def]
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django.contrib.sessions"]
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if "SessionMiddleware" not in m] + [
        "session_ng.middleware.SessionMiddleware"
    ]
    return settings


def test_w012_an_insecure_cookie_without_django_sessions(without_django_sessions) -> None:  # type: ignore[no-untyped-def]
    without_django_sessions.SESSION_COOKIE_SECURE = False
    assert cookie_check_ids() == ["session_ng.W012"]
    without_django_sessions.SESSION_COOKIE_SECURE = True
    assert cookie_check_ids() == []


def test_w015_a_script_readable_cookie_without_django_sessions(without_django_sessions) -> None:  # type: ignore[no-untyped-def]
    without_django_sessions.SESSION_COOKIE_SECURE = True
    without_django_sessions.SESSION_COOKIE_HTTPONLY = False
    assert cookie_check_ids() == ["session_ng.W015"]


def test_with_django_sessions_installed_only_djangos_checks_say_it(settings) -> None:  # type: ignore[no-untyped-def]
    assert "django.contrib.sessions" in settings.INSTALLED_APPS
    settings.SESSION_COOKIE_SECURE = False
    settings.SESSION_COOKIE_HTTPONLY = False
    assert cookie_check_ids() == ["security.W010", "security.W013"]


def test_with_djangos_middleware_only_djangos_checks_say_it(without_django_sessions) -> None:  # type: ignore[no-untyped-def]
    without_django_sessions.MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
    without_django_sessions.SESSION_COOKIE_SECURE = False
    assert cookie_check_ids() == ["security.W011"]


@pytest.mark.parametrize(
    "serializer",
    [
        "django_redis.serializers.pickle.PickleSerializer",
        "tests.unsafe_codec.UnsafeSerializer",
    ],
)
def test_a_serializer_that_can_run_code_is_warned_about(settings, serializer: str) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = REDIS
    settings.SESSION_SERIALIZER = serializer
    (warning,) = check_serializer()
    assert isinstance(warning, Warning)
    assert warning.id == "session_ng.W020"
    assert serializer in warning.msg


@pytest.mark.parametrize(
    "serializer",
    [
        "django.core.signing.JSONSerializer",
        "tests.serializers.UpperJSONSerializer",
        "django_redis.serializers.json.JSONSerializer",
    ],
)
def test_serializers_that_only_build_data_pass(settings, serializer: str) -> None:  # type: ignore[no-untyped-def]
    settings.SESSION_NG = REDIS
    settings.SESSION_SERIALIZER = serializer
    assert check_serializer() == []


def test_the_serializer_warning_is_part_of_manage_py_check(settings) -> None:  # type: ignore[no-untyped-def]
    from django.core.checks import run_checks

    settings.SESSION_NG = REDIS
    settings.SESSION_SERIALIZER = "tests.unsafe_codec.UnsafeSerializer"
    assert "session_ng.W020" in [m.id for m in run_checks()]

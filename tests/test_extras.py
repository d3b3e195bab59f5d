"""The optional extras in setup.cfg bring what the docs say they bring."""

from __future__ import annotations

import configparser
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def extra(name: str) -> list[str]:
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    return config["options.extras_require"][name].split()


def test_the_channels_extra_brings_a_channel_layer() -> None:
    # Sockets are closed on a session's end through a channel layer shared
    # by every process (docs/channels.rst): Channels alone has none that is.
    assert extra("channels") == ["channels>=4", "channels-redis>=4.2"]


def test_a_django_redis_extra_for_cache_alias() -> None:
    assert extra("django-redis") == ["django-redis>=6"]

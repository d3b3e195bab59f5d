"""The chat end to end: testproject under daphne, the worker, a real websocket client.

Both processes use testproject's settings (channels_redis on the suite's
redis-server), so a session ending in one process closes a socket held by
another, as it would on a site with several servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from harness.redis_server import RedisServer, free_port
from session_ng import keys
from session_ng.backends.redis import SessionStore

ROOT = Path(__file__).resolve().parent.parent
IDLE = 3  # the chat page's idle timeout in these tests, seconds
# Daphne (Autobahn) refuses close code 1008 from applications; the mixin then
# closes with 4008, the same meaning in the private-use range.
ENDED = 4008

pytestmark = pytest.mark.slow


@dataclass
class Site:
    port: int
    daphne: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    logs: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


def _wait_for(predicate: Any, timeout: float, what: str, site_logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    logs = "".join(p.read_text(errors="replace") for p in site_logs.glob("*.log"))
    raise AssertionError(f"{what} within {timeout}s; logs:\n{logs}")


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/session/", timeout=1).read()
    except (urllib.error.URLError, OSError):
        return False
    return True


@pytest.fixture(scope="module")
def site(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    logs = tmp_path_factory.mktemp("chat-site")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "REDIS_URL": redis_server.url,
        "DJANGO_DB": str(logs / "db.sqlite3"),
        "DEMO_CHAT_IDLE_SECONDS": str(IDLE),
        "DJANGO_DEBUG": "0",
        # RFC 6455's code, which daphne refuses: the mixin's stand-in is tested here.
        "DEMO_WEBSOCKET_CLOSE_CODE": "1008",
    }
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    port = free_port()
    with open(logs / "daphne.log", "wb") as out, open(logs / "worker.log", "wb") as wout:
        daphne = subprocess.Popen(
            [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "testproject.asgi:application"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        worker = subprocess.Popen(
            [python, "manage.py", "session_ng_worker", "--sweep-interval", "0.2"],
            cwd=ROOT, env=env, stdout=wout, stderr=subprocess.STDOUT,
        )  # fmt: skip
    site = Site(port, daphne, worker, logs)
    try:
        _wait_for(lambda: _answers(port), 30, "daphne did not answer", logs)
        _wait_for(lambda: "listening on db" in site.log(), 30, "the worker did not listen", logs)
        yield site
    finally:
        print(site.log())  # shown by pytest when a test of the module failed
        for process in (daphne, worker):
            process.terminate()
        for process in (daphne, worker):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def request(
    site: Site, path: str, token: str | None = None, data: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One HTTP request as a REST client: the session id in X-Auth-Token."""
    body = "&".join(f"{k}={v}" for k, v in data.items()).encode() if data is not None else None
    req = urllib.request.Request(site.http + path, data=body)
    req.add_header("X-Auth-Token", token or "")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, {}, dict(error.headers)


def login(site: Site, username: str = "alice") -> str:
    status, body, headers = request(
        site, "/api/login/", data={"username": username, "password": f"{username}-password"}
    )
    assert (status, body) == (200, {"user": username}), site.log()
    token = headers["X-Auth-Token"]
    return token


def open_chat_page(site: Site, key: str) -> None:
    """GET /chat/ with the session cookie: it puts the session on IDLE seconds."""
    req = urllib.request.Request(site.http + "/chat/")
    req.add_header("Cookie", f"sessionid={key}")
    with urllib.request.urlopen(req, timeout=10) as response:
        page = response.read().decode()
    assert f"a {IDLE}-second idle timeout" in page


async def chat(site: Site, key: str) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{site.port}/ws/chat/",
        additional_headers={"Cookie": f"sessionid={key}", "Origin": site.http},
        open_timeout=10,
    )
    assert json.loads(await ws.recv()) == {"type": "hello", "user": "alice"}
    return ws


async def close_code(ws: ClientConnection, within: float) -> int | None:
    """Wait for the server to close the socket; its close code."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except TimeoutError:
        return None
    except ConnectionClosed:
        pass
    assert ws.close_code is not None
    return ws.close_code


async def test_chatting_keeps_the_session_and_logout_elsewhere_closes_it(
    site: Site, r: redis.Redis
) -> None:
    key = await asyncio.to_thread(login, site)
    await asyncio.to_thread(open_chat_page, site, key)
    ws = await chat(site, key)
    # Twice the idle timeout, talking every 0.5 s: the session stays.
    for i in range(4 * IDLE):
        await ws.send(json.dumps({"text": f"line {i}"}))
        assert json.loads(await ws.recv()) == {
            "type": "message",
            "user": "alice",
            "text": f"line {i}",
        }
        await asyncio.sleep(0.5)
    status, body, _ = await asyncio.to_thread(request, site, "/api/session/", key)
    assert body["user"] == "alice"
    # Logout in "another tab" (another client, same session): the socket closes now.
    started = time.monotonic()
    status, body, _ = await asyncio.to_thread(request, site, "/api/logout/", key, {})
    assert (status, body) == (200, {"user": None})
    assert await close_code(ws, within=5) == ENDED
    assert time.monotonic() - started < 5
    assert "refused websocket close code 1008" in site.log()


async def test_going_silent_logs_out_and_the_worker_closes_the_chat(
    site: Site, r: redis.Redis
) -> None:
    key = await asyncio.to_thread(login, site)
    await asyncio.to_thread(open_chat_page, site, key)
    ws = await chat(site, key)
    started = time.monotonic()
    # Nothing sent: the session expires after IDLE s; the worker reports it
    # (session_expired) and the socket, held by daphne, closes.
    assert await close_code(ws, within=IDLE + 15) == ENDED
    assert time.monotonic() - started >= IDLE - 0.5
    assert r.exists(keys.session_shadow("session_ng", key)) == 0
    _, body, _ = await asyncio.to_thread(request, site, "/api/session/", key)
    assert body["user"] is None


async def test_an_idle_chat_stays_open_longer_than_redis_pys_socket_timeout(site: Site) -> None:
    # redis-py 8 reads with a 5 s socket timeout by default, and channels_redis
    # waits for a socket's next message with a blocking read of 5 s: on an
    # idle socket the two race, and the consumer died (1011) after about 6 s.
    key = await asyncio.to_thread(login, site)  # the default idle timeout
    ws = await chat(site, key)
    assert await close_code(ws, within=8) is None
    await ws.send(json.dumps({"text": "still here"}))
    assert json.loads(await ws.recv()) == {"type": "message", "user": "alice", "text": "still here"}
    await ws.close()
    assert ws.close_code == 1000
    assert "TimeoutError" not in site.log()


async def test_a_delete_in_another_process_closes_the_socket(
    site: Site, redis_server: RedisServer, settings: Any
) -> None:
    # This test process is a third server of the site: same Redis, same layer.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_server.url], "prefix": "testproject:channels"},
        }
    }
    key = await asyncio.to_thread(login, site)
    ws = await chat(site, key)
    other = await chat(site, await asyncio.to_thread(login, site))
    await SessionStore(key).adelete()  # e.g. an admin's "sign out everywhere"
    assert await close_code(ws, within=5) == ENDED
    # The other session's socket is untouched.
    await other.send(json.dumps({"text": "still here"}))
    assert json.loads(await other.recv())["text"] == "still here"
    await other.close()
    assert isinstance(other.close_code, int)


def test_the_chat_page_in_two_tabs_of_a_real_browser(site: Site) -> None:
    """The demo's promise, in Chromium: chat in one tab, sign out in the other,
    and the chat says the session ended."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM_FLAGS, chromium_path

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = browser.new_context()  # one profile: both tabs share the cookie
            chat = context.new_page()
            chat.goto(site.http + "/login/")
            chat.get_by_label("Username").fill("alice")
            chat.get_by_label("Password").fill("alice-password")
            chat.get_by_role("button", name="Sign in").click()
            expect(chat.locator("#who")).to_have_text("alice")
            chat.goto(site.http + "/chat/")
            expect(chat.locator("#status")).to_have_text("connected")
            chat.locator("#text").fill("hello from a tab")
            chat.locator("#send").click()
            expect(chat.locator("#messages li")).to_have_text(["alice: hello from a tab"])

            other_tab = context.new_page()
            other_tab.goto(site.http + "/")
            other_tab.click("#account-chooser summary")
            other_tab.locator("#logout").click()
            expect(other_tab.locator("#who")).to_have_text("not signed in")

            expect(chat.locator("#status")).to_have_text(
                "closed: your session ended (code 4008)", timeout=5000
            )
            expect(chat.locator("#send")).to_be_disabled()
        finally:
            browser.close()

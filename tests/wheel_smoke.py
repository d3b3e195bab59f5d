"""``make smoke``: session_ng as pip users get it, from its wheel.

Run by the Makefile with the Python of a clean virtualenv that holds only the
wheel (installed non-editable) and Django, from a directory outside the
repository, so that nothing of the checkout can be imported by mistake. A tiny
project configured in this process passes ``check`` and makes a session round
trip through the middleware on a private Redis. Not collected by pytest (its
name does not start with ``test_``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if not binary:
        sys.exit("the smoke test needs redis-server on PATH, or REDIS_SERVER")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="session-ng-smoke-")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not start")


def main() -> None:
    import session_ng

    where = Path(session_ng.__file__).resolve()
    assert "site-packages" in where.parts, f"session_ng imported from {where}, not the wheel"
    process, url = start_redis()
    try:
        run(url)
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"wheel smoke test passed: session_ng {session_ng.__version__} from {where.parent}")


def run(url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="smoke-test-only",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "session_ng",
        ],
        MIDDLEWARE=["session_ng.middleware.SessionMiddleware"],
        ROOT_URLCONF=__name__,
        SESSION_ENGINE="session_ng.backends.redis",
        SESSION_NG={"REDIS_URL": url},
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command
    from django.http import HttpRequest, HttpResponse
    from django.test import Client
    from django.urls import path

    def count(request: HttpRequest) -> HttpResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return HttpResponse(str(request.session["n"]))

    globals()["urlpatterns"] = [path("count/", count)]
    call_command("check", fail_level="WARNING")
    client = Client()
    assert client.get("/count/").content == b"1"
    assert client.get("/count/").content == b"2"
    key = client.cookies["sessionid"].value
    import redis

    stored = redis.Redis.from_url(url).hget(f"session_ng:sessions:{{{key}}}", ".n")
    assert stored == b"2", stored


if __name__ == "__main__":
    main()

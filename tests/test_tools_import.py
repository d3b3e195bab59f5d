"""Every module of the measurement tree (``bench/``, ``bench/loadtest/`` included) imports.

CI runs none of the measurements (they take minutes and want a quiet machine),
so without this a renamed or removed name in session_ng would break ``make
bench`` or ``make loadtest`` unnoticed. Each module is imported in a fresh
interpreter, with the Django settings its tool runs it under: ``bench``'s
``settings.configure()`` (nothing connects to the Redis URL it names), the load
test's settings module, or testproject's for the websocket app that daphne
serves.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import bench

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(["bench", *(m.name for m in pkgutil.walk_packages(bench.__path__, "bench."))])
# Modules that name their own settings module (a server imports them first).
SETTINGS_MODULE = {
    "bench.ws_app": "testproject.settings",
    "bench.loadtest": "bench.loadtest.settings",
}
CONFIGURED = """\
import importlib, sys
from pathlib import Path
from bench.settings import configure
configure("redis://127.0.0.1:1/0", 1, Path(sys.argv[2]) / "bench.sqlite3")
importlib.import_module(sys.argv[1])
"""
PLAIN = "import importlib, sys; importlib.import_module(sys.argv[1])"


def settings_module(name: str) -> str | None:
    for prefix, module in SETTINGS_MODULE.items():
        if name == prefix or name.startswith(prefix + "."):
            return module
    return None


def test_the_tree_is_found() -> None:
    assert {"bench.__main__", "bench.growth", "bench.loadtest.__main__"} <= set(MODULES)


# No Redis is involved: the standalone pass is enough.
@pytest.mark.standalone
@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_it_imports(name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    module = settings_module(name)
    if module is not None:
        env["DJANGO_SETTINGS_MODULE"] = module
    code = PLAIN if module is not None else CONFIGURED
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code, name, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"import {name} failed:\n{done.stderr}"

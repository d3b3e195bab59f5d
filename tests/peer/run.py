"""Run Django's session-related suites with session_ng in Django's place.

``python -m tests.peer`` (part of ``make test``) extracts the installed
Django's test suite from its sdist into ``.cache/``, starts a private
redis-server, runs Django's ``runtests.py`` on SUITES with session_ng's engine
and middleware (tests/peer/settings.py, tests/peer/runner.py), and fails
unless the tests that fail are exactly those listed in
tests/peer/expected_failures.txt for this Django line: an unlisted failure,
or a listed test that passes, fails the run.

``--compare`` also runs the suites with Django's cache engine (and Django's
middleware) on a redis-server of its own and prints both, suite by suite; it
then also fails if a test passes with the cache engine and fails with
session_ng without being listed. Logs and outcomes: .cache/peer-logs/<version>/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django

from harness.redis_server import RedisServer
from tests.django_sdist import ROOT, django_sdist
from tests.peer.runner import DJANGO_MIDDLEWARE, SESSION_NG_MIDDLEWARE

SUITES = (
    "sessions_tests",
    "auth_tests",
    "test_client",
    "test_client_regress",
    "messages_tests",
    "csrf_tests",
    "admin_checks",
    "check_framework",
)
# Test modules left out of the run unless --all: they never touch a session,
# and would make the run much slower.
LEFT_OUT = {
    # Password hashing at full work factors: about a minute of one process's
    # time on Django 6.1, the rest of the eight suites taking about as long.
    "auth_tests.test_hashers",
}
DJANGO_LINE = "{}.{}".format(*django.VERSION[:2])
TREE = ROOT / ".cache" / "django-tests" / django.__version__ / "suite"
EXPECTED = Path(__file__).with_name("expected_failures.txt")
FAILED = ("failure", "error", "unexpected success")


@dataclass
class Run:
    engine: str
    outcomes: dict[str, str]
    seconds: float
    log: Path

    def failed(self) -> set[str]:
        return {test for test, outcome in self.outcomes.items() if outcome in FAILED}


def suite_tree() -> Path:
    """Django's ``tests/`` directory of the installed version, runtests.py in it."""
    runtests = TREE / "tests" / "runtests.py"
    if not runtests.exists():
        TREE.parent.mkdir(parents=True, exist_ok=True)
        # Extract beside the tree and move in only a complete one.
        with tempfile.TemporaryDirectory(dir=TREE.parent) as tmp:
            with tarfile.open(django_sdist()) as archive:
                members = []
                for member in archive.getmembers():
                    parts = Path(member.name).parts
                    if len(parts) >= 2 and parts[1] in ("tests", "LICENSE"):
                        member.name = str(Path(*parts[1:]))
                        members.append(member)
                archive.extractall(tmp, members=members, filter="data")
            TREE.mkdir(parents=True, exist_ok=True)
            for name in ("tests", "LICENSE"):
                (Path(tmp) / name).rename(TREE / name)
    if not runtests.exists():
        raise RuntimeError(f"Django {django.__version__}'s sdist has no tests/runtests.py")
    return runtests


def expected_failures(text: str | None = None, django_line: str = DJANGO_LINE) -> dict[str, str]:
    """test id -> reason, for this Django line (from EXPECTED unless ``text``).

    A line is ``<test id> [<Django line> ...] -- <reason>``, a Django line
    being ``5.2`` or a whole major version, ``6``; without Django lines it
    applies to every line.
    """
    expected = {}
    text = EXPECTED.read_text() if text is None else text
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        head, sep, reason = line.partition(" -- ")
        if not sep or not reason.strip():
            raise ValueError(f"{EXPECTED.name}:{number}: no ' -- <reason>'")
        test, *lines = head.split()
        major = django_line.split(".")[0]
        if not lines or django_line in lines or major in lines:
            expected[test] = reason.strip()
    return expected


def labels(tests_dir: Path, left_out: set[str]) -> list[str]:
    """runtests.py's labels: each suite, or its test modules but those left out."""
    found = []
    for suite in SUITES:
        if not any(module.startswith(f"{suite}.") for module in left_out):
            found.append(suite)
            continue
        modules = sorted(path.stem for path in (tests_dir / suite).glob("test*.py"))
        found += [f"{suite}.{m}" for m in modules if f"{suite}.{m}" not in left_out]
    return found


def run_suites(engine: str, redis_url: str, parallel: int, logs: Path, left_out: set[str]) -> Run:
    runtests = suite_tree()
    with tempfile.NamedTemporaryFile(suffix=".json") as results:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PEER_ENGINE": engine,
            "PEER_REDIS_URL": redis_url,
            "PEER_RESULTS": results.name,
        }
        log = logs / f"{engine}.log"
        started = time.monotonic()
        with log.open("w") as out:
            subprocess.run(
                [
                    sys.executable, str(runtests), "--settings=tests.peer.settings",
                    f"--parallel={parallel}", "--noinput",
                    *labels(runtests.parent, left_out),
                ],
                cwd=runtests.parent, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        seconds = time.monotonic() - started
        text = Path(results.name).read_text()
    if not text:
        raise RuntimeError(f"runtests.py recorded no results with the {engine} engine: see {log}")
    (logs / f"{engine}.json").write_text(text)
    recorded = json.loads(text)
    check_setup(engine, recorded)
    return Run(engine, recorded["outcomes"], seconds, log)


def check_setup(engine: str, recorded: dict[str, Any]) -> None:
    """Fail loudly unless the suites ran with the engine and middleware meant."""
    middleware = recorded["middleware"]
    if engine == "session_ng":
        expected = (
            recorded["engine"] == "session_ng.backends.redis"
            and SESSION_NG_MIDDLEWARE in middleware
            and DJANGO_MIDDLEWARE not in middleware
            and recorded["session_ng_installed"]
        )
    else:
        expected = (
            recorded["engine"] == "django.contrib.sessions.backends.cache"
            and DJANGO_MIDDLEWARE in middleware
            and not recorded["session_ng_installed"]
        )
    if not expected:
        raise RuntimeError(f"the {engine} run did not start as meant: {recorded}")


def suite_of(test: str) -> str:
    return test.split(".", 1)[0]


def table(runs: list[Run]) -> str:
    """Tests run, failed and skipped per suite, one column per engine."""
    header = f"{'suite':22}" + "".join(f"{run.engine + ' run/failed/skipped':>32}" for run in runs)
    lines = [header]
    for suite in [*SUITES, "total"]:
        cells = ""
        for run in runs:
            mine = {t: o for t, o in run.outcomes.items() if suite in ("total", suite_of(t))}
            counts = Counter("skip" if o == "skip" else "run" for o in mine.values())
            failed = len(run.failed() & set(mine))
            cell = f"{counts['run']}/{failed}/{counts['skip']}"
            cells += f"{cell:>32}"
        lines.append(f"{suite:22}{cells}")
    lines.append(f"{'seconds':22}" + "".join(f"{run.seconds:>32.1f}" for run in runs))
    return "\n".join(lines)


def judge(ours: Run, reference: Run | None, expected: dict[str, str]) -> list[str]:
    problems = []
    failed = ours.failed()
    for test in sorted(failed - set(expected)):
        problems.append(f"fails with session_ng, not listed: {test} ({ours.outcomes[test]})")
    for test in sorted(set(expected) - failed):
        outcome = ours.outcomes.get(test, "not run")
        problems.append(f"listed, but {outcome} with session_ng: {test}")
    if reference is not None:
        for test in sorted(failed - reference.failed() - set(expected)):
            problems.append(f"passes with the cache engine only: {test}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.peer", description=__doc__)
    parser.add_argument("--compare", action="store_true", help="also run Django's cache engine")
    parser.add_argument("--all", action="store_true", help=f"also run {', '.join(LEFT_OUT)}")
    parser.add_argument(
        "--parallel", type=int, default=os.cpu_count() or 1, help="runtests.py processes"
    )
    args = parser.parse_args()
    # Forked test processes inherit the substitution (tests/peer/runner.py);
    # spawned ones would not.
    parallel = args.parallel if multiprocessing.get_start_method() == "fork" else 1
    logs = ROOT / ".cache" / "peer-logs" / django.__version__
    logs.mkdir(parents=True, exist_ok=True)
    expected = expected_failures()
    left_out = set() if args.all else LEFT_OUT
    # One fresh redis-server per run: neither engine sees the other's keys.
    with RedisServer().start() as server:
        ours = run_suites("session_ng", server.url, parallel, logs, left_out)
    reference = None
    if args.compare:
        with RedisServer().start() as server:
            reference = run_suites("cache", server.url, parallel, logs, left_out)
    runs = [ours] if reference is None else [ours, reference]
    print(f"Django {django.__version__}, {parallel} process(es); logs in {logs}")
    if left_out:
        print(f"Left out (--all runs them): {', '.join(sorted(left_out))}")
    print(table(runs))
    problems = judge(ours, reference, expected)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"OK: the {len(ours.failed())} failures are the ones listed in {EXPECTED.name}")
    return 1 if problems else 0

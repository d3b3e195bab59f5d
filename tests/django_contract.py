"""Django's own session tests (``tests/sessions_tests``), fetched at test time.

They ship in Django's sdist, not in the wheel (tests/django_sdist.py downloads
it). We keep only ``tests/sessions_tests`` (BSD-licensed, Django Software
Foundation) under ``.cache/``, and put it on ``sys.path``. Nothing of Django's
is committed here.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import django

from tests.django_sdist import ROOT, django_sdist

CACHE = ROOT / ".cache" / "django-tests" / django.__version__
PACKAGE = CACHE / "sessions_tests"


def ensure_sessions_tests() -> Path:
    """Make ``import sessions_tests`` work; fail loudly if it cannot."""
    if not (PACKAGE / "tests.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(django_sdist()) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) > 3 and parts[1:3] == ("tests", "sessions_tests"):
                    member.name = str(Path(*parts[2:]))
                    archive.extract(member, CACHE, filter="data")
                elif len(parts) == 2 and parts[1] == "LICENSE":
                    member.name = "DJANGO-LICENSE"
                    archive.extract(member, CACHE, filter="data")
        if not (PACKAGE / "tests.py").exists():
            raise RuntimeError(f"Django {django.__version__}'s sdist has no tests/sessions_tests")
    if str(CACHE) not in sys.path:
        sys.path.insert(0, str(CACHE))
    return PACKAGE

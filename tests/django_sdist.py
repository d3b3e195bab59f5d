"""The sdist of the installed Django version, downloaded at test time.

Django's own tests ship in its sdist, not in its wheel. ``pip download`` fetches
the sdist of exactly the installed version from the package index once into
``.cache/`` (git-ignored); nothing of Django's is committed here.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
SDIST_CACHE = ROOT / ".cache" / "django-sdist" / django.__version__


def django_sdist() -> Path:
    """The path of the installed Django's sdist; fail loudly if pip cannot get it."""
    found = sorted(SDIST_CACHE.glob("[Dd]jango-*.tar.gz"))
    if found:
        return found[0]
    SDIST_CACHE.mkdir(parents=True, exist_ok=True)
    # Download beside the cache and move in only a complete file, so an
    # interrupted download is not mistaken for the sdist next time.
    with tempfile.TemporaryDirectory(dir=SDIST_CACHE.parent) as tmp:
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--no-binary", ":all:", f"django=={django.__version__}", "-d", tmp,
            ],
            check=True,
        )  # fmt: skip
        (sdist,) = Path(tmp).glob("[Dd]jango-*.tar.gz")
        return sdist.rename(SDIST_CACHE / sdist.name)

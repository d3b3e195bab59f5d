"""Sphinx configuration for session_ng's documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html -q docs docs/_build/html``):
warnings are errors.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import django

# autodoc imports session_ng, which needs configured Django settings. Importing
# the engine does not connect to Redis, so no server is needed to build.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
django.setup()

import session_ng  # noqa: E402

project = "session_ng"
author = "session_ng contributors"
copyright = "session_ng contributors"
release = session_ng.__version__
version = release

# autodoc only: no extension that fetches anything over the network, so the
# build (and CI's `make docs`) works offline.
extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build"]
root_doc = "index"
language = "en"

html_theme = "furo"
html_title = f"session_ng {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False

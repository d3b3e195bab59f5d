"""Django's own session-related test suites, run with session_ng in place of
Django's session engine and middleware (``python -m tests.peer``; see
docs/development.rst, "Django's peer suites")."""

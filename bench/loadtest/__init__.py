"""``make loadtest``: testproject under gunicorn and wrk, session_ng against the cache engine.

See the "Under load" section of ``docs/benchmarks.rst``. Nothing here is part of
the session_ng package; the settings, views and URLs exist for the load test
only.
"""

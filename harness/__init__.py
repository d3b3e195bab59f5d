"""Private Redis servers for development: one ``redis-server``, a Cluster, a Sentinel set.

Dev-only (not in the wheel or the sdist). The test suite, ``bench/``, ``make demo``,
the Makefile and CI import it; it imports only the standard library and redis-py,
never the demo site or the tests. See docs/development.rst.
"""

"""``python -m bench``: session_ng against Django's session engines on one redis-server.

See docs/benchmarks.rst for what each figure means; ``__main__`` runs it all.
"""

"""Lua scripts, one atomic operation per file, loaded by ``session_ng.store``."""

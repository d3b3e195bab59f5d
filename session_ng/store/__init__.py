"""The only owner of Redis: everything session_ng stores, sends or reads there.

``client`` makes the clients; ``driver`` runs operations (and owns the Lua
scripts and the error policy); ``records`` is what a session looks like from
Python; ``sessions`` the request path's operations; ``expiry`` the sweep, the
event stream and the sweep lock; ``notify`` the server settings it relies on.
"""

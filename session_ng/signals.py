"""Session events. Every signal is sent with ``session_key``, ``user_id`` (the
logged-in user's id as a string, or None) and ``data`` (the session's
attributes, decoded, as they were at that moment); ``sender`` is the store
class for events a process caused itself.

Delivery (see docs/events.rst): ``session_created`` and ``session_deleted`` are
sent by the process that caused them, right after Redis confirmed the write,
once. ``session_expired`` can only be seen by ``manage.py session_ng_worker``.
``session_rotated`` is sent by the process that rotated the key, once.
"""

from django.dispatch import Signal

# A new session was stored (its first save). Not sent for a key rotation
# (login, cycle_key): that is the same session under a new key.
session_created = Signal()

# A session was ended on purpose: delete(), flush() (logout), or
# session_ng.api.delete_sessions(). ``data`` is what it held at the end.
session_deleted = Signal()

# A session's life ran out. Sent by the worker, which reads the data during
# the 300 s grace period the hash outlives the session by.
session_expired = Signal()

# A session's key was rotated (cycle_key(), as login does): ``session_key`` is
# the old key, which no longer exists, ``new_session_key`` the one its data
# lives on under now. Sockets bound to the old key are closed on it.
session_rotated = Signal()

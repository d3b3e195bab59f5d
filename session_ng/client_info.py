"""What the active-sessions list shows about a session: recorded at login.

``user_logged_in`` stores the browser's user agent, IP address and the time
of the sign-in in the session itself (attribute ``_session_ng_client``), so
they cost nothing extra to keep and vanish with the session.
"""

from __future__ import annotations

import time
from typing import Any

from django.http import HttpRequest

CLIENT_KEY = "_session_ng_client"
MAX_USER_AGENT = 300


def record_login(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    if request is None or not hasattr(request, "session"):
        return
    request.session[CLIENT_KEY] = {
        "ua": request.headers.get("User-Agent", "")[:MAX_USER_AGENT],
        "ip": request.META.get("REMOTE_ADDR", ""),
        "at": int(time.time()),  # epoch seconds
    }

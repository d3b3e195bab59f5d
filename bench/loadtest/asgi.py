"""The load test's ASGI application, for uvicorn: plain HTTP through Django.

Not testproject.asgi: that one puts Channels' router in front (the chat's
websockets), which the load test never uses; this is the ASGI twin of
testproject.wsgi, which gunicorn serves.
"""

import os
from pathlib import Path

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.loadtest.settings")
application = get_asgi_application()

# Each uvicorn worker imports this module itself: tell python -m bench.loadtest
# that this one is ready (bench.loadtest.servers waits for all of them).
_ready = os.environ.get("LOADTEST_READY_DIR")
if _ready:
    Path(_ready, str(os.getpid())).touch()

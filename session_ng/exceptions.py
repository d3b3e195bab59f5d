from django.core.exceptions import BadRequest, ImproperlyConfigured


class SessionStoreUnavailable(Exception):
    """Redis could not be reached or did not answer in time.

    Raised instead of pretending the session is empty: an unreachable store must
    never look like a logout. session_ng's middleware answers it with a 503.
    """


class SessionNgImproperlyConfigured(ImproperlyConfigured):
    pass


class TooManySessions(BadRequest):
    """A new session under a new alias would exceed ``MAX_ALIASES`` signed-in sessions.

    Raised by the store before anything is written, so no other account of the
    browser is dropped. A ``BadRequest``, as Django's ``SessionInterrupted`` is:
    Django renders it through the site's 400 handler (``handler400``,
    ``400.html``). Its message says what to do.
    """

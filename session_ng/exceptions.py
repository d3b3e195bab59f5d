from django.core.exceptions import ImproperlyConfigured


class SessionStoreUnavailable(Exception):
    """Redis could not be reached or did not answer in time.

    Raised instead of pretending the session is empty: an unreachable store must
    never look like a logout. session_ng's middleware answers it with a 503.
    """


class SessionNgImproperlyConfigured(ImproperlyConfigured):
    pass

from django.db import models


class SessionEvent(models.Model):
    """One received session_ng signal, for the demo's event log."""

    kind = models.CharField(max_length=16)
    # Only a prefix: a session key is a credential.
    session_key_prefix = models.CharField(max_length=8)
    user_id = models.CharField(max_length=64, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-at", "-pk")

    def __str__(self) -> str:
        return f"{self.kind} {self.session_key_prefix}…"

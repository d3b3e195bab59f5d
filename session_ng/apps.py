from django.apps import AppConfig


class SessionNgConfig(AppConfig):
    name = "session_ng"
    verbose_name = "session_ng"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks (session_ng.E001 ...).
        from session_ng import checks  # noqa: F401

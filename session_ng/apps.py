from django.apps import AppConfig


class SessionNgConfig(AppConfig):
    name = "session_ng"
    verbose_name = "session_ng"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        # Registers the system checks (session_ng.E001 ...).
        from session_ng import checks  # noqa: F401
        from session_ng.client_info import record_login

        user_logged_in.connect(record_login, dispatch_uid="session_ng.record_login")

        from session_ng import socket_groups

        # Close websockets when their session ends (only with Channels and a layer).
        if socket_groups.wanted():
            socket_groups.connect()

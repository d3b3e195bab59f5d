from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "testproject.demo"
    label = "demo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from testproject.demo import events

        if getattr(settings, "DEMO_EVENT_LOG", False):
            events.connect()

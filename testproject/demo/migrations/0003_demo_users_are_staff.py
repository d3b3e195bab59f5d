"""alice and bob may use the admin, so the demo shows two admin accounts in two tabs."""

from django.db import migrations

USERNAMES = ["alice", "bob"]


def make_staff(apps, schema_editor):  # type: ignore[no-untyped-def]
    User = apps.get_model("auth", "User")
    User.objects.filter(username__in=USERNAMES).update(is_staff=True, is_superuser=True)


def unmake_staff(apps, schema_editor):  # type: ignore[no-untyped-def]
    User = apps.get_model("auth", "User")
    User.objects.filter(username__in=USERNAMES).update(is_staff=False, is_superuser=False)


class Migration(migrations.Migration):
    dependencies = [("demo", "0002_session_event")]
    operations = [migrations.RunPython(make_staff, unmake_staff)]

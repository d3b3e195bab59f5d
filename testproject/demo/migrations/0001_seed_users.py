"""Demo users, so that ``make demo`` can log in straight away."""

from django.contrib.auth.hashers import make_password
from django.db import migrations

USERS = [("alice", "alice-password"), ("bob", "bob-password")]


def seed(apps, schema_editor):  # type: ignore[no-untyped-def]
    User = apps.get_model("auth", "User")
    for username, password in USERS:
        User.objects.get_or_create(
            username=username, defaults={"password": make_password(password)}
        )


def unseed(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("auth", "User").objects.filter(username__in=[u for u, _ in USERS]).delete()


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(seed, unseed)]

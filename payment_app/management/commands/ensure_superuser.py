"""Create the admin user from the environment, or leave it as it is if it exists."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Create a superuser from DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_PASSWORD and "
        "(optional) DJANGO_SUPERUSER_EMAIL. Running it again changes nothing."
    )

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "").strip()
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "").strip()
        if not username:
            raise CommandError("DJANGO_SUPERUSER_USERNAME is not set")
        User = get_user_model()
        if User.objects.filter(**{User.USERNAME_FIELD: username}).exists():
            self.stdout.write(f"superuser {username!r} exists; left unchanged")
            return
        if not password:
            raise CommandError("DJANGO_SUPERUSER_PASSWORD is not set")
        User.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(f"superuser {username!r} created")

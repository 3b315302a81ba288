"""Create the admin user from the environment, or bring its password up to date."""

import os
import pathlib

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction


def _setting(name: str) -> str:
    """NAME, or the content of the file NAME_FILE names (a mounted Secret, so the value
    never sits in the process environment); a missing file reads as empty."""
    path = os.environ.get(f"{name}_FILE", "")
    if path:
        try:
            return pathlib.Path(path).read_text().rstrip("\r\n")
        except FileNotFoundError:
            return ""
    return os.environ.get(name, "")


class Command(BaseCommand):
    help = (
        "Create a superuser from DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_PASSWORD and "
        "(optional) DJANGO_SUPERUSER_EMAIL, each also readable from the file a *_FILE "
        "variable names. If the user exists, set the password when it "
        "differs from the stored one (so changing the Secret rotates it at the next start) "
        "and change nothing otherwise."
    )

    def handle(self, *args, **options):
        username = _setting("DJANGO_SUPERUSER_USERNAME").strip()
        password = _setting("DJANGO_SUPERUSER_PASSWORD")
        email = _setting("DJANGO_SUPERUSER_EMAIL").strip()
        if not username:
            raise CommandError("DJANGO_SUPERUSER_USERNAME is not set")
        User = get_user_model()
        lookup = {User.USERNAME_FIELD: username}
        user = User.objects.filter(**lookup).first()
        if user is None:
            if not password:
                raise CommandError("DJANGO_SUPERUSER_PASSWORD is not set")
            try:
                # Several pods start at once on PostgreSQL: the one that loses the race to
                # insert gets an IntegrityError (unique username) and treats the user as
                # existing. atomic() keeps the failed insert from poisoning the connection.
                with transaction.atomic():
                    User.objects.create_superuser(username=username, email=email, password=password)
            except IntegrityError:
                user = User.objects.filter(**lookup).first()
                if user is None:
                    raise
            else:
                self.stdout.write(f"superuser {username!r} created")
                return
        # An empty password never replaces a real one (a Secret without the key, say).
        # check_password compares against the stored hash; a match leaves the row as it is
        # (unless Django re-hashes it with a newer algorithm, which is not a change).
        if not password or user.check_password(password):
            self.stdout.write(f"superuser {username!r} exists; password unchanged")
            return
        user.set_password(password)
        user.save(update_fields=["password"])
        # Never the password itself, nor anything derived from it.
        self.stdout.write(f"superuser {username!r} exists; password changed")

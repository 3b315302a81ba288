"""Create the operator's admin account from the environment, or bring it up to date.

The account inspects charge attempts and nothing else: staff (it may log in to the
admin), not a superuser, and its one permission is viewing charge attempts. It cannot
add users, change a record or grant itself more. (The command keeps its historical
name; the variables are still DJANGO_SUPERUSER_*, which Django's own createsuperuser
reads too.)
"""

import os
import pathlib

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from payment_app.models import ChargeAttempt

# What inspecting charges needs: Django's view permission on the model (the admin is
# read-only for everyone anyway: payment_app/admin.py).
OPERATOR_PERMISSION = ("payment_app", f"view_{ChargeAttempt._meta.model_name}")


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


def _operator_permission() -> Permission:
    app_label, codename = OPERATOR_PERMISSION
    try:
        return Permission.objects.get(content_type__app_label=app_label, codename=codename)
    except Permission.DoesNotExist:
        raise CommandError(
            f"the permission {app_label}.{codename} does not exist yet: apply the migrations first "
            "(manage.py migrate_locked)"
        ) from None


class Command(BaseCommand):
    help = (
        "Create the operator's admin account (staff, view charge attempts only) from "
        "DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_PASSWORD and (optional) "
        "DJANGO_SUPERUSER_EMAIL, each also readable from the file a *_FILE variable names. "
        "The password must pass AUTH_PASSWORD_VALIDATORS. If the account exists, set the "
        "password when it differs from the stored one (so changing the Secret rotates it at "
        "the next start) and bring its rights back to view-only; change nothing otherwise."
    )

    def handle(self, *args, **options):
        username = _setting("DJANGO_SUPERUSER_USERNAME").strip()
        password = _setting("DJANGO_SUPERUSER_PASSWORD")
        email = _setting("DJANGO_SUPERUSER_EMAIL").strip()
        if not username:
            raise CommandError("DJANGO_SUPERUSER_USERNAME is not set")
        User = get_user_model()
        lookup = {User.USERNAME_FIELD: username}
        if password:
            self._validate(User(**lookup, email=email), password)
        permission = _operator_permission()
        user = User.objects.filter(**lookup).first()
        if user is None:
            if not password:
                raise CommandError("DJANGO_SUPERUSER_PASSWORD is not set")
            try:
                # Several pods start at once on PostgreSQL: the one that loses the race to
                # insert gets an IntegrityError (unique username) and treats the user as
                # existing. atomic() keeps the failed insert from poisoning the connection.
                with transaction.atomic():
                    user = User.objects.create_user(**lookup, email=email, password=password, is_staff=True)
                    user.user_permissions.set([permission])
            except IntegrityError:
                user = User.objects.filter(**lookup).first()
                if user is None:
                    raise
            else:
                self.stdout.write(f"operator {username!r} created (view charge attempts only)")
                return
        rights = self._converge_rights(user, permission)
        # An empty password never replaces a real one (a Secret without the key, say).
        # check_password compares against the stored hash; a match leaves the row as it is
        # (unless Django re-hashes it with a newer algorithm, which is not a change).
        if not password or user.check_password(password):
            self.stdout.write(f"operator {username!r} exists; password unchanged{rights}")
            return
        user.set_password(password)
        user.save(update_fields=["password"])
        # Never the password itself, nor anything derived from it.
        self.stdout.write(f"operator {username!r} exists; password changed{rights}")

    @staticmethod
    def _validate(user, password: str) -> None:
        """Django's AUTH_PASSWORD_VALIDATORS, against the account's own name and email too.
        The error names what is wrong, never the password."""
        try:
            password_validation.validate_password(password, user=user)
        except ValidationError as exc:
            raise CommandError(
                "DJANGO_SUPERUSER_PASSWORD is refused by AUTH_PASSWORD_VALIDATORS: " + " ".join(exc.messages)
            ) from None

    @staticmethod
    def _converge_rights(user, permission: Permission) -> str:
        """An account from an earlier release (a full superuser) or changed by hand is
        brought back to staff with the view permission alone."""
        changed = []
        # is_active is left alone: deactivating the account by hand stays in force.
        if user.is_superuser or not user.is_staff:
            user.is_superuser, user.is_staff = False, True
            user.save(update_fields=["is_superuser", "is_staff"])
            changed.append("superuser and staff flags")
        if list(user.user_permissions.all()) != [permission] or user.groups.exists():
            user.user_permissions.set([permission])
            user.groups.clear()
            changed.append("permissions")
        return f"; reset {' and '.join(changed)} to view-only" if changed else ""

"""ensure_superuser when several payment pods start at once (PostgreSQL in production)."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import QuerySet

pytestmark = pytest.mark.django_db


def test_a_pod_that_loses_the_race_to_create_the_admin_treats_it_as_existing(monkeypatch):
    User = get_user_model()
    for name in ("USERNAME", "PASSWORD", "EMAIL"):
        monkeypatch.delenv(f"DJANGO_SUPERUSER_{name}_FILE", raising=False)
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "racer")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "same-secret-in-every-pod-7c2")
    monkeypatch.delenv("DJANGO_SUPERUSER_EMAIL", raising=False)

    # Another pod inserts the user after this one looked and found none: the real unique
    # constraint of the database then refuses this pod's insert.
    real_first = QuerySet.first
    raced = []

    def first(queryset):
        if not raced:
            raced.append(True)
            User.objects.create_superuser(username="racer", email="", password="same-secret-in-every-pod-7c2")
            return None
        return real_first(queryset)

    monkeypatch.setattr(QuerySet, "first", first)
    out = io.StringIO()
    call_command("ensure_superuser", stdout=out)

    assert raced
    assert "superuser 'racer' exists; password unchanged" in out.getvalue()
    assert User.objects.filter(username="racer", is_superuser=True).count() == 1
    # The connection is still usable after the refused insert.
    assert User.objects.get(username="racer").check_password("same-secret-in-every-pod-7c2")

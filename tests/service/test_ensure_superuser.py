"""ensure_superuser: the operator's account, view-only, with a password Django's validators
accept, also when several payment pods start at once (PostgreSQL in production)."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import QuerySet

pytestmark = pytest.mark.django_db

STRONG = "same-secret-in-every-pod-7c2"
LIST_URL = "/admin/payment_app/chargeattempt/"


@pytest.fixture
def operator_env(monkeypatch):
    """The account's variables, set directly (no *_FILE)."""
    for name in ("USERNAME", "PASSWORD", "EMAIL"):
        monkeypatch.delenv(f"DJANGO_SUPERUSER_{name}_FILE", raising=False)
    monkeypatch.delenv("DJANGO_SUPERUSER_EMAIL", raising=False)

    def set_env(username="ops", password=STRONG):
        monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", username)
        monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", password)

    return set_env


def run() -> str:
    out = io.StringIO()
    call_command("ensure_superuser", stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(("password", "reason"), [
    ("x", "too short"),
    ("password123", "too common"),
    ("48151623429", "entirely numeric"),
    ("operator-ops-account", "too similar to the username"),
])
def test_a_weak_password_is_refused_with_a_clear_error_and_no_account(operator_env, password, reason):
    operator_env(username="operator-ops", password=password)
    with pytest.raises(CommandError) as refused:
        run()
    message = str(refused.value)
    assert message.startswith("DJANGO_SUPERUSER_PASSWORD is refused by AUTH_PASSWORD_VALIDATORS: "), message
    assert reason in message and password not in message.split(": ", 1)[1]
    assert not get_user_model().objects.exists()


def test_a_weak_new_password_leaves_the_existing_one(operator_env):
    operator_env()
    run()
    operator_env(password="short")
    with pytest.raises(CommandError):
        run()
    assert get_user_model().objects.get(username="ops").check_password(STRONG)


def test_the_operator_may_view_charge_attempts_and_nothing_else(operator_env, client, settings):
    operator_env()
    assert "operator 'ops' created (view charge attempts only)" in run()
    user = get_user_model().objects.get(username="ops")
    assert user.is_staff and not user.is_superuser
    assert user.get_all_permissions() == {"payment_app.view_chargeattempt"}
    # Through the real admin: the list opens; the user pages do not.
    settings.ALLOWED_HOSTS = ["testserver"]
    client.force_login(user)
    assert client.get(LIST_URL).status_code == 200
    assert client.get("/admin/auth/user/").status_code == 403
    assert client.get("/admin/auth/user/add/").status_code == 403
    assert client.get("/admin/auth/group/add/").status_code == 403


def test_an_earlier_full_superuser_is_brought_down_to_view_only(operator_env):
    User = get_user_model()
    User.objects.create_superuser(username="ops", email="", password=STRONG)
    operator_env()
    out = run()
    assert "password unchanged; reset superuser and staff flags and permissions to view-only" in out, out
    user = User.objects.get(username="ops")
    assert not user.is_superuser and user.get_all_permissions() == {"payment_app.view_chargeattempt"}
    assert "reset" not in run()  # nothing left to change


def test_a_pod_that_loses_the_race_to_create_the_admin_treats_it_as_existing(operator_env, monkeypatch):
    User = get_user_model()
    operator_env(username="racer")

    # Another pod inserts the user after this one looked and found none: the real unique
    # constraint of the database then refuses this pod's insert.
    real_first = QuerySet.first
    raced = []

    def first(queryset):
        if queryset.model is User and not raced:
            raced.append(True)
            call_command("ensure_superuser", stdout=io.StringIO())  # the other pod, to completion
            return None
        return real_first(queryset)

    monkeypatch.setattr(QuerySet, "first", first)
    out = run()

    assert raced
    assert "operator 'racer' exists; password unchanged" in out, out
    assert User.objects.filter(username="racer", is_staff=True, is_superuser=False).count() == 1
    # The connection is still usable after the refused insert.
    assert User.objects.get(username="racer").check_password(STRONG)

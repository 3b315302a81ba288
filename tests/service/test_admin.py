"""The admin: attempts listed, filtered, searched, summarised, and never editable."""

import datetime
import re
from decimal import Decimal

import pytest
from django.utils import timezone

from payment_app.models import ChargeAttempt

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/payment_app/chargeattempt/"


@pytest.fixture
def admin(client, admin_user, settings):
    settings.ALLOWED_HOSTS = ["testserver"]
    client.force_login(admin_user)
    return client


@pytest.fixture
def attempts():
    now = timezone.now()
    rows = [
        # Customer numbers no attempt id reaches (PostgreSQL's ids do not restart per test).
        (700011, "301.99", "", True, now),
        (700011, "120.50", "EUR", False, now),
        (700022, "100.00", "DKK", True, now - datetime.timedelta(days=40)),
        (700022, "10.00", "EUR", True, now),
    ]
    return [
        ChargeAttempt.objects.create(
            customer_id=c, amount=Decimal(a), currency=cur, succeeded=ok, created_at=at
        )
        for c, a, cur, ok, at in rows
    ]


def listed_ids(response) -> list[int]:
    assert response.status_code == 200
    return sorted(obj.pk for obj in response.context["cl"].result_list)


def test_list_shows_attempts_and_the_success_share(admin, attempts):
    response = admin.get(LIST_URL)
    assert listed_ids(response) == sorted(a.pk for a in attempts)
    page = response.content.decode()
    assert "Charged 3 of 4 listed attempts (75.0%)." in page
    assert "301.99" in page and "unknown" in page


@pytest.mark.parametrize(
    "query, expected",
    [
        ("succeeded__exact=0", [1]),
        ("succeeded__exact=1", [0, 2, 3]),
        ("currency=EUR", [1, 3]),
        ("currency=", [0]),
        ("q=700022", [2, 3]),
    ],
)
def test_filters_and_search(admin, attempts, query, expected):
    response = admin.get(f"{LIST_URL}?{query}")
    assert listed_ids(response) == sorted(attempts[i].pk for i in expected)


def test_currency_filter_labels_the_unknown_currency(admin, attempts):
    """Stock Antaeus always sends {}: its entry in "By currency" must be visible."""
    page = admin.get(LIST_URL).content.decode()
    by_currency = page[page.index("By currency"):]
    by_currency = by_currency[: by_currency.index("</ul>")]
    assert re.search(r'<a href="\?currency=">\s*unknown\s*</a>', by_currency), by_currency
    for code in ("EUR", "DKK"):
        assert re.search(rf'<a href="\?currency={code}">\s*{code}\s*</a>', by_currency), by_currency
    # The entry filters as it says.
    assert listed_ids(admin.get(f"{LIST_URL}?currency=")) == [attempts[0].pk]


def test_date_filter_and_share_follow_the_filter(admin, attempts):
    since = (timezone.now() - datetime.timedelta(days=7)).isoformat()
    response = admin.get(LIST_URL, {"created_at__gte": since})
    assert listed_ids(response) == sorted(attempts[i].pk for i in (0, 1, 3))
    assert "Charged 2 of 3 listed attempts (66.7%)." in response.content.decode()


def test_search_by_attempt_id(admin, attempts):
    assert attempts[1].pk in listed_ids(admin.get(f"{LIST_URL}?q={attempts[1].pk}"))


def test_attempts_are_read_only(admin, attempts):
    attempt = attempts[0]
    assert admin.get(f"{LIST_URL}add/").status_code == 403
    detail = admin.get(f"{LIST_URL}{attempt.pk}/change/")
    assert detail.status_code == 200  # viewable...
    assert 'name="_save"' not in detail.content.decode()  # ...with nothing to save
    assert admin.post(f"{LIST_URL}{attempt.pk}/change/", {"succeeded": "on"}).status_code == 403
    assert admin.post(f"{LIST_URL}{attempt.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = admin.post(LIST_URL, {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"})
    assert bulk.status_code in (200, 302)
    assert ChargeAttempt.objects.count() == len(attempts)
    attempt.refresh_from_db()
    assert attempt.succeeded is True


def test_anonymous_users_are_sent_to_login(client, settings, attempts):
    settings.ALLOWED_HOSTS = ["testserver"]
    response = client.get(LIST_URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_success_share_over_time_per_day(admin, attempts):
    from payment_app.selectors import charge_attempt_success_share_over_time

    step, points = charge_attempt_success_share_over_time(attempts=ChargeAttempt.objects.all())
    assert step == datetime.timedelta(days=1)  # 40 days of attempts: one point per day
    assert [(p.succeeded, p.total) for p in points] == [(1, 1), (2, 3)]
    assert points[0].start < points[1].start


def test_success_share_over_time_per_hour_and_empty(admin):
    from payment_app.selectors import charge_attempt_success_share_over_time

    assert charge_attempt_success_share_over_time(attempts=ChargeAttempt.objects.all()) == (None, [])
    start = timezone.now().replace(minute=0, second=0, microsecond=0)
    for hour, outcomes in enumerate([(True, False), (True, True, True, False)]):
        for ok in outcomes:
            ChargeAttempt.objects.create(
                customer_id=1, amount=Decimal("1"), succeeded=ok, created_at=start + datetime.timedelta(hours=hour)
            )
    step, points = charge_attempt_success_share_over_time(attempts=ChargeAttempt.objects.all())
    assert step == datetime.timedelta(hours=1)
    assert [p.share for p in points] == [0.5, 0.75]


def test_list_draws_the_success_share_chart(admin, attempts, settings):
    settings.PAYMENT_SUCCESS_RATE = 0.5
    page = admin.get(LIST_URL).content.decode()
    assert 'id="success-share-chart"' in page and 'data-points="2"' in page
    assert page.count('class="share-point"') == 2
    assert 'data-share="1.0"' in page and 'data-share="0.6667"' in page
    assert "PAYMENT_SUCCESS_RATE (50.0%" in page
    # The chart follows the filters, like the share above it.
    page = admin.get(LIST_URL + "?currency=EUR").content.decode()
    assert 'data-points="1"' in page and 'data-share="0.5"' in page


def test_no_chart_without_attempts(admin):
    page = admin.get(LIST_URL).content.decode()
    assert "No attempts listed." in page and "success-share-chart" not in page

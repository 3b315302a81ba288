"""The admin's success-share chart as a person sees it: the real server, a real login,
and headless Chromium (Debian's package) rendering the attempts page, driven by
tests/browser.py over its DevTools protocol.
"""

from __future__ import annotations

import base64
import datetime
import http.cookiejar
import urllib.parse
import urllib.request

import pytest

from harness.server import Server
from tests.browser import Browser

pytestmark = pytest.mark.server

USER, PASSWORD = "ops", "a-long-test-password-for-the-browser"


def login(base: str) -> str:
    """The admin's own login form over HTTP; returns the session cookie's value."""
    # The cookies are Secure; a browser sends them to http://localhost (a secure context),
    # which urllib's default policy would not.
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(secure_protocols=("https", "wss", "http")))
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/admin/login/", timeout=10).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf, "username": USER, "password": PASSWORD, "next": "/admin/"}
    ).encode()
    request = urllib.request.Request(f"{base}/admin/login/", data=form, headers={"Referer": f"{base}/admin/login/"})
    opener.open(request, timeout=10).read()
    return next(c.value for c in jar if c.name == "sessionid")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(
        tmp_path_factory.mktemp("admin-browser"),
        env={"DJANGO_SUPERUSER_USERNAME": USER, "DJANGO_SUPERUSER_PASSWORD": PASSWORD, "PAYMENT_SUCCESS_RATE": "0.5"},
    )
    collected = srv.run("python", "manage.py", "collectstatic", "--noinput", "--verbosity", "0")
    assert collected.returncode == 0, collected.stderr
    srv.start()
    yield srv
    srv.stop()


def test_admin_chart_has_data_in_a_real_browser(server, tmp_path):
    replies = [server.charge() for _ in range(12)]
    charged = sum(r.json()["result"] for r in replies)
    # Earlier hours as well, so that the chart has a line to draw (written as the service would).
    now = datetime.datetime.now(datetime.timezone.utc)
    with server.db() as db:
        for hours_ago, ok in ((3, 1), (3, 0), (2, 1), (2, 1), (2, 1), (1, 0)):
            when = now - datetime.timedelta(hours=hours_ago)
            db.execute(
                "INSERT INTO payment_app_chargeattempt (created_at, customer_id, amount, currency, succeeded,"
                " request_fingerprint) VALUES (%s, 1, 1.00, '', %s, '')",
                # SQLite: Django's own text form (naive UTC); PostgreSQL: a timestamptz.
                (when if server.database_url else when.replace(tzinfo=None).isoformat(" "), bool(ok)),
            )
    base = f"http://localhost:{server.port}"
    session = login(base)

    browser = Browser()
    try:
        page = browser.session
        browser.send("Emulation.setDeviceMetricsOverride", session=page, width=1280, height=1000,
                     deviceScaleFactor=1, mobile=False)
        browser.send("Network.enable", session=page)
        browser.send("Network.setCookie", session=page, name="sessionid", value=session, url=base)
        browser.open(f"{base}/admin/payment_app/chargeattempt/")
        browser.wait_for("document.readyState === 'complete' && document.title.startsWith('Select charge attempt')")
        chart = browser.evaluate(
            """(() => {
                const svg = document.getElementById('success-share-chart');
                if (!svg) return null;
                const box = svg.getBoundingClientRect();
                const dots = [...svg.querySelectorAll('circle.share-point')];
                return {
                    width: box.width, height: box.height,
                    visible: getComputedStyle(svg).visibility === 'visible' && box.top < innerHeight,
                    dots: dots.map(c => ({share: +c.dataset.share, total: +c.dataset.total,
                                          y: c.getBoundingClientRect().top})),
                    line: svg.querySelector('polyline.share-line').points.numberOfItems,
                    rate: svg.querySelector('line.configured-rate').getBoundingClientRect().top,
                    caption: document.getElementById('success-share-chart-caption').textContent,
                };
            })()"""
        )
        screenshot = base64.b64decode(browser.send("Page.captureScreenshot", session=page, format="png")["data"])
    finally:
        browser.close()
    (tmp_path / "admin-chart.png").write_bytes(screenshot)

    assert chart is not None, "no chart on the attempts page"
    assert chart["width"] > 300 and chart["height"] > 50 and chart["visible"], chart
    assert [d["total"] for d in chart["dots"]] == [2, 3, 1, 12], chart
    assert chart["dots"][-1]["share"] == round(charged / 12, 4)
    assert chart["dots"][1]["share"] == 1.0 and chart["line"] == 4
    # Laid out as drawn: the 100% dot above the 50% line, the 0% dot below it.
    assert chart["dots"][1]["y"] < chart["rate"] < chart["dots"][2]["y"]
    assert "PAYMENT_SUCCESS_RATE (50.0%" in chart["caption"]
    assert screenshot.startswith(b"\x89PNG") and len(screenshot) > 10_000

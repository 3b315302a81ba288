"""The admin's success-share chart as a person sees it: the real server, a real login,
and headless Chromium (Debian's package) rendering the attempts page. Chromium is driven
over its DevTools protocol on a pipe (--remote-debugging-pipe), with no extra library.
"""

from __future__ import annotations

import base64
import datetime
import fcntl
import http.cookiejar
import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from harness.server import Server

pytestmark = pytest.mark.server

USER, PASSWORD = "ops", "a-long-test-password-for-the-browser"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
    "--window-size=1280,1000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.fail("chromium is not on PATH: install Debian's `chromium` package (.ci/run does)", pytrace=False)


class DevTools:
    """Chromium with the DevTools protocol on fds 3 (commands in) and 4 (replies out)."""

    def __init__(self, profile):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire():  # in the child: the pipe ends on the descriptors Chromium reads
            # (through copies above 9 first, so that neither end is overwritten by the other)
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            # 3 and 4 survive the close of inherited descriptors (after preexec_fn).
            pass_fds=(3, 4),
            preexec_fn=wire,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        self.session = None

    def send(self, method: str, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def attach_page(self) -> None:
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def load(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", url=url)
        while True:  # until the page's load event
            message = self._read()
            if message.get("method") == "Page.loadEventFired":
                return

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def login(base: str) -> str:
    """The admin's own login form over HTTP; returns the session cookie's value."""
    jar = http.cookiejar.CookieJar()
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

    browser = DevTools(tmp_path / "profile")
    try:
        browser.attach_page()
        browser.send("Network.enable")
        browser.send("Network.setCookie", name="sessionid", value=session, url=base)
        browser.load(f"{base}/admin/payment_app/chargeattempt/")
        assert browser.evaluate("document.title").startswith("Select charge attempt")
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
        screenshot = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
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

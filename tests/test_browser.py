"""Live reload and the Werkzeug debugger in a real browser: headless Chromium via Playwright.

Chromium is Debian's (/usr/bin/chromium): Playwright's own browser download cannot work here.
Without it the tests are skipped on a developer's machine, but fail under CI (CI=1), where
.ci/run installs it: a browser test must never pass by not running.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Devrun, free_port, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

CHROMIUM = os.environ.get("DEVRUN_CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not os.path.exists(CHROMIUM):
        return f"no browser at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-extensions", "--no-first-run",
        ])
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page and everything it went through: navigations, responses, failed requests."""

    def __init__(self, browser: Any):
        self.context = browser.new_context()
        # Test instrumentation only: remember each EventSource, to know when a page listens.
        self.context.add_init_script("""(() => {
            const Original = window.EventSource;
            window.__streams = [];
            window.EventSource = function (url) { const s = new Original(url); window.__streams.push(s); return s; };
            window.EventSource.prototype = Original.prototype;
        })()""")
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.navigations: list[str] = []
        self.responses: list[tuple[int, str]] = []
        self.failures: list[tuple[str, str]] = []
        self.page.on("framenavigated", lambda f: f == self.page.main_frame and self.navigations.append(f.url))
        self.page.on("response", lambda r: self.responses.append((r.status, r.url)))
        self.page.on("requestfailed", lambda r: self.failures.append((r.failure or "", r.url)))
        self.dialogs: list[str] = []  # an alert() (the debugger's "incorrect pin"): noted, dismissed
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def text(self) -> str:
        return str(self.page.evaluate("document.body ? document.body.innerText : ''"))

    def wait_text(self, needle: str, timeout: float = 20) -> str:
        return wait_for(lambda: needle in (t := self.safe_text()) and t, timeout, f"the page to show {needle!r}")

    def safe_text(self) -> str:
        try:
            return self.text()
        except Exception:  # mid-navigation: the context was destroyed; ask again
            return ""

    def errors(self) -> list[str]:
        """Refused connections, failed page loads, server errors: none may happen on a reload.
        A page that reloads aborts its own event stream; that alone is not a failure."""
        bad = [f"{why} {url}" for why, url in self.failures
               if not ("/__devrun__/events" in url and "ERR_ABORTED" in why)]
        bad += [f"{status} {url}" for status, url in self.responses if status >= 500]
        return bad + [f"dialog: {text}" for text in self.dialogs]

    def wait_listening(self) -> None:
        """Until the page's live-reload stream is open (after a reload too)."""
        self.page.wait_for_function("window.__streams && window.__streams.some(s => s.readyState === 1)")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Any) -> Iterator[Callable[[], Watched]]:
    pages: list[Watched] = []

    def open_page() -> Watched:
        w = Watched(browser)
        pages.append(w)
        return w

    yield open_page
    for w in pages:
        w.close()


APP = """
    import os
    from flask import Flask, Response, render_template
    app = Flask(__name__)

    @app.route("/")
    def index():
        return render_template("page.html", pid=os.getpid(), text="{text}")

    @app.route("/boom")
    def boom():
        x = 21
        raise ValueError("boom " + str(x))

    @app.route("/data.json")
    def data():
        return Response('{{"html": "</body>"}}', mimetype="application/json")

    @app.route("/download")
    def download():
        return Response(b"<html><body>binary\\x00</body></html>", mimetype="application/octet-stream",
                        headers={{"Content-Disposition": "attachment; filename=x.bin"}})

    @app.route("/streamed")
    def streamed():
        return Response((part for part in ["<html><body>", "streamed", "</body></html>"]), mimetype="text/html")
"""
PAGE = """<!doctype html>
<html><head><link rel="stylesheet" href="/static/site.css"></head>
<body><h1>{{{{ text }}}} {extra}</h1><p id="pid">{{{{ pid }}}}</p></body></html>
"""


def project(tmp: Path) -> int:
    port = free_port()
    write(tmp / "app.py", APP.format(text="one"))
    write(tmp / "templates" / "page.html", PAGE.format(extra=""))
    write(tmp / "static" / "site.css", "h1 { color: rgb(255, 0, 0); }\n")
    write(tmp / "devrun.yaml", f"""
        apps:
          web:
            app: "app:app"
            port: {port}
            debug: {{enabled: true}}
    """)
    return port


def start(tmp: Path, devrun: Callable[..., Devrun]) -> tuple[Devrun, str]:
    port = project(tmp)
    d = devrun("up", "--no-dashboard", cwd=tmp)
    d.wait_line(lambda ln: " ready http" in ln, 30)
    return d, f"http://127.0.0.1:{port}"


def open_connected(w: Watched, url: str) -> None:
    w.page.goto(url)
    w.wait_listening()


def test_a_code_edit_shows_by_itself_with_no_error_on_the_way(
        tmp_path: Path, devrun: Callable[..., Devrun], watched: Callable[[], Watched]) -> None:
    d, url = start(tmp_path, devrun)
    w = watched()
    open_connected(w, url + "/")
    assert "one" in w.text()
    before = len(w.navigations)
    write(tmp_path / "app.py", APP.format(text="two"))
    w.wait_text("two")
    assert len(w.navigations) == before + 1  # reloaded once
    assert w.errors() == []


def test_a_template_edit_keeps_the_process_and_a_css_edit_keeps_the_page(
        tmp_path: Path, devrun: Callable[..., Devrun], watched: Callable[[], Watched]) -> None:
    d, url = start(tmp_path, devrun)
    w = watched()
    open_connected(w, url + "/")
    pid = w.page.inner_text("#pid")
    write(tmp_path / "templates" / "page.html", PAGE.format(extra="edited"))
    w.wait_text("one edited")
    assert w.page.inner_text("#pid") == pid
    w.wait_listening()  # the reloaded page listens again

    w.page.evaluate("window.kept = 42; window.scrollTo(0, 0)")
    navigations = len(w.navigations)
    write(tmp_path / "static" / "site.css", "h1 { color: rgb(0, 0, 255); }\n")
    w.page.wait_for_function("getComputedStyle(document.querySelector('h1')).color === 'rgb(0, 0, 255)'")
    assert w.page.evaluate("window.kept") == 42  # no navigation: page state survives
    assert len(w.navigations) == navigations
    assert w.page.evaluate("document.querySelectorAll('link[rel=stylesheet]').length") == 1
    assert w.errors() == []


def test_broken_code_shows_the_traceback_then_the_fix_by_itself(
        tmp_path: Path, devrun: Callable[..., Devrun], watched: Callable[[], Watched]) -> None:
    d, url = start(tmp_path, devrun)
    w = watched()
    open_connected(w, url + "/")
    write(tmp_path / "app.py", "from flask import Flask\napp = Flask(__name__\n")  # a SyntaxError
    w.wait_text("SyntaxError")
    write(tmp_path / "app.py", APP.format(text="fixed"))
    w.wait_text("fixed")
    # The one server error on the way is the error page itself, which the page was meant to show.
    assert [e for e in w.errors() if not e.startswith(f"500 {url}/")] == []
    assert not [why for why, _ in w.failures if "REFUSED" in why]


def test_the_debugger_console_works_under_gevent_and_stays_unlocked_after_a_reload(
        tmp_path: Path, devrun: Callable[..., Devrun], watched: Callable[[], Watched]) -> None:
    d, url = start(tmp_path, devrun)
    pin = re.search(r"PIN: (\d{3}-\d{3}-\d{3})", d.output)
    assert pin, d.output
    w = watched()
    open_connected(w, url + "/boom")
    assert "ValueError: boom 21" in w.text()

    def open_console() -> None:
        # The icon on the view's own frame (the last); the console opens beside the frame.
        w.page.locator("div.traceback div.frame").last.locator("pre img").first.dispatch_event("click")

    def evaluate(expression: str, expect: str) -> None:
        console = w.page.locator("div.traceback pre.console").last
        console.locator("input").fill(expression)
        console.locator("input").press("Enter")
        wait_for(lambda: expect in console.inner_text(), 15, f"{expression} to give {expect}")

    open_console()
    w.page.locator(".pin-prompt").wait_for(state="visible")  # locked: it asks for the PIN
    # The request the PIN form sends, sent from the page, so a refusal shows what came back.
    reply = w.page.evaluate("pin => fetch(makeDebugURL({cmd: 'pinauth', pin})).then(r => r.text())", pin.group(1))
    assert json.loads(reply)["auth"] is True, reply
    w.page.reload()  # with the debugger's cookie now: unlocked
    w.wait_listening()
    assert w.page.evaluate("EVALEX_TRUSTED") is True
    open_console()
    assert not w.page.locator(".pin-prompt").is_visible()
    assert w.dialogs == []
    evaluate("x * 2", "42")

    # A reload: the page follows by itself to the new code's traceback, still unlocked.
    write(tmp_path / "app.py", APP.format(text="two").replace("x = 21", "x = 22"))
    w.wait_text("ValueError: boom 22")
    assert w.page.evaluate("EVALEX_TRUSTED") is True
    open_console()
    evaluate("x * 3", "66")
    assert not w.page.locator(".pin-prompt").is_visible()


@pytest.mark.parametrize("path", ["/data.json", "/download", "/streamed"])
def test_other_responses_reach_the_browser_byte_for_byte(
        tmp_path: Path, devrun: Callable[..., Devrun], watched: Callable[[], Watched], path: str) -> None:
    expected = {
        "/data.json": b'{"html": "</body>"}',
        "/download": b"<html><body>binary\x00</body></html>",
        "/streamed": b"<html><body>streamed</body></html>",
    }[path]
    d, url = start(tmp_path, devrun)
    w = watched()
    w.page.goto(url + "/static/site.css")  # any page of the origin, to fetch from
    got = w.page.evaluate("""async (path) => {
        const r = await fetch(path);
        const bytes = new Uint8Array(await r.arrayBuffer());
        return btoa(String.fromCharCode(...bytes));
    }""", path)
    assert base64.b64decode(got) == expected


def test_a_django_page_follows_a_template_edit_and_swaps_an_edited_stylesheet(
        tmp_path: Path, devrun: Callable[..., Devrun], watched: Callable[[], Watched]) -> None:
    from tests.projects import django_config, django_project

    site = django_project(tmp_path)
    port = free_port()
    django_config(site, port)
    d = devrun("up", "--no-dashboard", cwd=site)
    d.wait_line(lambda ln: " ready http" in ln, 60)
    w = watched()
    open_connected(w, f"http://127.0.0.1:{port}/polls/")
    assert w.page.evaluate("getComputedStyle(document.querySelector('h1')).color") == "rgb(0, 128, 0)"
    starts = sum("starting (pid" in ln for ln in d.lines)

    template = site / "polls" / "templates" / "polls" / "index.html"
    template.write_text(template.read_text().replace("tpl-one", "tpl-two"))
    w.wait_text("tpl-two")  # the page reloaded by itself, onto the new template (Django's cache reset)
    w.wait_listening()

    w.page.evaluate("window.kept = 7")
    navigations = len(w.navigations)
    write(site / "polls" / "static" / "polls" / "style.css", "h1 { color: rgb(0, 0, 255); }\n")
    w.page.wait_for_function("getComputedStyle(document.querySelector('h1')).color === 'rgb(0, 0, 255)'")
    assert w.page.evaluate("window.kept") == 7 and len(w.navigations) == navigations  # swapped in place
    assert sum("starting (pid" in ln for ln in d.lines) == starts  # neither edit restarted Django
    assert w.errors() == []

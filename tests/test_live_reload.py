"""Live reload through a real `devrun up`: the event stream a page listens to, read over HTTP.

The browser itself is driven in test_browser.py; here the stream is read directly, which
shows what each kind of change sends and that nothing waits on open streams.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Devrun, alive, free_port, get, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

APP = """
    import os
    from flask import Flask, render_template
    app = Flask(__name__)

    @app.route("/")
    def index():
        return render_template("page.html", pid=os.getpid(), version={version})

    @app.route("/data")
    def data():
        return {{"pid": os.getpid(), "body": "</body>"}}
"""
PAGE = ("<html><head><link rel='stylesheet' href='/static/site.css'></head>"
        "<body>{text} v{{{{ version }}}} pid={{{{ pid }}}}</body></html>\n")


class Stream:
    """An open /__devrun__/events stream, as a page holds it."""

    def __init__(self, port: int, generation: str = ""):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.conn.request("GET", f"/__devrun__/events?generation={generation}")
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("Content-Type") == "text/event-stream"

    def events(self) -> Iterator[tuple[str, dict[str, object]]]:
        """(event, data) pairs until the server ends the stream."""
        kind = ""
        while line := self.response.readline():
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                kind = text.removeprefix("event: ")
            elif text.startswith("data: "):
                yield kind, json.loads(text.removeprefix("data: "))

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def streams() -> Iterator[Callable[..., Stream]]:
    opened: list[Stream] = []

    def open_stream(port: int, generation: str = "") -> Stream:
        s = Stream(port, generation)
        opened.append(s)
        return s

    yield open_stream
    for s in opened:
        s.close()


def project(tmp: Path, live: str = "", graceful: float = 30) -> int:
    port = free_port()
    write(tmp / "app.py", APP.format(version=1))
    write(tmp / "templates" / "page.html", PAGE.format(text="first"))
    write(tmp / "static" / "site.css", "body { color: red }\n")
    write(tmp / "devrun.yaml", f"""
        apps:
          web:
            app: "app:app"
            port: {port}
            graceful_timeout: {graceful}
            debug: {{enabled: true}}
            {live}
    """)
    return port


def page(port: int) -> str:
    status, text = get(f"http://127.0.0.1:{port}/", 5)
    assert status == 200, text
    return text


def generation_of(html: str) -> str:
    return html.split('data-generation="', 1)[1].split('"', 1)[0]


def test_pages_get_the_script_and_json_is_untouched(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = project(tmp_path)
    devrun("up", "--no-dashboard", cwd=tmp_path)
    html = wait_for(lambda: page(port), 30, "the page")
    assert html.count('<script async src="/__devrun__/livereload.js?v=') == 1
    assert html.index("/__devrun__/livereload.js") < html.index("</body>")
    status, data = get(f"http://127.0.0.1:{port}/data")
    assert status == 200 and json.loads(data)["body"] == "</body>"  # JSON is never touched
    status, js = get(f"http://127.0.0.1:{port}/__devrun__/livereload.js")
    assert status == 200 and "EventSource" in js


def test_a_template_edit_reloads_the_pages_and_keeps_the_process(
        tmp_path: Path, devrun: Callable[..., Devrun], streams: Callable[..., Stream]) -> None:
    port = project(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    html = wait_for(lambda: page(port), 30, "the page")
    pid = html.split("pid=")[1].split("<")[0]
    events = streams(port, generation_of(html)).events()
    assert next(events) == ("hello", {"generation": generation_of(html)})
    d.wait_line(lambda ln: "1 page connected" in ln, 10)
    write(tmp_path / "templates" / "page.html", PAGE.format(text="second"))
    assert next(events)[0] == "reload"
    after = page(port)
    assert "second v1" in after and f"pid={pid}" in after  # the new template, the same process
    d.wait_line(lambda ln: "refreshed 1 page" in ln, 10)
    assert "reload (" not in d.output


def test_a_stylesheet_edit_swaps_css_in_place(
        tmp_path: Path, devrun: Callable[..., Devrun], streams: Callable[..., Stream]) -> None:
    port = project(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    html = wait_for(lambda: page(port), 30, "the page")
    events = streams(port, generation_of(html)).events()
    next(events)
    write(tmp_path / "static" / "site.css", "body { color: blue }\n")
    assert next(events)[0] == "css"
    d.wait_line(lambda ln: "swapped stylesheets in 1 page" in ln, 10)


def test_a_code_edit_ends_the_streams_at_once_and_the_reconnect_meets_the_new_code(
        tmp_path: Path, devrun: Callable[..., Devrun], streams: Callable[..., Stream]) -> None:
    port = project(tmp_path, graceful=30)  # an open stream that held the old process would show
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    html = wait_for(lambda: page(port), 30, "the page")
    old_pid = int(html.split("pid=")[1].split("<")[0])
    first = generation_of(html)
    events = streams(port, first).events()
    next(events)
    write(tmp_path / "app.py", APP.format(version=2))
    assert list(events) == []  # the stream simply ends: the old generation is stopping
    # Reconnecting at once (as the script does) waits for the new generation and meets it.
    again = streams(port, first).events()
    kind, data = next(again)
    assert kind == "hello" and data["generation"] != first
    assert "v2" in page(port)
    # The old process did not wait out its 30 s graceful timeout for the open stream.
    wait_for(lambda: not alive(old_pid), 10, "the old generation to exit")
    d.wait_line(lambda ln: "refreshed 1 page" in ln, 10)


def test_broken_code_sends_pages_to_the_error_page_and_the_fix_back(
        tmp_path: Path, devrun: Callable[..., Devrun], streams: Callable[..., Stream]) -> None:
    port = project(tmp_path)
    devrun("up", "--no-dashboard", cwd=tmp_path)
    html = wait_for(lambda: page(port), 30, "the page")
    events = streams(port, generation_of(html)).events()
    next(events)
    write(tmp_path / "app.py", "def broken(:\n")
    assert list(events) == []
    status, error_page = wait_for(lambda: (r := get(f"http://127.0.0.1:{port}/"))[0] == 500 and r, 15,
                                  "the error page")
    assert "SyntaxError" in error_page and "/__devrun__/livereload.js" in error_page
    broken = generation_of(error_page)
    events = streams(port, broken).events()
    assert next(events) == ("hello", {"generation": broken})
    write(tmp_path / "app.py", APP.format(version=3))
    assert list(events) == []
    kind, data = next(streams(port, broken).events())
    assert kind == "hello" and data["generation"] != broken
    assert "v3" in page(port)


def test_while_the_app_is_down_the_runner_sends_pages_to_its_own_page(
        tmp_path: Path, devrun: Callable[..., Devrun], streams: Callable[..., Stream]) -> None:
    port = project(tmp_path)
    write(tmp_path / "app.py", "import os\nos._exit(3)\n")  # crashes at once, every time
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    d.wait_line(lambda ln: "crashed" in ln, 30)
    kind, data = next(streams(port, "some.generation").events())
    assert (kind, data) == ("hello", {"generation": ""})  # a mismatch: the page reloads onto the 503 page


def test_with_live_reload_off_nothing_is_injected_and_the_path_is_the_apps(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = project(tmp_path, live="live_reload: {enabled: false}")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    html = wait_for(lambda: page(port), 30, "the page")
    assert "__devrun__" not in html
    assert get(f"http://127.0.0.1:{port}/__devrun__/events")[0] == 404  # Flask's own 404
    write(tmp_path / "templates" / "page.html", PAGE.format(text="second"))
    wait_for(lambda: "second" in page(port), 10, "the edited template (auto-reload still on)")
    # Still watched, for the app (a framework that caches templates is told), but no page is.
    d.wait_line(lambda ln: ln.endswith("changed, applied in place (templates/page.html)"), 10)
    write(tmp_path / "app.py", APP.format(version=2))
    line = d.wait_line(lambda ln: "reload (" in ln, 10)
    assert line.endswith("reload (app.py)") and "refresh" not in d.output

"""Live reload in the child: what the middleware injects and leaves byte for byte, its reserved paths, the hub."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import pytest
from gevent.queue import Queue
from werkzeug.test import Client

from devrun import wire
from devrun.wire import EVENTS_PATH
from devrun.worker.livereload import SCRIPT_PATH, LiveHub, LiveReload, inject, script_tag

TAG = script_tag("g7")


class LocalClient(Client):
    """A browser on this machine: a loopback peer (Werkzeug's test environ has no REMOTE_ADDR)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["environ_base"] = {"REMOTE_ADDR": "127.0.0.1", **(kwargs.get("environ_base") or {})}
        return super().open(*args, **kwargs)


class Reports(list[wire.Message]):
    def __call__(self, message: wire.Message) -> None:
        self.append(message)

    def wait(self, ok: Callable[[Reports], bool], timeout: float = 5.0) -> None:
        """Until ok(self), on gevent's clock (the hub reports from its own timers), bounded."""
        with gevent.Timeout(timeout, AssertionError(f"timed out after {timeout}s; reports: {list(self)}")):
            while not ok(self):
                gevent.sleep(0.005)


class ScriptedHub(LiveHub):
    """A hub whose streams deliver a fixed script of events, then end (as when stopping)."""

    def __init__(self, script: list[str | None]):
        super().__init__("g7", Reports())
        self.script = script
        self.seen: list[str] = []

    def connect(self, seen: str) -> Any:
        self.seen.append(seen)
        queue: Queue[str | None] = Queue()
        for item in self.script:
            queue.put(item)
        return queue


def app_returning(body: bytes, headers: list[tuple[str, str]], status: str = "200 OK",
                  stream: bool = False) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response(status, headers)
        if stream:
            def gen() -> Iterator[bytes]:
                yield body[:5]
                yield body[5:]
            return gen()
        return [body]
    return app


def fetch(app: Callable[..., Iterable[bytes]], method: str = "GET", path: str = "/") -> Any:
    return LocalClient(LiveReload(app, ScriptedHub([None]))).open(path, method=method)


def test_html_gets_the_script_before_the_last_body_end() -> None:
    page = b"<html><body><p>x</p><!-- </body> in a comment --></BODY ></html>"
    r = fetch(app_returning(page, [("Content-Type", "text/html; charset=utf-8"),
                                   ("Content-Length", str(len(page)))]))
    assert r.data == page.replace(b"</BODY >", TAG + b"</BODY >")
    assert r.headers["Content-Length"] == str(len(r.data))


@pytest.mark.parametrize(("body", "headers", "status", "method", "stream"), [
    (b'{"a": "</body>"}', [("Content-Type", "application/json")], "200 OK", "GET", False),
    (b"<p>no end tag</p>", [("Content-Type", "text/html")], "200 OK", "GET", False),
    (b"\x1f\x8b<body></body>", [("Content-Type", "text/html"), ("Content-Encoding", "gzip")], "200 OK", "GET",
     False),
    (b"", [("Content-Type", "text/html")], "304 Not Modified", "GET", False),
    (b"<body>streamed</body>", [("Content-Type", "text/html")], "200 OK", "GET", True),
    (b"<body>head</body>", [("Content-Type", "text/html")], "200 OK", "HEAD", False),
    (b"PK\x03\x04</body>", [("Content-Type", "application/zip"),
                            ("Content-Disposition", "attachment; filename=x.zip")], "200 OK", "GET", False),
])
def test_other_responses_are_left_byte_for_byte(body: bytes, headers: list[tuple[str, str]], status: str,
                                                method: str, stream: bool) -> None:
    r = fetch(app_returning(body, headers, status, stream), method=method)
    if method != "HEAD":
        assert r.data == body
    assert TAG not in r.data


def test_an_app_using_write_is_passed_through() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/html")])
        write(b"<body>written</body>")
        return []

    assert fetch(app).data == b"<body>written</body>"


def test_the_reserved_paths_are_devruns() -> None:
    called: list[str] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        called.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b""]

    hub = ScriptedHub(["reload", "css", None])
    client = LocalClient(LiveReload(app, hub))
    js = client.get(SCRIPT_PATH)
    assert js.headers["Content-Type"].startswith("application/javascript") and b"EventSource" in js.data
    stream = client.get(EVENTS_PATH + "?generation=g6")
    assert stream.headers["Content-Type"] == "text/event-stream"
    first, second, third = stream.data.split(b"\n\n")[:3]
    assert json.loads(first.split(b"data: ")[1]) == {"generation": "g7"}
    assert second.startswith(b"event: reload") and third.startswith(b"event: css")
    assert hub.seen == ["g6"]
    assert client.get("/__devrun__/anything").status_code == 404
    assert called == []  # the user's app never sees them


def test_a_stopping_hub_ends_a_new_stream_at_once() -> None:
    hub = LiveHub("g7", Reports())
    hub.close()
    stream = LocalClient(LiveReload(lambda e, s: [], hub)).get(EVENTS_PATH)
    assert stream.status_code == 200 and stream.data == b""
    assert not hub.streams


def test_the_hub_tells_every_page_reports_counts_and_ends_streams_on_close() -> None:
    reports = Reports()
    hub = LiveHub("g7", reports)
    old = hub.connect("g6")  # a page of the previous generation: it reloads
    new = hub.connect("g7")
    # Once the reconnects settled (livereload.SETTLE), on the hub's own timer.
    reports.wait(lambda r: wire.Refreshed(1, "reload") in r and wire.Pages(2) in r)
    assert wire.Refreshed(1, "reload") in reports
    assert wire.Pages(2) in reports
    hub.send("css")
    assert old.get_nowait() == new.get_nowait() == "css"
    assert reports[-1] == wire.Refreshed(2, "css")
    hub.disconnect(old)
    reports.wait(lambda r: r[-1] == wire.Pages(1))
    assert reports[-1] == wire.Pages(1)
    hub.close()
    assert new.get_nowait() is None
    hub.send("reload")  # a stopping generation tells nobody anything
    assert reports[-1] == wire.Pages(1)


def test_inject_helper() -> None:
    assert inject(b"<body></body>", b"<s>") == b"<body><s></body>"
    assert inject(b"<body>", b"<s>") is None


def test_a_stream_ends_as_soon_as_its_page_goes_away() -> None:
    import socket

    reports = Reports()
    hub = LiveHub("g7", reports)
    ours, theirs = socket.socketpair()
    try:
        stream = LiveReload(lambda e, s: [], hub)._stream("g7", lambda *a: None, ours)
        assert next(stream).startswith(b"event: hello")
        assert len(hub.streams) == 1
        theirs.close()  # the page closed its connection (a reload, a closed tab)
        with gevent.Timeout(5):  # the keep-alive ping is 15 s away: this must not wait for it
            assert list(stream) == []
        assert hub.streams == set()
    finally:
        ours.close()


def flask_static_app(tmp_path: Any) -> Any:
    from flask import Flask

    page = b"<!doctype html><html><head><title>static</title></head><body>" + b"x" * 200 + b"</body></html>\n"
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "page.html").write_bytes(page)
    return Flask("static_site", static_folder=str(tmp_path / "static")), page


def test_a_range_of_a_static_html_file_is_left_byte_for_byte(tmp_path: Any) -> None:
    app, page = flask_static_app(tmp_path)
    client = LocalClient(LiveReload(app, ScriptedHub([None])))
    part = client.get("/static/page.html", headers={"Range": "bytes=-30"})
    assert part.status_code == 206
    assert part.data == page[-30:] and part.headers["Content-Length"] == "30"
    assert part.headers["Content-Range"] == f"bytes {len(page) - 30}-{len(page) - 1}/{len(page)}"
    whole = client.get("/static/page.html")  # the whole file still gets the script
    assert whole.status_code == 200 and TAG in whole.data


@pytest.mark.parametrize(("status", "headers"), [
    ("206 Partial Content", [("Content-Type", "text/html"), ("Content-Range", "bytes 0-13/40")]),
    ("200 OK", [("Content-Type", "text/html"), ("Content-Range", "bytes 0-13/14")]),
    ("200 OK", [("Content-Type", "text/html"), ("Content-Encoding", "br")]),
    ("204 No Content", [("Content-Type", "text/html")]),
])
def test_parts_encodings_and_empty_answers_are_never_touched(status: str, headers: list[tuple[str, str]]) -> None:
    body = b"<body></body>"
    r = fetch(app_returning(body, [*headers, ("Content-Length", str(len(body)))], status))
    assert TAG not in r.data


def test_an_identity_encoding_is_still_html() -> None:
    body = b"<body></body>"
    r = fetch(app_returning(body, [("Content-Type", "text/html"), ("Content-Encoding", "identity"),
                                   ("Content-Length", str(len(body)))]))
    assert TAG in r.data


def test_a_foreign_host_or_peer_gets_no_script_and_no_stream() -> None:
    page = b"<body>hi</body>"
    app = app_returning(page, [("Content-Type", "text/html"), ("Content-Length", str(len(page)))])
    client = LocalClient(LiveReload(app, ScriptedHub(["reload", None])))
    foreign = {"Host": "attacker.example:5000"}
    events = client.get(EVENTS_PATH, headers=foreign)
    assert events.status_code == 400 and b"generation" not in events.data and b"g7" not in events.data
    assert client.get(SCRIPT_PATH, headers=foreign).status_code == 400
    assert client.get("/", headers=foreign).data == page  # the app's page, untouched (no generation in it)
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.get(EVENTS_PATH, headers={"Host": "localhost:5000"}, environ_base=remote).status_code == 403
    assert client.get("/", environ_base=remote).data == page
    assert TAG in client.get("/").data  # a loopback client with a loopback name: as before

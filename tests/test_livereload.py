"""The live-reload middleware (groundwork): what it injects, and what it leaves byte for byte."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from werkzeug.test import Client

from devrun.worker.livereload import EVENTS_PATH, SCRIPT_PATH, LiveReload, inject, script_tag

TAG = script_tag("g7")


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
    return Client(LiveReload(app, "g7")).open(path, method=method)


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

    client = Client(LiveReload(app, "g7", events=lambda: iter([b"event: reload\ndata: {}\n\n"])))
    js = client.get(SCRIPT_PATH)
    assert js.headers["Content-Type"].startswith("application/javascript") and b"EventSource" in js.data
    stream = client.get(EVENTS_PATH)
    assert stream.headers["Content-Type"] == "text/event-stream"
    first, second = stream.data.split(b"\n\n")[:2]
    assert json.loads(first.split(b"data: ")[1]) == {"generation": "g7"}
    assert second.startswith(b"event: reload")
    assert called == []  # the user's app never sees them


def test_inject_helper() -> None:
    assert inject(b"<body></body>", b"<s>") == b"<body><s></body>"
    assert inject(b"<body>", b"<s>") is None

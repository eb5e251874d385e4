"""The debugger's dispatch: a request that cannot be the debugger's skips Werkzeug's parsing
(debugging.py), and every one that can still reaches Werkzeug's own."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from werkzeug.test import Client

from devrun.loopback import LOOPBACK
from devrun.worker.debugging import debugger_class


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("kaboom")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the app: " + environ.get("QUERY_STRING", "").encode()]


@pytest.fixture
def client() -> Client:
    return Client(debugger_class()(app, evalex=True, pin=False, trust=LOOPBACK))


@pytest.mark.parametrize("query", ["__debugger__=yes&cmd=resource&f=style.css",
                                   # Werkzeug decodes the query: an escaped name is its command too
                                   "%5F%5Fdebugger%5F%5F=yes&cmd=resource&f=style.css",
                                   "x=1&__debugger__=yes&cmd=resource&f=style.css"])
def test_a_debugger_command_reaches_werkzeug(client: Client, query: str) -> None:
    reply = client.get(f"/?{query}", headers={"Host": "127.0.0.1"})
    assert reply.status_code == 200 and reply.mimetype == "text/css", reply.data[:200]


@pytest.mark.parametrize("path", ["/console"])
def test_the_console_reaches_werkzeug(client: Client, path: str) -> None:
    reply = client.get(path, headers={"Host": "127.0.0.1"})
    assert reply.status_code == 200 and b"Interactive Console" in reply.data


@pytest.mark.parametrize("url", ["/", "/?q=1", "/console/", "/consoles-list?debugger=yes", "/?__debugger__=no"])
def test_anything_else_is_the_apps(client: Client, url: str) -> None:
    reply = client.get(url, headers={"Host": "127.0.0.1"})
    assert reply.status_code == 200 and reply.data.startswith(b"the app: ")


def test_an_exception_on_the_quick_path_still_gets_the_debugger(client: Client) -> None:
    reply = client.get("/boom", headers={"Host": "127.0.0.1"})
    assert reply.status_code == 500 and b"kaboom" in reply.data and b"__debugger__" in reply.data


def test_a_debugger_without_a_pin_has_none() -> None:
    """`debug.pin: false` (Werkzeug 3.1.4 raised here: pallets/werkzeug#3075; devrun needs 3.1.5)."""
    assert debugger_class()(app, evalex=True, pin=False, trust=LOOPBACK).pin is None

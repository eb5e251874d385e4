"""The child's gate in front of the debugger: devrun's own routes and pages for trusted requests only.

A request that fails the Host or peer check (devrun.loopback) never reaches Werkzeug's
debugger: its commands and console are refused, and the app's exceptions become a plain 500
without source lines or locals. Everything else is the app's, as if no debugger were there.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from devrun.loopback import BAD_HOST, REFUSAL_STATUS, REFUSED_TEXT, Trust

if TYPE_CHECKING:
    from _typeshed import OptExcInfo

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

PLAIN_500 = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>500 Internal Server Error</title></head>"
             "<body><h1>Internal Server Error</h1><p>{what} " + REFUSED_TEXT + "</p></body></html>")
RAISED = "The app raised an exception."


def refuse(code: int, start_response: StartResponse) -> list[bytes]:
    """devrun's answer to a request its Host or peer check refused (no detail)."""
    body = (("unknown Host: " if code == BAD_HOST else "forbidden: ") + REFUSED_TEXT + "\n").encode()
    start_response(REFUSAL_STATUS[code], [
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store")])
    return [body]


def plain_500(start_response: StartResponse, exc_info: OptExcInfo | None = None, what: str = RAISED) -> list[bytes]:
    """A 500 that says what happened in one sentence and shows nothing of it."""
    body = PLAIN_500.format(what=what).encode()
    start_response("500 Internal Server Error", [
        ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store")], exc_info)
    return [body]


def plain_errors(app: WSGIApp) -> WSGIApp:
    """The app, with an exception turned into a plain 500 (its traceback goes to the output only)."""

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        result: Iterable[bytes] | None = None
        try:
            result = app(environ, start_response)
            yield from result
        except Exception:
            errors = environ.get("wsgi.errors") or sys.stderr
            errors.write(traceback.format_exc())
            # Too late once the app's headers went out: start_response raises again, as it must.
            yield from plain_500(start_response, sys.exc_info())
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return guarded


def is_debugger_route(environ: dict[str, Any], console_path: str | None) -> bool:
    """A request Werkzeug's debugger answers itself (a command, a resource, the console)."""
    if console_path is not None and environ.get("PATH_INFO") == console_path:
        return True
    query: str = environ.get("QUERY_STRING", "")
    return parse_qs(query).get("__debugger__", [""])[0] == "yes"  # Werkzeug reads the first


class Guard:
    """Trusted requests go to `debugged`; the rest to `plain` (the app alone), debugger routes refused."""

    def __init__(self, debugged: WSGIApp, plain: WSGIApp, trust: Trust, console_path: str | None):
        self.debugged = debugged
        self.plain = plain
        self.trust = trust
        self.console_path = console_path

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        code = self.trust.refuses(environ)
        if code is None:
            return self.debugged(environ, start_response)
        if is_debugger_route(environ, self.console_path):
            return refuse(code, start_response)
        return self.plain(environ, start_response)

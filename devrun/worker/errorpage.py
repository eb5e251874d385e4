"""What the port serves while the app's code cannot load: a 500 page with the traceback.

The traceback goes only to requests devrun trusts (devrun.loopback); others get a plain 500.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from typing import Any

from devrun.loopback import LOOPBACK, Trust
from devrun.worker.guard import plain_500

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>devrun: {title}</title>
<style>body{{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222}}
pre{{background:#fdf2f2;border-left:4px solid #c0392b;padding:1em;overflow:auto;font-size:13px}}
small{{color:#666}}</style></head>
<body><h1>{title}</h1><p>devrun could not load <code>{spec}</code>. Fix the code and save, then
reload this page.</p>
<pre>{traceback}</pre><small>served by devrun while app <b>{name}</b> is in error</small>
</body></html>
"""


def error_app(name: str, spec: str, exc: BaseException, traceback_text: str,
              debug: bool, trust: Trust = LOOPBACK) -> Callable[..., Any]:
    """With debug, an app that raises the load error again (the debugger shows it, behind its
    guard); without, devrun's own page."""
    summary = f"{type(exc).__name__}: {exc}"
    if debug:
        if not isinstance(exc, Exception):
            # Werkzeug's debugger catches Exception only: a SystemExit raised again on every
            # request would end the child instead of showing the page.
            code = getattr(exc, "code", None)
            replacement = RuntimeError(f"the app called sys.exit({code!r}) while loading")
            replacement.__cause__ = exc
            exc = replacement
        tb = exc.__traceback__

        def raising_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            # Reset the traceback each time: raising the same object again would append this
            # frame to it on every request.
            raise exc.with_traceback(tb)

        return raising_app

    body = PAGE.format(
        title=html.escape(summary), spec=html.escape(spec), name=html.escape(name),
        traceback=html.escape(traceback_text),
    ).encode("utf-8")

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if trust.refuses(environ) is not None:
            return plain_500(start_response, what="devrun could not load the app's code.")
        start_response("500 Internal Server Error", [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ])
        return [body]

    return app
